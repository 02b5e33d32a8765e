"""A study that names your own model or data: tried before Ray starts, shipped to Ray's workers, recorded.

- `preflight`: each configuration the study can give its own model or data (the base, and each value of a
  searched `model.*` / `data.*` setting) is built and run on two samples on CPU (`run.preflight`).
- `ship`: the user's modules that are not installed (a `mycells.py` beside the study) travel to every Ray
  worker through Ray's `runtime_env` `py_modules`: no node needs them installed or on its disk.
- `record` / `check_unchanged`: `user_code.yaml` in the study directory keeps the study file's folder
  (where `deqlab resume` imports from) and the source hashes; a resume with changed code is refused
  unless allowed. Each trial's rows carry the hashes it ran with (`model_source_hash`, `data_source_hash`).

A study of built-in names never comes here beyond `names_own_code` (no torch, no file).
"""

from __future__ import annotations

from typing import Callable, Optional

from .. import plugins
from ..data import DATASETS
from ..results import StudyStore
from .space import walk
from .spec import StudyError, StudySpec

CODE_FILE = "user_code.yaml"
MAX_TRIED = 8  # configurations built before Ray starts (each is a model build and two samples)


def configs(spec: StudySpec) -> list:
    """The base config and one per value of each searched model/data setting, those naming own code."""
    out, seen = [], set()
    assignments = [{}] + [{p.path: v} for p in walk(spec.params) if p.path.split(".")[0] in ("model", "data")
                          for v in p.probe_values()]
    for assignment in assignments:
        try:
            config = spec.train_config(assignment)
        except ValueError:  # a value valid only with a sibling's: the probe judged the combinations
            continue
        key = (config.model.model_dump_json(), config.data.model_dump_json())
        if key in seen or not config.own_code():
            continue
        seen.add(key)
        out.append(config)
    return out[:MAX_TRIED]


def names_own_code(spec: StudySpec) -> bool:
    return bool(configs(spec))


def preflight(spec: StudySpec, *, cluster: bool = False, say: Callable[[str], None] = print) -> list[str]:
    """Try every configuration of own code on two samples; one line per configuration tried."""
    from ..data import DataError
    from ..run.preflight import try_config

    lines = []
    for config in configs(spec):
        try:
            lines.append(try_config(config))
        except DataError:
            if not cluster or config.data.name not in DATASETS:
                raise
            say(f"note: {config.model.name} not tried before the cluster run: data set {config.data.name!r} is "
                "not on this machine (the nodes read their own copy)")
    return lines


def ship(spec: StudySpec) -> list[str]:
    """Local paths of the user's modules for Ray's `runtime_env` `py_modules` (none for installed ones)."""
    targets = {t for config in configs(spec) for t in config.own_targets()}
    return plugins.ship_paths(sorted(targets))


def hashes(spec: StudySpec) -> dict:
    """{"model NAME" / "data NAME": source hash} of every own model and data set the study can use."""
    from ..run.env import code_hashes

    out = {}
    for config in configs(spec):
        h = code_hashes(config)
        if h["model_source_hash"]:
            out[f"model {config.model.name}"] = h["model_source_hash"]
        if h["data_source_hash"]:
            out[f"data {config.data.name}" + (f" {config.data.path}" if config.data.path else "")] = \
                h["data_source_hash"]
    return out


def record(spec: StudySpec, storage: str, current: Optional[dict] = None) -> None:
    import yaml

    current = hashes(spec) if current is None else current
    if current:
        StudyStore.of(storage, spec.name).write_text(CODE_FILE, yaml.safe_dump(
            {"folders": list(plugins.folders()), "source_hashes": current}, sort_keys=True))


def restore_folders(store: StudyStore) -> None:
    """Before the saved spec is parsed on resume: look for the modules where the study first found them."""
    try:
        saved = store.read_yaml(CODE_FILE) or {}
    except ValueError:
        return
    for folder in reversed(saved.get("folders") or []):
        if isinstance(folder, str):
            plugins.add_folder(folder)


def check_unchanged(spec: StudySpec, storage: str, allow: bool, say: Callable[[str], None] = print) -> dict:
    """Refuse to resume with own code whose source changed since the study ran, unless `allow`; returns
    the current hashes (recorded again by the driver)."""
    store = StudyStore.of(storage, spec.name)
    try:
        before = (store.read_yaml(CODE_FILE) or {}).get("source_hashes") or {}
    except ValueError:
        before = {}
    now = hashes(spec)
    changed = [f"{key} ({before[key]} -> {now.get(key)})" for key in sorted(before) if before[key] != now.get(key)]
    if changed and not allow:
        raise StudyError(f"study {spec.name!r}: your code changed since its trials ran: {'; '.join(changed)}; new "
                         "trials would not be comparable with the finished ones. Restore it, or resume with "
                         "--allow-changed-code (each trial's rows keep the hashes it ran with)")
    if changed:
        say(f"warning: resuming {spec.name} with changed code: {'; '.join(changed)}")
    return now


__all__ = ["CODE_FILE", "configs", "names_own_code", "preflight", "ship", "hashes", "record", "restore_folders",
           "check_unchanged"]
