"""Display names: one mapping from stored values and column names to what tables and plots show.

The stored results keep short machine names (`skipreg`, `newton_krylov`,
`param.deq.init`); every table (`deqlab export`, the end-of-study table of
`deqlab run`) and the dashboard show them through this module, so a value is
spelled the same in a paper table, the terminal and a plot legend. Unknown
values and columns pass through unchanged.
"""

from __future__ import annotations

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
    """`param.deq.init` or `init` -> `Init`; unknown columns keep their name (without `param.`)."""
    return COLUMN_NAMES.get(_key(column), str(column).removeprefix("param."))


def value_name(column: str, value) -> str:
    """(`init`, `skipreg`) -> `SkipRegDEQ`; numbers as `%g` (`seed 0`, not `seed 0.0`); others as text."""
    if isinstance(value, float):
        return f"{value:g}"
    return VALUE_NAMES.get(_key(column), {}).get(str(value), str(value))
