"""Small image summaries of a trained model, stored inside its run record.

Sample and reconstruction grids are drawn from these, so that a report can be
regenerated from the records alone, without checkpoints. Pixels are stored as
8-bit probabilities, base64-encoded.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import torch

from vaebench.methods import Method

N_SAMPLES = 32
N_RECONSTRUCTIONS = 8


def encode(pixels: torch.Tensor) -> dict[str, Any]:
    """Probabilities in [0, 1] of shape (N, ...) → a JSON-ready dict."""
    array = (pixels.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return {"shape": list(array.shape), "uint8_base64": base64.b64encode(array.tobytes()).decode()}


def decode(entry: dict[str, Any]) -> np.ndarray:
    """The inverse of :func:`encode`: float32 probabilities."""
    raw = np.frombuffer(base64.b64decode(entry["uint8_base64"]), dtype=np.uint8)
    return raw.reshape(entry["shape"]).astype(np.float32) / 255.0


@torch.no_grad()
def image_summary(method: Method, test: torch.Tensor, image_shape: tuple[int, ...], seed: int = 0
                  ) -> dict[str, Any] | None:
    """Model samples, and test images beside their reconstructions; None for non-image data."""
    if len(image_shape) != 3:
        return None
    torch.manual_seed(seed)
    originals = test[:N_RECONSTRUCTIONS]
    return {
        "samples": encode(method.sample(N_SAMPLES).reshape(-1, *image_shape)),
        "originals": encode(originals.reshape(-1, *image_shape)),
        "reconstructions": encode(method.reconstruct(originals).reshape(-1, *image_shape)),
    }
