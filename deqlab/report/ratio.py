"""The `--baseline` ratio of a comparison table and its bootstrap interval over seeds (used by deqlab/report/tables.py)."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd

from ..results.schema import value_name

BOOTSTRAP_RESAMPLES = 2000


def add_ratio(out, by, info, baseline, ratio_metric, samples, metrics):
    """The ratio column and its bootstrap interval (`ratio_lo`, `ratio_hi`); returns (out, metric, kind, paired)."""
    unknown = sorted(set(baseline) - set(by))
    if unknown:
        raise ValueError(f"baseline names {', '.join(unknown)}, which is not a group column; "
                         f"group columns: {', '.join(by)}")
    if ratio_metric is None:
        times = [m for m in metrics if info[m].unit == "s"]
        if not times:
            raise ValueError(f"choose the metric for the baseline ratio (--ratio-of); metrics: {', '.join(metrics)}")
        ratio_metric = times[0]
    if ratio_metric not in metrics:
        raise ValueError(f"ratio metric {ratio_metric!r} is not among the metrics: {', '.join(metrics)}")
    mode = info[ratio_metric].mode
    if mode is None:
        raise ValueError(f"metric {ratio_metric!r} has no known direction for a ratio; "
                         f"name it in the study objectives")
    as_text = out[list(by)].astype(str)
    is_base = np.logical_and.reduce([as_text[k] == str(v) for k, v in baseline.items()])
    if not is_base.any():
        present = {k: sorted(set(as_text[k])) for k in baseline}
        raise ValueError(f"no row matches the baseline {', '.join(f'{k}={v}' for k, v in baseline.items())}; "
                         f"values present: "
                         + "; ".join(f"{k}: {', '.join(v)}" for k, v in present.items()))
    rest = [k for k in by if k not in baseline]
    base_of = {tuple(as_text.loc[i, rest]): i for i in np.flatnonzero(is_base)}
    per_group = {key: g for key, g in samples.assign(**{k: samples[k].astype(str) for k in by}).groupby(by)}
    rng = np.random.default_rng(0)
    ratio, lo, hi, paired_any = [], [], [], []
    for i in range(len(out)):
        j = base_of.get(tuple(as_text.loc[i, rest]))
        if j is None:
            ratio.append(math.nan)
            lo.append(math.nan)
            hi.append(math.nan)
            continue
        row = per_group[tuple(as_text.loc[i, by])]
        base = per_group[tuple(as_text.loc[j, by])]
        r, interval, paired = ratio_interval(base, row, ratio_metric, mode, rng, same=(i == j))
        ratio.append(r)
        lo.append(interval[0])
        hi.append(interval[1])
        if i != j and math.isfinite(interval[0]):
            paired_any.append(paired)
    out["ratio"], out["ratio_lo"], out["ratio_hi"] = ratio, lo, hi
    kind = "gain" if mode == "max" else "speedup" if info[ratio_metric].unit == "s" else "reduction"
    paired = None if not paired_any else all(paired_any)
    return out, ratio_metric, kind, paired


def ratio_interval(base: pd.DataFrame, row: pd.DataFrame, metric: str, mode: str, rng,
                   same: bool = False) -> tuple[float, tuple[float, float], bool]:
    """Ratio of means (> 1: `row` is better than `base`) and its 95% percentile bootstrap interval over seeds.

    When both groups ran the same seeds (each seed's trials averaged), seeds
    are resampled together: the pairing removes the seed-to-seed spread both
    groups share. Otherwise each group's trials are resampled on their own.
    Fewer than two trials on either side: no interval (NaN).
    """
    def ratio_of(b, r):
        return b / r if mode == "min" else r / b

    point = float(ratio_of(base[metric].mean(), row[metric].mean()))
    if same or len(base) < 2 or len(row) < 2:
        return point, (math.nan, math.nan), False
    b_seed, r_seed = base.groupby("_seed")[metric].mean(), row.groupby("_seed")[metric].mean()
    paired = len(b_seed) >= 2 and set(b_seed.index) == set(r_seed.index)
    if paired:
        b, r = b_seed.to_numpy(float), r_seed.reindex(b_seed.index).to_numpy(float)
        pick = rng.integers(0, len(b), size=(BOOTSTRAP_RESAMPLES, len(b)))
        boot = ratio_of(b[pick].mean(axis=1), r[pick].mean(axis=1))
    else:
        b, r = base[metric].to_numpy(float), row[metric].to_numpy(float)
        boot = ratio_of(b[rng.integers(0, len(b), size=(BOOTSTRAP_RESAMPLES, len(b)))].mean(axis=1),
                        r[rng.integers(0, len(r), size=(BOOTSTRAP_RESAMPLES, len(r)))].mean(axis=1))
    low, high = np.percentile(boot, [2.5, 97.5])
    return point, (float(low), float(high)), paired


def describe_baseline(baseline: Mapping[str, str]) -> str:
    return ", ".join(value_name(k, v) for k, v in baseline.items())
