"""What a training run may ask of a model, so the run never looks inside one: the public contract of the
zoo's models and of a researcher's own (`from deqlab.models import DEQModel, Model`).

A model is built from the data's input shape and class count (`for_data`),
switches pretraining at fixed depth on and off (`set_fixed_depth`), and gives
the hidden states over depth (`depth_states`). A DEQ model is an injection,
the DEQ layer `self.deq` and a readout: every DEQ feature (solvers, backward
modes, SkipDEQ, Jacobian regularisation, pretraining, depth states, NFE) lives
in the layer, so a subclass gets them all.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..layers.config import DEQConfig
from ..layers.deq import DEQ, DEQInfo


class Model(nn.Module):
    """A model whose forward returns (logits, DEQInfo), so the loop reads cost the same way for all.

    `for_data(input_shape, classes, deq, **options)` builds it for one sample's shape (channel first), the
    class count and the study's DEQConfig; `model.options` arrive as keywords. By default it calls
    `cls(input_shape, classes, deq, **options)`, so a subclass may take those in its constructor instead.
    """

    @classmethod
    def for_data(cls, input_shape: tuple, classes: int, deq: DEQConfig, **options) -> "Model":
        return cls(input_shape, classes, deq, **options)

    def set_fixed_depth(self, depth: Optional[int]) -> None:
        if depth is not None:
            raise ValueError(f"{type(self).__name__} has no DEQ layer to unroll")

    def depth_states(self, x: torch.Tensor, k_max: int) -> list[torch.Tensor]:
        raise ValueError(f"{type(self).__name__} has no DEQ layer to unroll")


class DEQModel(Model):
    """injection(x) -> DEQ layer `self.deq` -> readout(z)."""

    deq: DEQ

    def injection(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def readout(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, DEQInfo]:
        z, info = self.deq(self.injection(x))
        return self.readout(z), info

    def set_fixed_depth(self, depth: Optional[int]) -> None:
        """k explicit applications instead of the solve (pretraining); None: solve."""
        self.deq.set_fixed_depth(depth)

    @torch.no_grad()
    def depth_states(self, x: torch.Tensor, k_max: int) -> list[torch.Tensor]:
        """Hidden states after k = 0..k_max applications of the cell from the model's z0 (eval mode)."""
        was_training = self.training
        self.eval()
        try:
            return self.deq.unrolled_states(self.injection(x), k_max)
        finally:
            self.train(was_training)


ZooModel = Model  # the name before the contract was public

__all__ = ["Model", "DEQModel", "ZooModel", "DEQ", "DEQInfo"]
