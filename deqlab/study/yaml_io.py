"""Reading a study (or train config) YAML file safely: the safe loader, within size and nesting caps."""

from __future__ import annotations

from pathlib import Path

import yaml

MAX_STUDY_BYTES, MAX_YAML_DEPTH = 1 << 20, 32


class StudyError(ValueError):
    """A study file that cannot run; the message names the file and the key."""


def read_yaml(path):
    """A study or train config file's document, through the safe loader, within size and nesting caps."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"no such study file: {path}")
    if path.stat().st_size > MAX_STUDY_BYTES:
        raise StudyError(f"{path}: {path.stat().st_size} bytes; a study file is at most {MAX_STUDY_BYTES}")
    try:
        text = path.read_text()
        _check_depth(text, path)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StudyError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except UnicodeDecodeError:
        raise StudyError(f"{path}: not a text file") from None
    return raw


def _check_depth(text: str, path) -> None:
    """Refuse deep nesting before the (recursive) composer sees it: 600 `[` would be a RecursionError.
    The parser's events come from a state machine, so counting them cannot recurse."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise StudyError(f"{path}: nested more than {MAX_YAML_DEPTH} levels deep; a study needs a few")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


__all__ = ["StudyError", "read_yaml"]
