"""Where models run: `device: auto` takes CUDA when present; everything also runs on CPU."""

from __future__ import annotations

import torch


def pick_device(name: str) -> torch.device:
    """`auto` takes CUDA when present; everything also runs on CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A training batch on `device`: on CUDA through pinned (page-locked) memory and an asynchronous
    copy, so the next batch is drawn on the CPU while the GPU computes; on CPU, as it is."""
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)
