"""Your own model and data, tried on CPU before Ray starts (`deqlab validate`, `deqlab run`).

The configured model is built for the configured data and takes one training step and one prediction on
two samples, through the loop's own model interface (pretraining depth and depth states too, when the
config asks for them). A shape mismatch, a wrong return or a model outside the contract is then one line
naming it, not a failed trial on the cluster. Built-in names never come here (torch stays unloaded).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import plugins
from ..data import load_dataset
from ..layers.deq import DEQInfo
from .config import TrainConfig
from .loop import correction_loss, model_for
from .reuse import deq_layer


def try_config(config: TrainConfig) -> str:
    """Build and run the config's model on two samples of its data; a one-line UserCodeError if it fails.
    Returns what was tried, for `deqlab validate`."""
    d = config.data
    splits = load_dataset(d.name, data_dir=d.data_dir, subset=2, test_subset=2, normalize=d.normalize,
                          seed=config.seed, options=d.options, path=d.path)
    if splits.task != "classification":
        raise plugins.UserCodeError(f"data {d.name!r}: float targets (a regression task); deqlab trains "
                                    "classifiers: give integer class labels")
    x = torch.stack([splits.train[i][0] for i in range(2)]).float()
    y = torch.as_tensor([int(splits.train[i][1]) for i in range(2)])
    where = f"model {config.model.name!r} on 2 samples of data {d.name!r} (shape {tuple(x.shape[1:])})"
    with torch.device("cpu"):
        model = model_for(config, splits)
    try:
        model.train()
        _step(model, x, y, splits.num_classes)
        if config.deq.reuse != "none":
            _reused_step(model, x, y, splits.num_classes)
        if config.pretrain_epochs:
            model.set_fixed_depth(config.pretrain_depth)
            _step(model, x, y, splits.num_classes)
            model.set_fixed_depth(None)
        model.eval()
        with torch.no_grad():
            _check_output(model(x), splits.num_classes)
        if config.depth_states:
            states = model.depth_states(x, config.depth_states)
            if len(states) != config.depth_states + 1:
                raise ValueError(f"depth_states gave {len(states)} states, expected {config.depth_states + 1}")
    except plugins.UserCodeError:
        raise
    except Exception as exc:  # the user's forward may raise anything: one line naming where
        raise plugins.UserCodeError(f"{where}: {plugins.describe_error(exc)}") from exc
    params = sum(p.numel() for p in model.parameters())
    return f"{config.model.name} on {d.name}: inputs {tuple(x.shape[1:])}, {splits.num_classes} classes, " \
           f"{params} parameters; a training step and a prediction on 2 samples passed"


def _check_output(out, classes: int) -> torch.Tensor:
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], DEQInfo)):
        raise ValueError(f"forward returned {type(out).__name__}; a model returns (logits, DEQInfo) "
                         "(DEQModel.forward does: injection -> self.deq -> readout)")
    logits = out[0]
    if tuple(logits.shape) != (2, classes):
        raise ValueError(f"logits have shape {tuple(logits.shape)}, expected (2, {classes}) for {classes} classes")
    return logits


def _reused_step(model, x, y, classes: int) -> None:
    """deq.reuse: the model has one DEQ layer, and a step starts from the z* the previous pass reached."""
    layer = deq_layer(model)
    z_star = model(x)[1].z_star
    if z_star is None:
        raise ValueError("deq.reuse: the DEQ layer returned no z_star to keep")
    with layer.start_from(z_star, torch.ones(len(x), dtype=torch.bool)):
        _step(model, x, y, classes)


def _step(model, x, y, classes: int) -> None:
    out = model(x)
    logits = _check_output(out, classes)
    loss = nn.functional.cross_entropy(logits, y) + out[1].reg_loss + correction_loss(model, out[1], y)
    loss.backward()
    model.zero_grad(set_to_none=True)


__all__ = ["try_config"]
