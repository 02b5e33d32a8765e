"""A data function: interleaved spiral arms in the plane, one class per arm. Named in a study as
`data: {name: "spirals:spirals", options: {...}}`; the options are this function's keywords."""

import numpy as np


def spirals(arms: int = 3, n_train: int = 1200, n_test: int = 600, noise: float = 0.15, turns: float = 1.0,
            seed: int = 0):
    """(x_train, y_train, x_test, y_test): 2-d points (float32) and integer arm labels 0..arms-1."""
    rng = np.random.default_rng(seed)

    def draw(n):
        y = rng.integers(0, arms, n)
        r = rng.uniform(0.1, 1.0, n)
        angle = 2 * np.pi * (turns * r + y / arms)
        x = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1) + noise * r[:, None] * rng.normal(size=(n, 2))
        return x.astype(np.float32), y.astype(np.int64)

    return (*draw(n_train), *draw(n_test))
