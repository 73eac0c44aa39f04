"""Reproducible runs: every command that computes with torch or numpy starts with `configure`, and
every metrics file it writes records `provenance` under the key "run".

What is identical: the same command, on the same machine (same CPU), with the same thread count,
on CPU, gives the same bytes (tests/test_reproducible.py runs the tiny pipeline twice and compares
every metrics file). `configure` fixes what would otherwise vary from run to run: the thread count
of torch and of the BLAS/OpenMP pools numpy uses (a float sum split over another number of
threads is added in another order), torch's deterministic algorithms, and seeds for torch, numpy's
global generator and Python's `random` (the stages draw from their own seeded generators; these
catch anything that does not).

What is not: another thread count, another CPU (torch and the BLAS pick kernels by instruction
set: `cpu_capability`), another torch or numpy version, or a GPU (CUDA kernels sum in another order
than the CPU's, and a few have no deterministic version: torch then warns in the job's log) give
other last bits, and training amplifies them. That is why each metrics file records them.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from mssync import __version__

# Read by the OpenMP, OpenBLAS and MKL pools when they start: set before numpy and torch load them
# (Snakemake sets the same ones to a job's `threads`).
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
# cuBLAS is deterministic only with a fixed workspace; read when CUDA starts (torch's reproducibility notes).
CUBLAS_WORKSPACE = ":4096:8"
PROVENANCE_KEYS = ("mssync", "torch", "numpy", "device", "threads", "deterministic", "cpu_capability")


def configure(threads: int, seed: int = 0) -> None:
    """Fix the thread counts, turn on deterministic algorithms and seed the global generators.

    Call it first in a command, before its stage modules import numpy and torch, so the pools
    start with `threads`; pools already running are resized too."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)  # a CUDA op without a deterministic version warns
    torch.backends.cudnn.benchmark = False  # benchmarking picks the fastest kernel, which may differ per run
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def provenance(device: str | object = "cpu") -> dict:
    """What a run computed with: the "run" entry of every metrics file (PROVENANCE_KEYS, plus the
    GPU and CUDA version on CUDA). Identical bytes are promised only between runs whose entries match."""
    import numpy as np
    import torch

    device = torch.device(device)
    run = {
        "mssync": __version__,
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "device": device.type,
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if device.type == "cuda":
        run.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    return run


def training_runs(checkpoints: dict[str, Path]) -> dict[str, dict | None]:
    """The "run" each model was trained with (saved in its checkpoint; None for one saved before
    runs were recorded): the provenance of the training curves, which are TSV files the plots read."""
    from mssync.core.checkpoints import load

    return {name: load(path).get("run") for name, path in checkpoints.items()}
