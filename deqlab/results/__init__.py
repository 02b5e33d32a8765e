"""Results on disk: one Parquet file per trial, written atomically, read back as DataFrames.

    schema    statuses, metrics (name, label, unit, direction), provenance and trace columns, display names
    store     StudyStore: one study directory (paths, local path or URI, filesystem, atomic I/O, listing)
    writer    TrialWriter (the training loop's sink), finalize_trial (the driver's record of an ending)
    reader    load, TableCache, load_trial_traces, load_states, load_spec, load_train_config
    snapshot  compact (one snapshot per kind) and reading a study through it

Names are imported from their module on first use, so `from deqlab.results import OBJECTIVE_METRICS`
(a study spec's validation) costs neither pandas nor pyarrow.
"""

from importlib import import_module

_HOMES = {
    "schema": ("CATALOGUE", "FINAL_STATUSES", "METRICS", "OBJECTIVE_METRICS", "PROVENANCE", "STATUSES",
               "TRACE_COLUMNS", "Metric", "Status", "check_name", "column_name", "metric_info", "printable",
               "value_name"),
    "store": ("COMPACT_DIR", "FAULT_PAUSE_ENV", "STUDY_FILE", "TRAIN_FILE", "StudyStore", "absolute",
              "filesystem", "is_uri", "study_path",
              "write_table_atomic", "write_text_atomic"),
    "writer": ("TrialWriter", "finalize_trial", "scalar"),
    "reader": ("Results", "TableCache", "load", "load_spec", "load_states", "load_train_config", "load_trial_traces"),
    "snapshot": ("compact", "snapshot_path"),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'deqlab.results' has no attribute {name!r}")
    value = getattr(import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
