"""What a run records besides its metrics: residual traces and hidden states over depth, on a fixed batch."""

from __future__ import annotations

import torch
from torch import nn


def residual_traces(model, x, y):
    """Forward residual after each solver step on a fixed batch, and the adjoint's (implicit mode)."""
    model.train()
    model.zero_grad(set_to_none=True)
    logits, info = model(x)
    nn.functional.cross_entropy(logits, y).backward()
    model.zero_grad(set_to_none=True)
    fwd = (info.trace, info.trace_mean)
    rec = info.backward
    bwd = (rec.trace, rec.trace_mean) if rec.trace else None
    return fwd, bwd


@torch.no_grad()
def depth_states(model, x, y, k_max: int, epoch: int):
    """Hidden states after k = 0..K plain applications of the cell from the model's z0 (depth view), as rows."""
    import pandas as pd

    rows = []
    for k, z in enumerate(model.depth_states(x, k_max)):
        flat = z.flatten(1).float().cpu()
        for i in range(flat.shape[0]):
            rows.append({"epoch": epoch, "step": k, "sample": i, "label": int(y[i]), "state": flat[i].tolist()})
    return pd.DataFrame(rows)
