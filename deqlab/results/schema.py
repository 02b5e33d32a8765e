"""The results contract, in one place: statuses, metrics (name, label, unit, direction), provenance and
trace columns, and the display names of stored values.

Every writer (the training loop through `TrialWriter`, the driver's
`finalize_trial`) and every reader (`deqlab export`, `deqlab ls`, the
end-of-study table, the dashboard) takes names, labels, units and directions
from here, so a metric is spelled, scaled and ranked the same in a Parquet
column, a paper table, the terminal and a plot axis. Torch-free and
pandas-free: `deqlab validate` imports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Mapping, Optional


class Status(str, Enum):
    """A trial's status, written on every row of its file (its last row's status is the trial's)."""

    RUNNING = "running"
    COMPLETED = "completed"
    PRUNED = "pruned"
    DIVERGED = "diverged"
    FAILED = "failed"

    __hash__ = str.__hash__  # a member and its value are one key: {"completed": ...}[Status.COMPLETED] works

    def __str__(self) -> str:
        return self.value

    @property
    def final(self) -> bool:
        """Whether the trial is over (every status but running)."""
        return self is not Status.RUNNING


STATUSES = tuple(s.value for s in Status)
FINAL_STATUSES = tuple(s.value for s in Status if s.final)
MODES = ("max", "min")


@dataclass(frozen=True)
class Metric:
    """One metric column: how it is shown (label, unit, display scale) and which direction is better.

    `every_row`: the training loop reports it every epoch, so every trial row
    has the column (None when missing), it must hold numbers, and a study may
    optimise it. Others are written when reported (`lr`) or derived by readers
    (`total_time_s`).
    """

    name: str
    label: str
    unit: str = ""
    scale: float = 1.0
    mode: Optional[str] = None  # the direction: "max", "min", or None when none is known
    every_row: bool = True

    @property
    def title(self) -> str:
        """`Test acc. (%)`: the label with its unit, as axes, progress lines and plain tables show it."""
        return f"{self.label} ({self.unit})" if self.unit else self.label


CATALOGUE: dict[str, Metric] = {m.name: m for m in (
    Metric("train_loss", "Train loss", mode="min"),
    Metric("test_loss", "Test loss", mode="min"),
    Metric("test_acc", "Test acc.", "%", 100.0, "max"),
    Metric("nfe_fwd", "NFE fwd", mode="min"),
    Metric("nfe_bwd", "NFE bwd", mode="min"),
    Metric("fwd_time_s", "Fwd time", "s", mode="min"),
    Metric("bwd_time_s", "Bwd time", "s", mode="min"),
    Metric("epoch_time_s", "Epoch time", "s", mode="min"),
    Metric("converged_frac", "Converged", "%", 100.0, "max"),
    Metric("residual", "Residual", mode="min"),
    Metric("infer_time_s", "Inference time", "s", mode="min"),
    # docs/reproductions.md: the NFE columns
    Metric("nfe_jac", "NFE Jac. reg.", mode="min"),
    Metric("nfe_train_total", "Train NFE total", mode="min"),
    Metric("nfe_test_total", "Test NFE total", mode="min"),
    Metric("nfe_fwd_paper", "NFE fwd (paper)", mode="min"),
    Metric("train_nfe_fwd", "Train NFE fwd", mode="min"),
    # docs/design.md "Peak memory": CUDA max_memory_allocated, or the CPU process's peak resident set, per epoch
    Metric("peak_mem_bytes", "Peak memory", "MiB", 1.0 / 2**20, "min"),
    # reported when known, or derived by readers
    Metric("lr", "Learning rate", every_row=False),
    # deq.reuse: epoch (fixed-point reuse): the kept states' size, the share of training samples started from one
    Metric("reuse_buffer_bytes", "Reuse buffer", "MiB", 1.0 / 2**20, "min", every_row=False),
    Metric("train_reuse_frac", "Reused starts", "%", 100.0, every_row=False),
    Metric("replica_weight_spread", "Replica weight spread", mode="min", every_row=False),  # Ray Train workers
    Metric("total_time_s", "Train time", "s", mode="min", every_row=False),  # sum of epoch_time_s (final_epochs)
    # `deqlab bench`: one call of a trained model, timed side by side with the others (deqlab/run/bench.py)
    Metric("predict_time_s", "Prediction time", "s", mode="min", every_row=False),
    Metric("train_step_time_s", "Training step time", "s", mode="min", every_row=False),
)}

METRICS = tuple(name for name, m in CATALOGUE.items() if m.every_row)
OBJECTIVE_METRICS = METRICS  # what a study may optimise
PROVENANCE = (
    "seed", "config_hash", "deqlab_version", "torch_version", "ray_version", "device", "num_workers", "started_at",
    # where it ran (deqlab.provenance.COLUMNS)
    "hostname", "hardware", "cpu_model", "cpu_count", "gpu_name", "gpu_count", "gpu_memory_gb", "cuda_version",
    "gpu_driver", "python_version", "optuna_version", "torchdiffeq_version", "code_version", "node_id",
    "model_source_hash", "data_source_hash",  # your own model's / data's source (run.env.code_hashes)
)
KEYS = ("study", "trial_id", "epoch", "status")  # every trials row; `phase` and `error` are text columns
TRACE_COLUMNS = ("epoch", "phase", "step", "residual_max", "residual_mean")
NOT_METRICS = frozenset({"study", "trial_id", "epoch", "epochs", "status", "phase", *PROVENANCE})


# Study and trial names: path components of a study directory.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+-]{0,200}")


def is_safe_name(name) -> bool:
    """fullmatch, not match with `$`: `$` also matches before a final newline (`name: "x\n"`)."""
    return isinstance(name, str) and bool(_SAFE_NAME.fullmatch(name)) and ".." not in name


def check_name(kind: str, name: str) -> str:
    """Study and trial names become path components: refuse anything that could escape the root."""
    if not is_safe_name(name):
        raise ValueError(
            f"invalid {kind} name {name!r}: use letters, digits and _ . = + - (no path separators, no '..')"
        )
    return name


def metric_info(name: str, modes: Optional[Mapping[str, str]] = None) -> Metric:
    """The catalogue's entry for a metric column (its own name as label when unknown); an objective's mode
    (a study's `objectives`) overrides the catalogue's direction."""
    info = CATALOGUE.get(name, Metric(name, name, every_row=False))
    mode = (modes or {}).get(name)
    if mode is not None:
        if mode not in MODES:
            raise ValueError(f"mode for {name!r} must be one of {', '.join(MODES)}, got {mode!r}")
        info = Metric(info.name, info.label, info.unit, info.scale, mode, info.every_row)
    return info


# --------------------------------------------------------------------------- display names
#
# The stored results keep short machine names (`skipreg`, `newton_krylov`, `param.deq.init`); every table and
# the dashboard show them through these, so a value is spelled the same in a paper table, the terminal and a
# plot legend. Unknown values and columns pass through unchanged.

# Values of a hyperparameter, keyed by the last part of its column name (`init` for param.deq.init).
VALUE_NAMES: dict[str, dict[str, str]] = {
    "init": {"zeros": "DEQ", "skip": "SkipDEQ", "skipreg": "SkipRegDEQ"},
    "solver": {"fixed_point": "Fixed-point", "anderson": "Anderson", "broyden": "Broyden",
               "newton_krylov": "Newton-Krylov", "continuous": "Continuous (ODE)"},
    "stop_mode": {"rel": "relative", "abs": "absolute", "batch": "batch"},
}

# Column headers, keyed the same way.
COLUMN_NAMES: dict[str, str] = {
    "init": "Init", "solver": "Solver", "tol": "Tolerance", "max_iter": "Max iter.", "study": "Study",
    "seed": "Seed", "lr": "Learning rate", "width": "Width", "stop_mode": "Stop mode", "backward": "Backward",
}


def _key(column: str) -> str:
    return str(column).rsplit(".", 1)[-1]


def column_name(column: str) -> str:
    """`param.deq.init` or `init` -> `Init`; unknown columns keep their name (without `param.`), printable."""
    return COLUMN_NAMES.get(_key(column), printable(str(column).removeprefix("param.")))


def value_name(column: str, value) -> str:
    """(`init`, `skipreg`) -> `SkipRegDEQ`; numbers as `%g` (`seed 0`, not `seed 0.0`); others as printable text."""
    if isinstance(value, float):
        return f"{value:g}"
    return VALUE_NAMES.get(_key(column), {}).get(str(value), printable(value))


def printable(value) -> str:
    """Text from a results file, safe to print: each control character (an escape sequence that recolours
    the terminal or sets its title, a newline that forges a line, a bidi override) written as its escape
    (`\\x1b`, `\\n`, `\\u202e`), the rest as it is."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
