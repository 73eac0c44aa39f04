"""Shared ground: params loading and validation, errors, atomic writes, records, checkpoints, device, constants."""
