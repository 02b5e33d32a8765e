"""`deqlab bench`'s table: each group's prediction and training-step times, NFE, and speed-ups against a
baseline with two bootstrap intervals, over repetitions and over seeds.

The samples are deqlab/run/bench.py's timed calls (one dict per model, repetition and kind; torch-free
here). The ratio and its interval are `deqlab export`'s (ratio.add_ratio): the baseline row is the one
sharing the other group values, the point estimate is baseline mean / row mean, and the interval is a
95% percentile bootstrap that pairs what both sides share:
- **over repetitions** (timing noise): each repetition's mean time of a group's models, paired by
  repetition (the same batch, taken in the same round of the round-robin);
- **over seeds** (the spread between trained models): each model's mean over repetitions, paired by
  seed when both groups have the same seeds; none with fewer than two models a side.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import pandas as pd

from ..results.schema import column_name, metric_info, value_name
from .ratio import BOOTSTRAP_RESAMPLES, add_ratio, describe_baseline
from .render import markdown_text

KINDS = {"predict": ("predict_time_s", "nfe_fwd"), "train_step": ("train_step_time_s", "nfe_train_total")}
OVER = ("repeats", "seeds")  # the two intervals: `<time>_speedup_lo_repeats`, ..._hi_seeds


@dataclass(frozen=True)
class BenchTable:
    """One row per group (`by` columns, `n` models, then per timed kind: mean time in seconds, its std over
    the models, mean NFE, and with a baseline `<time>_speedup` with `_lo_/_hi_repeats` and `_seeds`);
    `trials`: each model's means; `settings`: how the times were taken."""

    frame: pd.DataFrame
    trials: pd.DataFrame
    by: tuple[str, ...]
    kinds: tuple[str, ...]
    baseline: Optional[Mapping[str, str]] = None
    settings: Mapping = field(default_factory=dict)


def summarize(samples: Sequence[Mapping], by: Sequence[str], baseline: Optional[Mapping[str, str]] = None,
              settings: Optional[Mapping] = None) -> BenchTable:
    """Group the timed calls by the `by` values each sample carries and compare every group with its baseline."""
    df = pd.DataFrame(list(samples))
    if df.empty:
        raise ValueError("no timed calls to summarise")
    by = list(by)
    missing = [b for b in by if b not in df.columns]
    if missing or not by:
        raise ValueError(f"group by {', '.join(missing) or 'nothing'}: the samples carry "
                         f"{', '.join(c for c in df.columns if c not in _SAMPLE_COLUMNS)}")
    df[by] = df[by].astype(object).where(df[by].notna(), "none")
    kinds = tuple(k for k in KINDS if k in set(df["kind"]))
    trials = _wide(df, list(dict.fromkeys(["trial_id", "seed", *by])), kinds)
    repeats = _wide(df, [*by, "repeat"], kinds)  # a group's mean per repetition, over its models
    grouped = trials.groupby(by, sort=False)
    out = grouped.size().rename("n").to_frame()
    for kind in kinds:
        time, nfe = KINDS[kind]
        out[f"{time}_mean"], out[f"{time}_std"] = grouped[time].mean(), grouped[time].std(ddof=1)
        out[nfe] = grouped[nfe].mean()
    out = out.reset_index()
    if baseline:
        for kind in kinds:
            time = KINDS[kind][0]
            info = {time: metric_info(time)}
            for over, frame in (("repeats", repeats.assign(_seed=repeats["repeat"])),
                                ("seeds", trials.assign(_seed=trials["seed"]))):
                out, _, _, _ = add_ratio(out, by, info, dict(baseline), time, frame, [time])
                # both frames are balanced: the same point estimate (ratio of the groups' means), two intervals
                out = out.rename(columns={"ratio": f"{time}_speedup", "ratio_lo": f"{time}_speedup_lo_{over}",
                                          "ratio_hi": f"{time}_speedup_hi_{over}"})
                out = out.loc[:, ~out.columns.duplicated()]
    return BenchTable(out, trials, tuple(by), kinds, dict(baseline) if baseline else None, dict(settings or {}))


def check_baseline(groups: Sequence[Mapping], by: Sequence[str], baseline: Optional[Mapping[str, str]]) -> None:
    """The same refusals as `summarize`'s ratio, from the contenders' group values alone (before timing)."""
    if not baseline:
        return
    unknown = sorted(set(baseline) - set(by))
    if unknown:
        raise ValueError(f"baseline names {', '.join(unknown)}, which is not a group column; "
                         f"group columns: {', '.join(by)}")
    if not any(all(str(g.get(k)) == str(v) for k, v in baseline.items()) for g in groups):
        present = {k: sorted({str(g.get(k)) for g in groups}) for k in baseline}
        raise ValueError(f"no row matches the baseline {', '.join(f'{k}={v}' for k, v in baseline.items())}; "
                         f"values present: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in present.items()))


_SAMPLE_COLUMNS = {"trial_id", "seed", "kind", "repeat", "position", "batch", "time_s", "nfe"}


def _wide(df: pd.DataFrame, keys: list[str], kinds) -> pd.DataFrame:
    """Mean time and NFE per `keys`, one column per kind's metric names (`predict_time_s`, `nfe_fwd`, ...)."""
    mean = df.groupby([*keys, "kind"], sort=False)[["time_s", "nfe"]].mean().reset_index()
    parts = []
    for kind in kinds:
        time, nfe = KINDS[kind]
        part = mean[mean["kind"] == kind].drop(columns="kind").rename(columns={"time_s": time, "nfe": nfe})
        parts.append(part.set_index(keys))
    return pd.concat(parts, axis=1).reset_index()


# --------------------------------------------------------------------------- text


def render_markdown(table: BenchTable) -> str:
    """A Markdown table (ms per call, NFE per sample, speed-ups with both intervals) and what it means."""
    f = table.frame
    headers = [column_name(b) for b in table.by] + ["n"]
    cells = [[markdown_text(value_name(b, v), cell=True) for v in f[b]] for b in table.by]  # values from files
    cells.append([str(int(n)) for n in f["n"]])
    for kind in table.kinds:
        time, nfe = KINDS[kind]
        label = metric_info(time).label
        headers += [f"{label} (ms)", metric_info(nfe).label]
        cells.append([_ms(m, sd) for m, sd in zip(f[f"{time}_mean"], f[f"{time}_std"])])
        cells.append([f"{v:.2f}" for v in f[nfe]])
        if table.baseline:
            vs = markdown_text(describe_baseline(table.baseline), cell=True)
            headers.append(f"{label.split(' ')[0]} speed-up vs {vs}")
            cells.append([_speedup(f, i, time) for i in range(len(f))])
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join(":---" if i < len(table.by) else "---:" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in zip(*cells)]
    return "\n".join(lines) + "\n\n" + " ".join(_notes(table)) + "\n"


def _ms(mean: float, std: float) -> str:
    """Milliseconds to 3 significant digits, the std to the same decimals, never in exponent form."""
    mean, std = 1e3 * mean, 1e3 * std
    places = min(4, max(0, 2 - math.floor(math.log10(abs(mean))))) if mean else 2
    return f"{mean:.{places}f}" + (f" ± {std:.{places}f}" if math.isfinite(std) else "")


def _speedup(f: pd.DataFrame, i: int, time: str) -> str:
    r = float(f.loc[i, f"{time}_speedup"])
    if not math.isfinite(r):
        return "–"
    text = f"{r:.2f}×"
    for over in OVER:
        lo, hi = float(f.loc[i, f"{time}_speedup_lo_{over}"]), float(f.loc[i, f"{time}_speedup_hi_{over}"])
        text += f" [{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) else " [–]"
    return text


def _notes(table: BenchTable) -> list[str]:
    s = table.settings
    batch = f"batches of {s['batch']}" if s.get("batch") else "each trial's training batch size"
    out = [f"Mean ± std over the n trained models of each model's mean over {s.get('repeats', '?')} repetitions, "
           f"timed round-robin in one process ({batch}; {s.get('warmup', '?')} untimed warm-up rounds; "
           f"{s.get('threads', '?')} torch thread(s); {s.get('device', '?')}; {s.get('clock', '?')} clock). "
           "Prediction: the forward solve of one test batch (eval mode, no grad). Training step: forward, "
           "loss with its regularisers, backward and optimiser step on one training batch, from the trained "
           "weights. NFE per sample (training: forward + backward + Jacobian penalty)."]
    if table.baseline:
        out.append("Speed-up: baseline time / row time (> 1: faster); in brackets 95% bootstrap intervals "
                   f"({BOOTSTRAP_RESAMPLES} resamples) over repetitions (paired by repetition), then over seeds "
                   "(paired by seed when both groups ran the same seeds; – with fewer than 2 models a side).")
    return out


def render_json(table: BenchTable) -> str:
    """One JSON object: settings, baseline, the groups' rows and each trial's means (NaN as null)."""
    def rows(frame: pd.DataFrame) -> list[dict]:
        return [{k: _plain(v) for k, v in r.items()} for r in frame.to_dict(orient="records")]

    return json.dumps({"settings": dict(table.settings), "by": list(table.by), "baseline": table.baseline,
                       "groups": rows(table.frame), "trials": rows(table.trials)}, indent=2)


def _plain(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v.item() if hasattr(v, "item") else v


__all__ = ["BenchTable", "summarize", "check_baseline", "render_markdown", "render_json", "KINDS"]
