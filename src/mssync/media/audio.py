"""Log-mel audio features with librosa, at a hop that divides the video frame period, and the
per-file standardisation every model applies to them."""

from __future__ import annotations

import librosa
import numpy as np

from mssync.core.config import FeatureSettings
from mssync.core.constants import STD_FLOOR

POWER_FLOOR = 1e-10  # amin for the dB conversion: digital silence maps to -100 dB, not -inf


def log_mel(samples: np.ndarray, sample_rate: int, settings: FeatureSettings) -> np.ndarray:
    """(n_frames, n_mels) float32 log-mel energies in dB, frame j centred at j * hop."""
    hop = sample_rate * settings.hop_ms // 1000
    win = int(round(sample_rate * settings.win_ms / 1000))
    if win > settings.n_fft:
        raise ValueError(f"win_ms={settings.win_ms} gives {win} samples > n_fft={settings.n_fft}")
    y = librosa.effects.preemphasis(samples - samples.mean(), coef=settings.preemphasis)
    mel = librosa.feature.melspectrogram(
        y=y, sr=sample_rate, n_fft=settings.n_fft, hop_length=hop, win_length=win,
        n_mels=settings.n_mels, fmin=settings.fmin, fmax=settings.fmax, center=True, power=2.0,
    )
    return librosa.power_to_db(mel, ref=1.0, amin=POWER_FLOOR, top_db=None).T.astype(np.float32)


def standardise_audio(mel: np.ndarray) -> np.ndarray:
    """Per-file z-score of the log-mel the generator sees, the same at training and generation time
    (the floor only guards a band that never changes, as in digital silence)."""
    return (mel - mel.mean(0)) / np.maximum(mel.std(0), STD_FLOOR)
