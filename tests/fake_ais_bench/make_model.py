"""Write a model file for the ais_bench stand-in (``tests/fake_ais_bench``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_model(path, *, input_shape=(4, 3, 16, 112, 112), num_classes: int = 7, seed: int = 0,
                input_name: str = "image", input_dtype: str = "float32") -> dict:
    """Save a fake ``.om``; return its weight and bias so a test can compute the truth itself."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((input_shape[1], num_classes)).astype(np.float32)
    bias = rng.standard_normal(num_classes).astype(np.float32)
    with open(Path(path), "wb") as f:
        np.savez(f, weight=weight, bias=bias, input_shape=np.asarray(input_shape), input_name=input_name,
                 output_name="logits", input_dtype=input_dtype)
    return {"weight": weight, "bias": bias}
