"""ffmpeg/ffprobe through ffmpeg-python: probe, decode frames, crop+scale+CFR encode, audio.

ffmpeg autorotates on decode, so every pixel coordinate in this project is in the *displayed*
orientation; `MediaInfo.display_size` says what that is. ffmpeg errors always carry stderr,
which is turned into a one-line MediaError naming the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import ffmpeg
import numpy as np

from mssync.core.errors import MediaError

log = logging.getLogger(__name__)

VFR_TOLERANCE_FPS = 0.01  # r_frame_rate vs avg_frame_rate disagreement that marks variable frame rate
PCM_MAX = 32768.0


@dataclasses.dataclass(frozen=True)
class MediaInfo:
    path: str
    width: int  # coded size, before rotation
    height: int
    rotation: int  # degrees, as ffmpeg will apply on decode
    fps: float  # average frame rate
    nominal_fps: float  # r_frame_rate: the container's base rate
    duration_s: float
    video_codec: str
    audio_codec: str | None
    sample_rate: int | None
    channels: int | None
    audio_duration_s: float | None
    video_start_s: float = 0.0  # stream start on the file's timeline (0 = earliest stream start)
    audio_start_s: float = 0.0

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) of decoded frames after autorotation."""
        if self.rotation % 180 == 90:
            return self.height, self.width
        return self.width, self.height

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None

    @property
    def variable_frame_rate(self) -> bool:
        return abs(self.fps - self.nominal_fps) > VFR_TOLERANCE_FPS


def ffmpeg_error_message(exc: ffmpeg.Error) -> str:
    """The last meaningful stderr line: what ffmpeg itself said went wrong."""
    lines = [ln.strip() for ln in (exc.stderr or b"").decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else str(exc)


def _rate(text: str | None) -> float:
    if not text or text in ("0/0", "N/A"):
        return 0.0
    return float(Fraction(text))


def _rotation(stream: dict) -> int:
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            return int(round(-float(side["rotation"]))) % 360
    rotate = (stream.get("tags") or {}).get("rotate")
    return int(rotate) % 360 if rotate else 0


def probe(path: str | Path) -> MediaInfo:
    """Probe a media file; raise MediaError for anything without a decodable video stream."""
    path = str(path)
    try:
        info = ffmpeg.probe(path)
    except ffmpeg.Error as exc:
        raise MediaError(f"{path}: unreadable media ({ffmpeg_error_message(exc)})") from None
    streams = info.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None:
        raise MediaError(f"{path}: no video stream")
    fmt_duration = float(info.get("format", {}).get("duration") or 0.0)
    duration = float(video.get("duration") or fmt_duration)
    origin = float(info.get("format", {}).get("start_time") or 0.0)
    return MediaInfo(
        path=path,
        width=int(video["width"]),
        height=int(video["height"]),
        rotation=_rotation(video),
        fps=_rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate")),
        nominal_fps=_rate(video.get("r_frame_rate")),
        duration_s=duration,
        video_codec=video.get("codec_name", "?"),
        audio_codec=audio.get("codec_name") if audio else None,
        sample_rate=int(audio["sample_rate"]) if audio else None,
        channels=int(audio.get("channels", 0)) if audio else None,
        audio_duration_s=float(audio.get("duration") or fmt_duration) if audio else None,
        video_start_s=_start(video, origin),
        audio_start_s=_start(audio, origin) if audio else 0.0,
    )


def require_audio_stream(path: str | Path) -> None:
    """Probe a file that must hold sound; a MediaError naming the file says what it lacks (no audio
    stream: "found video (png)") instead of the error ffmpeg gives later when asked to decode it
    ("... add a trailing '?' to the map ...")."""
    if not Path(path).is_file():
        raise MediaError(f"{path}: no such audio file")
    try:
        streams = ffmpeg.probe(str(path)).get("streams", [])
    except ffmpeg.Error as exc:
        raise MediaError(f"{path}: unreadable audio ({ffmpeg_error_message(exc).removeprefix(f'{path}: ')})") from None
    if not any(s.get("codec_type") == "audio" for s in streams):
        found = ", ".join(f"{s.get('codec_type', '?')} ({s.get('codec_name', '?')})" for s in streams) or "no streams"
        raise MediaError(f"{path}: no audio stream (found {found}); give a speech recording")


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """A speech file's first audio stream: what the crop stage records and compares with the video."""

    path: str
    codec: str
    sample_rate: int
    channels: int
    duration_s: float


def probe_audio(path: str | Path) -> AudioInfo:
    """Probe a separate speech file; MediaError when it is unreadable, holds no audio or has no duration.

    `probe` cannot be used: it insists on a video stream, which a wav does not have.
    """
    path = str(path)
    try:
        info = ffmpeg.probe(path)
    except ffmpeg.Error as exc:
        raise MediaError(f"{path}: unreadable audio ({ffmpeg_error_message(exc)})") from None
    audio = next((s for s in info.get("streams", []) if s.get("codec_type") == "audio"), None)
    if audio is None:
        raise MediaError(f"{path}: no audio stream")
    duration = float(audio.get("duration") or info.get("format", {}).get("duration") or 0.0)
    if duration <= 0:
        raise MediaError(f"{path}: audio stream without a duration")
    return AudioInfo(path=path, codec=audio.get("codec_name", "?"), sample_rate=int(audio.get("sample_rate") or 0),
                     channels=int(audio.get("channels") or 0), duration_s=duration)


def _start(stream: dict, origin: float) -> float:
    """A stream's start relative to the file's start: ffmpeg's decode timeline begins at `origin`."""
    return max(0.0, float(stream.get("start_time") or origin) - origin)


def _input(path: str | Path, start_s: float | None, duration_s: float | None) -> ffmpeg.nodes.FilterableStream:
    kwargs: dict[str, float] = {}
    if start_s:
        kwargs["ss"] = start_s
    if duration_s is not None:
        kwargs["t"] = duration_s
    return ffmpeg.input(str(path), **kwargs)


def iter_frames(
    path: str | Path,
    size: tuple[int, int],
    *,
    fps: float | None = None,
    start_s: float | None = None,
    duration_s: float | None = None,
    threads: int = 0,
) -> Iterator[np.ndarray]:
    """Decode RGB frames (H, W, 3) uint8 through a pipe, one at a time, so memory stays flat.

    `size` is the (width, height) of the decoded frames, i.e. MediaInfo.display_size unless the
    stream is scaled. `fps` resamples the stream (e.g. a few probe frames per second).
    """
    width, height = size
    stream = _input(path, start_s, duration_s).video
    if fps is not None:
        stream = stream.filter("fps", fps=fps)
    proc = (
        stream.output("pipe:", format="rawvideo", pix_fmt="rgb24", threads=threads)
        .global_args("-nostdin", "-loglevel", "error")
        .run_async(pipe_stdout=True, pipe_stderr=True)
    )
    frame_bytes = width * height * 3
    try:
        while True:
            buf = proc.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            yield np.frombuffer(buf, np.uint8).reshape(height, width, 3)
    finally:
        proc.stdout.close()
        stderr = proc.stderr.read().decode("utf-8", "replace").strip()
        proc.stderr.close()
        code = proc.wait()
        stopped_early = code in (-13, 255) or "Broken pipe" in stderr  # we closed the pipe before the end
        if code != 0 and not (stopped_early and (code != 255 or not stderr)):
            log.warning("%s: ffmpeg decode exited %s: %s", path, code, stderr.splitlines()[-1:] or "")


@dataclasses.dataclass(frozen=True)
class AudioCut:
    """A speech track cut to a clip: exactly `n_samples` of 16-bit mono PCM at `sample_rate`, read from
    `src` from `start_s` on, written as a WAV to `dst` (see extract_audio)."""

    src: str | Path
    dst: str | Path
    sample_rate: int
    n_samples: int
    start_s: float | None = None


def encode_crop(
    src: str | Path,
    dst: str | Path,
    *,
    box: tuple[int, int, int],
    size: int,
    fps: int,
    n_frames: int,
    crf: int,
    preset: str,
    start_s: float | None = None,
    audio: AudioCut | None = None,
) -> int:
    """Crop the square `box` (x, y, side in displayed pixels), scale to size x size, force CFR;
    returns the number of frames written.

    The fps filter turns variable or foreign frame rates (30 fps, VFR) into exactly `fps`;
    `frames:v` makes the frame count exact so audio and video agree downstream, unless the source
    ends early (a truncated file): the count comes from ffmpeg's own progress report of what it
    wrote, so nothing has to probe the new file. With `audio`, the same ffmpeg run also writes the
    speech WAV (the output extract_audio would write), saving a process and a second read of the
    source; a caller whose video came out short cuts the audio again to the frames written.
    """
    x, y, side = box
    source = _input(src, start_s, None)
    stream = (
        source.video.filter("fps", fps=fps)
        .filter("crop", side, side, x, y)
        .filter("scale", size, size, flags="lanczos")
        .filter("setsar", 1)
    )
    outputs = [ffmpeg.output(
        stream,
        str(dst),
        vcodec="libx264",
        crf=crf,
        preset=preset,
        pix_fmt="yuv420p",
        movflags="+faststart",
        an=None,
        format="mp4",
        **{"frames:v": n_frames},
    )]
    if audio is not None:
        same_input = Path(audio.src) == Path(src) and (audio.start_s or None) == (start_s or None)
        speech = source if same_input else _input(audio.src, audio.start_s, None)
        outputs.append(_audio_output(speech, audio))
    report = _run(ffmpeg.merge_outputs(*outputs).global_args("-nostats", "-progress", "pipe:1"), dst)
    return _frames_written(report, dst)


def _frames_written(progress: bytes, dst: str | Path) -> int:
    """The last `frame=` of ffmpeg's -progress report: frames of the first video output, once ended."""
    lines = progress.decode("utf-8", "replace").splitlines()
    if "progress=end" not in lines:
        raise MediaError(f"{dst}: ffmpeg ended without a final progress report")
    counts = [line.split("=", 1)[1] for line in lines if line.startswith("frame=")]
    if not counts:
        raise MediaError(f"{dst}: ffmpeg reported no video frame count")
    return int(counts[-1])


def _audio_output(source: ffmpeg.nodes.FilterableStream, cut: AudioCut) -> ffmpeg.nodes.OutputStream:
    """`first_pts=0` keeps the audio on the video's timeline: audio that starts after the start
    point is preceded by silence rather than pulled forward out of sync."""
    stream = (
        source.audio.filter("aresample", cut.sample_rate, **{"async": 1, "first_pts": 0})
        .filter("apad", whole_len=cut.n_samples)
        .filter("atrim", end_sample=cut.n_samples)
    )
    return ffmpeg.output(stream, str(cut.dst), acodec="pcm_s16le", ac=1, ar=cut.sample_rate, format="wav")


def extract_audio(
    src: str | Path,
    dst: str | Path,
    *,
    sample_rate: int,
    n_samples: int,
    start_s: float | None = None,
) -> None:
    """16-bit mono PCM WAV of exactly n_samples (resampled, downmixed, padded or trimmed), on the
    video's timeline (see _audio_output)."""
    cut = AudioCut(src, dst, sample_rate, n_samples, start_s)
    _run(_audio_output(_input(src, start_s, None), cut), dst)


def _run(out: ffmpeg.nodes.OutputStream, dst: str | Path) -> bytes:
    """Run ffmpeg to its end; returns its stdout (the -progress report where asked for)."""
    try:
        stdout, _ = out.global_args("-nostdin", "-loglevel", "error").overwrite_output().run(
            capture_stdout=True, capture_stderr=True
        )
    except ffmpeg.Error as exc:
        raise MediaError(f"{dst}: ffmpeg failed ({ffmpeg_error_message(exc)})") from None
    return stdout


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and the sample rate."""
    import soundfile

    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return data.mean(axis=1), int(rate)


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale; -inf for digital silence."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def decode_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Any audio ffmpeg can read -> mono float32 samples at `sample_rate`."""
    try:
        out, _ = (
            ffmpeg.input(str(path)).audio.output("pipe:", format="f32le", ac=1, ar=sample_rate)
            .global_args("-nostdin", "-loglevel", "error").run(capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as exc:
        raise MediaError(f"{path}: cannot decode audio ({ffmpeg_error_message(exc)})") from None
    samples = np.frombuffer(out, np.float32)
    if not samples.size:
        raise MediaError(f"{path}: no audio samples")
    return samples


class VideoWriter:
    """Stream RGB frames into an H.264 + AAC mp4 that browsers and ordinary players open.

    Frames go to ffmpeg's stdin as they are rendered, so a long video never sits in memory. The
    audio is taken from `audio` (any file ffmpeg reads) on the video's timeline (`first_pts=0`,
    as in extract_audio). Use `open_video_writer`, which writes to a temporary file and renames it
    into place only when ffmpeg finished cleanly."""

    def __init__(self, proc, dst: Path, size: tuple[int, int]):
        self._proc, self._dst, self._size, self.frames = proc, dst, size, 0

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self._size[1], self._size[0], 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame {frame.shape} {frame.dtype} does not match the video's {self._size} uint8 RGB")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            raise MediaError(f"{self._dst}: ffmpeg stopped accepting frames ({self._stderr()})") from None
        self.frames += 1

    def _stderr(self) -> str:
        text = self._proc.stderr.read().decode("utf-8", "replace").strip() if self._proc.stderr else ""
        return text.splitlines()[-1] if text else "no message"

    def close(self) -> None:
        self._proc.stdin.close()
        message = self._stderr()
        if self._proc.wait() != 0:
            raise MediaError(f"{self._dst}: ffmpeg encode failed ({message})")

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self._proc.stdin.close()
        self._proc.kill()
        self._proc.wait()


@contextlib.contextmanager
def open_video_writer(dst: str | Path, size: tuple[int, int], fps: int, audio: str | Path, *, crf: int,
                      preset: str, audio_bitrate: str) -> Iterator[VideoWriter]:
    """A VideoWriter on a temporary file beside `dst`; `dst` appears only if everything succeeded."""
    from mssync.core.atomic import atomic_path

    width, height = size
    with atomic_path(dst) as tmp:
        video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=fps)
        sound = ffmpeg.input(str(audio)).audio.filter("aresample", **{"async": 1, "first_pts": 0})
        out = ffmpeg.output(video, sound, str(tmp), vcodec="libx264", pix_fmt="yuv420p", crf=crf, preset=preset,
                            acodec="aac", audio_bitrate=audio_bitrate, movflags="+faststart", format="mp4")
        proc = out.global_args("-nostdin", "-loglevel", "error").overwrite_output().run_async(
            pipe_stdin=True, pipe_stderr=True)
        writer = VideoWriter(proc, Path(dst), size)
        try:
            yield writer
        except BaseException:
            writer.kill()
            raise
        writer.close()
