"""Where models run: `device: auto` takes CUDA when present; everything also runs on CPU."""

from __future__ import annotations

import torch


def pick_device(name: str) -> torch.device:
    """`auto` takes CUDA when present; everything also runs on CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
