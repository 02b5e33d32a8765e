"""What a training run may ask of a zoo model, so the run never looks inside one.

A model is built from the data's input shape and class count (`for_data`),
switches pretraining at fixed depth on and off (`set_fixed_depth`), and gives
the hidden states over depth (`depth_states`). A DEQ model is an injection,
the DEQ layer and a readout.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..layers.config import DEQConfig
from ..layers.deq import DEQ, DEQInfo


class ZooModel(nn.Module):
    """A model whose forward returns (logits, DEQInfo), so the loop reads cost the same way for all."""

    @classmethod
    def for_data(cls, input_shape: tuple, classes: int, deq: DEQConfig, **options) -> "ZooModel":
        raise NotImplementedError

    def set_fixed_depth(self, depth: Optional[int]) -> None:
        if depth is not None:
            raise ValueError(f"{type(self).__name__} has no DEQ layer to unroll")

    def depth_states(self, x: torch.Tensor, k_max: int) -> list[torch.Tensor]:
        raise ValueError(f"{type(self).__name__} has no DEQ layer to unroll")


class DEQModel(ZooModel):
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
