#!/usr/bin/env bash
# One set-up path for a fresh machine (Python >= 3.11): Debian's ffmpeg when missing, torch
# (CPU build unless an NVIDIA GPU is present), then mssync and its dependencies, in .venv.
#   bash setup.sh            # creates/updates .venv
#   MSSYNC_TORCH=cuda bash setup.sh   # force the CUDA build (see README)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
VENV=${VENV:-.venv}

if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  echo "setup: installing Debian's ffmpeg" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ffmpeg >/dev/null
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"

want=${MSSYNC_TORCH:-auto}
if [ "$want" = auto ]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then want=cuda; else want=cpu; fi
fi
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: installing torch $TORCH_VERSION ($want build)" >&2
  if [ "$want" = cpu ]; then
    # The "+cpu" build from a local wheel directory or mirror when pip's config offers one;
    # otherwise from PyTorch's CPU index (plain PyPI torch would pull GBs of CUDA packages).
    $PIP install -q "torch==$TORCH_VERSION+cpu" 2>/dev/null \
      || $PIP install -q "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
  else
    $PIP install -q "torch==$TORCH_VERSION"
  fi
fi

$PIP install -q -e ".[dev]"
echo "setup: done. Activate with: . $VENV/bin/activate" >&2
