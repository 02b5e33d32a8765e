"""Studies: a YAML spec (validated before Ray starts) run as Ray Tune trials searched by Optuna."""

from .spec import StudyError, StudySpec, describe, load_study, parse_study

__all__ = ["StudySpec", "StudyError", "load_study", "parse_study", "describe"]
