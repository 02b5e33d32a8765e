"""TrainConfig: everything one run needs, validated once and without importing torch.

`deqlab validate`, a study's probe of its space and every trial read this
module; the run itself (deqlab.run.loop) is the only part that needs torch.
The DEQ settings are a `DEQConfig` (deqlab.layers.config), handed to the model
as they are.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from .. import plugins
from ..data.sources import NPZ, check as check_data
from ..layers.config import DEQConfig
from ..data.table import TABLE
from ..models.catalog import MODELS, check_model, has_deq

DEFAULT_MAX_UNCONVERGED = 0.5


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_Spec):
    name: str = Field("digits", description="a built-in data set, npz (with path), or 'package.module:function'")
    path: Optional[str] = Field(None, description="name npz: the .npz file (relative: to the study file's folder)")
    options: dict = Field(default_factory=dict, description="keywords of your own data function")
    data_dir: Optional[str] = None
    subset: Optional[int] = Field(None, ge=1, description="training images used (seeded)")
    test_subset: Optional[int] = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    normalize: bool = True

    @model_validator(mode="after")
    def _known(self):
        check_data(self.name, self.options, self.path)  # "unknown data set" lists the valid names
        return self

    @model_serializer(mode="wrap")
    def _dump_set_only(self, handler):
        # a built-in set's dump (and so its config_hash and param.* columns) is what it was before own data
        out = handler(self)
        for key in ("path", "options"):
            if not out.get(key):
                out.pop(key, None)
        return out


class ModelSpec(_Spec):
    name: str = Field("mlp", description="a built-in model, an installed plugin's name, or 'package.module:Class'")
    options: dict = Field(default_factory=dict, description="the model's keywords (width, inner, channels, ...)")

    @model_validator(mode="after")
    def _known(self):
        check_model(self.name, self.options)
        return self


class OptimSpec(_Spec):
    name: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr: float = Field(0.0, ge=0)
    grad_clip: Optional[float] = Field(None, gt=0)
    accumulate: int = Field(1, ge=1, description="micro-batches (of data.batch_size) whose gradients are averaged "
                                                 "per optimiser step: effective batch = batch_size x accumulate")


class CheckpointSpec(_Spec):
    """When a run saves its state (docs/reliability.md "Checkpoints"): every `every` epochs and after the last
    epoch, keeping the newest `keep`; `every: 0` saves none (and a lost trial then starts again at epoch 0)."""

    every: int = Field(1, ge=0, description="epochs between checkpoints (0: none); the last epoch is always saved")
    keep: int = Field(2, ge=1, description="checkpoints kept per trial, newest first (the final one among them)")

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def due(self, epoch: int, last_epoch: int) -> bool:
        """Whether epoch `epoch` (0-based) ends with a checkpoint."""
        return self.enabled and ((epoch + 1) % self.every == 0 or epoch == last_epoch)


class TrainConfig(_Spec):
    """Everything one run needs; unknown keys are errors, never ignored."""

    seed: int = Field(0, ge=0, le=2**32 - 1, description="numpy and torch take seeds in [0, 2**32 - 1]")
    epochs: int = Field(5, ge=1, description="DEQ epochs after pretraining")
    pretrain_epochs: int = Field(0, ge=0)
    pretrain_depth: int = Field(5, ge=1, description="fixed-depth unrolling during pretraining")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # a trial whose solver leaves most test samples short of `tol` did not find the equilibrium it reports on
    max_unconverged_frac: Optional[float] = Field(
        DEFAULT_MAX_UNCONVERGED, gt=0, le=1,
        description=f"diverged when, after a DEQ epoch, more than this fraction of the test samples did not reach "
                    f"tol (default {DEFAULT_MAX_UNCONVERGED}; 1 or null: never)")
    eval_batch: int = Field(128, ge=1, description="fixed test batch for residual traces and depth states")
    depth_states: int = Field(0, ge=0, description="record hidden states after k=0..K applications (0: off)")
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    deq: DEQConfig = Field(default_factory=DEQConfig)
    optim: OptimSpec = Field(default_factory=OptimSpec)

    @model_validator(mode="after")
    def _honoured(self):
        """A model without a DEQ layer cannot honour deq.* (or pretraining) settings: refuse, never drop them."""
        if has_deq(self.model.name) is not False:  # None: a user's factory, checked when built
            return self
        ignored = [f"deq.{k}" for k in self.deq.changed()]
        ignored += [k for k in ("pretrain_epochs", "pretrain_depth", "depth_states") if k in self.model_fields_set
                    and getattr(self, k) != type(self).model_fields[k].default]
        if ignored:
            raise ValueError(f"{', '.join(ignored)}: set, but model {self.model.name!r} has no DEQ layer, so "
                             f"{'they' if len(ignored) > 1 else 'it'} would be ignored; remove "
                             f"{'them' if len(ignored) > 1 else 'it'} (its own settings go in model.options)")
        return self

    def own_code(self) -> bool:
        """Whether the config names your own model or data (a module to import, and to try before Ray)."""
        return self.model.name not in MODELS or self.data.name not in TABLE

    def own_targets(self) -> list:
        """The import paths ("package.module:Attr") of your own model and data function, if any."""
        out = []
        if self.model.name not in MODELS:
            out.append(plugins.target(self.model.name, plugins.MODELS_GROUP))
        if self.data.name not in TABLE and self.data.name != NPZ:
            out.append(plugins.target(self.data.name, plugins.DATASETS_GROUP))
        return [t for t in out if t]

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:12]

    def flat_params(self) -> dict:
        """Hyperparameters as flat `section.key` names (the `param.*` columns)."""
        out = {}

        def walk(prefix, value):
            if isinstance(value, dict) and value:
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            elif not isinstance(value, dict):
                out[prefix] = value

        walk("", self.model_dump())
        return out


__all__ = ["TrainConfig", "CheckpointSpec", "DataSpec", "ModelSpec", "OptimSpec", "DEFAULT_MAX_UNCONVERGED"]
