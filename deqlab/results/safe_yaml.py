"""YAML from files deqlab did not write itself (a study file, the study.yaml of a results folder copied from
anywhere): the safe loader, within a size and a nesting cap, in one place for both.

libyaml's loader when PyYAML has it (a 1 MiB file: ~1 s instead of ~10 s); the nesting is counted on the
parser's events, which come from a state machine, before the recursive composer sees the document
(600 `[` would be a RecursionError there).
"""

from __future__ import annotations

import yaml

MAX_YAML_BYTES, MAX_YAML_DEPTH = 1 << 20, 32
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def too_big(size: int, where="") -> str | None:
    """The message for a file over the size cap (after `where: `), None when it is within."""
    prefix = f"{where}: " if where else ""
    return f"{prefix}{size} bytes; a study file is at most {MAX_YAML_BYTES}" if size > MAX_YAML_BYTES else None


def load_capped(text: str, where=""):
    """The document in `text` (already within the size cap); a ValueError (after `where: `) when it is
    nested too deep or is no YAML."""
    where = f"{where}: " if where else ""
    try:
        depth = 0
        for event in yaml.parse(text, Loader=_SAFE_LOADER):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise ValueError(f"{where}nested more than {MAX_YAML_DEPTH} levels deep; a study needs a few")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        return yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        raise ValueError(f"{where}not valid YAML: {' '.join(str(exc).split())}") from None


__all__ = ["MAX_YAML_BYTES", "MAX_YAML_DEPTH", "load_capped", "too_big"]
