"""Reading a study's trial files while a study rewrites them, as deqlab's own readers do.

One open file per read: `pd.read_parquet(path)` goes through pyarrow's dataset
machinery, which opens the path twice (footer, then pages). An atomic rename in
between pairs one version's footer with the other's pages ("Page was smaller (3)
than expected (11)", seen in CI), a torn read no reader of deqlab makes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd
import pyarrow.parquet as pq


def read_live(path: Path, columns=None) -> Optional[pd.DataFrame]:
    """The file's rows from one open handle; None when a resume set it aside since it was listed."""
    try:
        with open(path, "rb") as f:
            return pq.ParquetFile(f).read(columns=columns).to_pandas()
    except FileNotFoundError:
        return None


def last_statuses(trials: Path) -> dict:
    """{trial id: last status} of the visible trial files (a torn one would fail to read)."""
    out = {}
    for p in trials.glob("*.parquet") if trials.exists() else []:
        frame = read_live(p, columns=["status"])
        if frame is not None and len(frame):
            out[p.stem] = frame.status.iloc[-1]
    return out
