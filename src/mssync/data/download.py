"""Download stage: obtain one manifest clip as data/raw/{clip}.mp4, verified, or say why not.

Sources, in order:

1. a local mirror directory (this project's machines have no internet; the shared sample clips
   live in one), used only when the file's sha256 matches the manifest;
2. the manifest URL: ``http(s)://`` (urllib, retried with exponential backoff on transient
   failures), ``file:`` (a local path), or ``youtube:VIDEO_ID`` (the optional ``yt-dlp`` tool);
3. when the manifest names an archive ``member``, that member of the fetched zip.

The clip bytes are hashed while they are written and compared with the manifest sha256
before the file is renamed into place, so a bad download never becomes ``data/raw/{clip}.mp4``.

A row with ``audio_url`` (the speech is a separate file, e.g. a wav beside a silent video) gets
that file too, the same way (mirror by hash or name, then http(s)/file, retries, sha256 while
written) as ``data/raw/{clip}.audio<URL's extension>``; the record's ``audio`` field describes it.
The video is renamed into place only after the audio is verified, so a clip whose audio fails
never gets a fresh video without its speech; an audio failure is a rejection whose reason starts
with ``audio_url:``.

Every call writes a record (``records.write_record``). A clip that cannot be obtained gets a
``rejected`` record with a one-line reason; with ``strict`` the rejection is raised as well.

Deliberate choice: a rejection does not delete a ``dest`` left by an earlier successful run.
That file was verified when it was written, and deleting it would lose good data because of
a transient failure (a server outage, a flaky network). The record, not the file, is what
later stages read to decide whether the clip goes on, so the stale file is never used as if
this run had produced it.

The span (``start_s``/``end_s``) is not applied here: re-encoding is the crop stage's job, so
the record carries it as ``trim``. The exception is ``youtube:``, where yt-dlp downloads only
the section and the record's ``trim`` is None.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import logging
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO, Any, Iterator

from mssync import __version__
from mssync.core.atomic import atomic_path
from mssync.core.config import DownloadSettings
from mssync.core.errors import ClipRejected, SetupError
from mssync.core.records import OK, REJECTED, write_record
from mssync.data.manifest import ClipEntry

try:  # advisory locks let parallel jobs share one archive download; absent on Windows
    import fcntl
except ImportError:  # pragma: no cover - platform dependent
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

STAGE = "download"
CHUNK_BYTES = 1 << 20  # streaming copy/hash block: bounded memory for multi-GB archives
USER_AGENT = f"mssync/{__version__} (+python-urllib)"
RETRY_STATUS = frozenset({429})  # plus every 5xx: the server may answer later
CACHE_KEY_CHARS = 16  # hex digits of sha256(url) in a cache name: unique enough, short paths
CACHE_NAME_FALLBACK = "download"
UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")

SOURCE_MIRROR = "mirror"
SOURCE_HTTP = "http"
SOURCE_FILE = "file"
SOURCE_YOUTUBE = "youtube"

YOUTUBE_PREFIX = "youtube:"
YOUTUBE_WATCH_URL = "https://www.youtube.com/watch?v={video_id}"
YTDLP = "yt-dlp"
YTDLP_FORMAT = "bv*[height<=720][ext=mp4]+ba[ext=m4a]/b[ext=mp4]/b"
YTDLP_OUTPUT_STEM = "clip"
AUDIO_INFIX = ".audio"  # data/raw/{clip}.audio.wav: beside the video, clearly not a crop output
AUDIO_REASON = "audio_url: "  # a rejection caused by the separate audio file says so first
SAFE_SUFFIX = re.compile(r"^\.[a-z0-9]{1,10}$")
BAD_DOWNLOAD = "bad_download"  # ClipRejected detail: the fetched file itself is wrong, do not reuse it
YTDLP_MISSING = "yt-dlp is not installed: pip install 'mssync[youtube]' (or yt-dlp) to fetch youtube: clips"


@dataclasses.dataclass(frozen=True)
class Fetched:
    """A local file holding the clip, or the archive that holds it, and how it was obtained."""

    path: Path
    source: str
    attempts: int
    evict_on_reject: bool = False  # a cached download proved bad (BAD_DOWNLOAD) must not be reused


@dataclasses.dataclass(frozen=True)
class Installed:
    """A verified file written by `_obtain`: where it came from, its hash and size."""

    source: str
    attempts: int
    sha256: str
    bytes: int


class _NetworkError(Exception):
    """One failed HTTP attempt; `retry` says whether another attempt may succeed."""

    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


# --------------------------------------------------------------------------- entry point


def download_clip(*, entry: ClipEntry, settings: DownloadSettings, dest: Path, record_path: Path, strict: bool) -> dict:
    """Obtain `entry` as `dest` and write its record; return the record.

    Rejections (bad URL, HTTP error, hash mismatch, missing member...) are recorded rather than
    raised so one bad clip does not stop a run; `strict` re-raises them after recording.
    Setup problems (yt-dlp missing) raise MssyncError and write no record, because they are not
    a property of the clip and rerunning after fixing them must not be skipped.
    """
    dest = Path(dest)
    try:
        fields = _obtain_clip(entry, settings, dest)
    except ClipRejected as exc:
        log.warning("%s: rejected: %s", entry.id, exc.reason)
        audio = {"audio_url": entry.audio_url} if entry.audio_url else {}  # video-only records keep their shape
        record = write_record(
            record_path, entry.id, STAGE, REJECTED,
            speaker=entry.speaker, url=entry.url, member=entry.member, **audio, reason=exc.reason,
        )
        if strict:
            raise
        return record
    return write_record(record_path, entry.id, STAGE, OK, **fields)


def _obtain_clip(entry: ClipEntry, settings: DownloadSettings, dest: Path) -> dict[str, Any]:
    """Install the video at `dest` (and its separate audio beside it); return the OK record fields.

    The audio is fetched inside the video's atomic write, so the video is renamed into place only
    once the audio is verified and installed too.
    """
    with atomic_path(dest) as video_tmp:
        installed = _obtain(entry, settings, video_tmp, own_name=f"{entry.id}.mp4")
        fields = _ok_fields(entry, dest, installed)
        if entry.audio_url is not None:
            fields["audio"] = _obtain_audio(entry, settings, audio_dest(entry.audio_url, dest))
    return fields


def _obtain(entry: ClipEntry, settings: DownloadSettings, out: Path, own_name: str) -> Installed:
    """Write the verified file `entry` names into `out`, a temporary path the caller renames into place.

    The first source that has it wins: the mirror (`own_name` is the mirror name trusted without a
    hash), then the URL. Scratch space lies beside `out`, so renames stay on one filesystem.
    """
    mirrored = find_in_mirror(entry, settings.mirror_dir, own_name)
    if mirrored is not None:
        log.info("%s: copying from mirror %s", entry.id, mirrored)
        digest, size = write_verified(entry, _open_file(mirrored), out)
        return Installed(SOURCE_MIRROR, 0, digest, size)

    with tempfile.TemporaryDirectory(prefix=f".{entry.id}.", dir=_existing_parent(out)) as work:
        fetched = fetch(entry, settings, Path(work))
        try:
            opener = _open_member(fetched.path, entry) if entry.member else _open_file(fetched.path)
            digest, size = write_verified(entry, opener, out)
        except ClipRejected as exc:
            if fetched.evict_on_reject and exc.details.get(BAD_DOWNLOAD):
                log.info("%s: removing bad cached download %s", entry.id, fetched.path)
                fetched.path.unlink(missing_ok=True)
            raise
    return Installed(fetched.source, fetched.attempts, digest, size)


def _ok_fields(entry: ClipEntry, dest: Path, installed: Installed) -> dict[str, Any]:
    return {
        "speaker": entry.speaker,
        "file": dest.name,
        "source": installed.source,
        "url": entry.url,
        "member": entry.member,
        "sha256": installed.sha256,
        "verified": entry.sha256 is not None,  # write_verified() already rejected any mismatch
        "bytes": installed.bytes,
        "attempts": installed.attempts,
        "trim": trim_of(entry),
    }


# --------------------------------------------------------------------------- separate audio


def _audio_suffix(audio_url: str) -> str:
    """The URL's extension (lower case), or "" when it has no safe one; ffmpeg reads the content anyway."""
    suffix = PurePosixPath(_url_basename(audio_url)).suffix.lower()
    return suffix if SAFE_SUFFIX.match(suffix) else ""


def audio_dest(audio_url: str, dest: Path) -> Path:
    """`{clip}.audio<ext>` beside the video: the extension tells ffmpeg and the damage checks what it is."""
    return dest.with_name(f"{dest.stem}{AUDIO_INFIX}{_audio_suffix(audio_url)}")


def _audio_entry(entry: ClipEntry) -> ClipEntry:
    """The audio file as an entry of its own, so mirror, fetch and verification are the video's code."""
    assert entry.audio_url is not None
    return dataclasses.replace(entry, url=entry.audio_url, sha256=entry.audio_sha256, member=None,
                               audio_url=None, audio_sha256=None)


def _audio_mirror_name(clip_id: str, audio_url: str) -> str:
    """The mirror name trusted without a hash: `{id}.wav`, as the shared clips name it, but never the
    video's own `{id}.mp4` (an audio URL ending in .mp4 must not pick up the silent video)."""
    suffix = _audio_suffix(audio_url)
    if suffix and suffix != ".mp4":
        return f"{clip_id}{suffix}"
    return f"{clip_id}{AUDIO_INFIX}{suffix}"


def _obtain_audio(entry: ClipEntry, settings: DownloadSettings, target: Path) -> dict[str, Any]:
    """Install the separate audio file at `target`; return the record's `audio` field.

    A failure is re-raised with the reason prefixed by `audio_url:`, so the rejection names which
    of the clip's two files went wrong.
    """
    audio = _audio_entry(entry)
    try:
        with atomic_path(target) as tmp:
            installed = _obtain(audio, settings, tmp, own_name=_audio_mirror_name(entry.id, audio.url))
    except ClipRejected as exc:
        raise ClipRejected(f"{AUDIO_REASON}{exc.reason}", **exc.details) from None
    return {
        "file": target.name,
        "source": installed.source,
        "url": audio.url,
        "sha256": installed.sha256,
        "verified": audio.sha256 is not None,
        "bytes": installed.bytes,
        "attempts": installed.attempts,
    }


def trim_of(entry: ClipEntry) -> dict[str, float | None] | None:
    """The span the crop stage still has to cut, or None.

    youtube: clips are cut by yt-dlp while downloading; a mirrored youtube clip is a copy of
    such a download, so it is already cut too.
    """
    if entry.start_s is None and entry.end_s is None:
        return None
    if entry.url.startswith(YOUTUBE_PREFIX):
        return None
    return {"start_s": entry.start_s, "end_s": entry.end_s}


def _existing_parent(dest: Path) -> Path:
    """Scratch space beside `dest`, so renames stay on one filesystem."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest.parent


# --------------------------------------------------------------------------- install + verify


def write_verified(entry: ClipEntry, opener: contextlib.AbstractContextManager[IO[bytes]], out: Path) -> tuple[str, int]:
    """Stream the file into `out` (a temporary path from atomic_path), hashing it as it is written.

    Returns (sha256, bytes). A mismatch raises ClipRejected, so the caller's atomic_path never
    renames wrong bytes over an existing destination.
    """
    hasher = hashlib.sha256()
    size = 0
    with opener as src, out.open("wb") as fh:
        for chunk in _read_chunks(src):
            hasher.update(chunk)
            fh.write(chunk)
            size += len(chunk)
    digest = hasher.hexdigest()
    if entry.sha256 is not None and digest != entry.sha256:
        # Without a member the file is the download itself, so a cached copy is bad too.
        raise ClipRejected(
            f"sha256 mismatch: expected {entry.sha256} got {digest}", **{BAD_DOWNLOAD: entry.member is None}
        )
    return digest, size


def _read_chunks(src: IO[bytes]) -> Iterator[bytes]:
    while chunk := src.read(CHUNK_BYTES):
        yield chunk


def sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in _read_chunks(fh):
            hasher.update(chunk)
    return hasher.hexdigest()


@contextlib.contextmanager
def _open_file(path: Path) -> Iterator[IO[bytes]]:
    with path.open("rb") as fh:
        yield fh


@contextlib.contextmanager
def _open_member(archive: Path, entry: ClipEntry) -> Iterator[IO[bytes]]:
    """Open `entry.member` inside the zip `archive`; every way it can fail is a rejection."""
    assert entry.member is not None
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise ClipRejected(
            f"not a zip archive: {entry.url} (needed for member {entry.member!r})", **{BAD_DOWNLOAD: True}
        ) from None
    with zf:
        try:
            member = zf.open(entry.member)
        except KeyError:
            raise ClipRejected(f"archive {entry.url} has no member {entry.member!r}") from None
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:  # corrupt/encrypted/unsupported
            raise ClipRejected(f"archive {entry.url}: cannot read member {entry.member!r}: {exc}") from None
        with member:
            try:
                yield member
            except zipfile.BadZipFile as exc:  # CRC or truncated data found while streaming
                raise ClipRejected(f"archive {entry.url}: member {entry.member!r} is corrupt: {exc}") from None


# --------------------------------------------------------------------------- mirror


def find_in_mirror(entry: ClipEntry, mirror_dir: str | None, own_name: str | None = None) -> Path | None:
    """A mirror file that is verifiably this clip, or None to use the network.

    Without a manifest sha256 only `own_name` (default `{id}.mp4`; `{id}.wav` for a separate
    audio file) is trusted: a file merely sharing the URL's basename could be any clip.
    """
    own_name = own_name or f"{entry.id}.mp4"
    if not mirror_dir:
        return None
    mirror = Path(mirror_dir).resolve()  # relative paths are relative to the working directory
    if not mirror.is_dir():
        log.debug("%s: mirror %s does not exist", entry.id, mirror)
        return None
    for candidate in _mirror_candidates(entry, mirror, own_name):
        if not candidate.is_file():
            continue
        if entry.sha256 is None:
            if candidate.name == own_name:
                return candidate
            continue
        actual = sha256_file(candidate)
        if actual == entry.sha256:
            return candidate
        log.warning(
            "%s: mirror file %s has sha256 %s, expected %s; ignoring it", entry.id, candidate, actual, entry.sha256
        )
    return None


def _mirror_candidates(entry: ClipEntry, mirror: Path, own_name: str) -> list[Path]:
    names = [own_name]
    if entry.member:
        names.append(PurePosixPath(entry.member).name)
    elif not entry.url.startswith(YOUTUBE_PREFIX):
        names.append(_url_basename(entry.url))
    source_suffix = PurePosixPath(names[-1]).suffix
    if entry.sha256 and source_suffix:  # the mirror names a clip by its id, in the source's format (.mpg)
        names.append(PurePosixPath(own_name).stem + source_suffix)
    unique = [n for i, n in enumerate(names) if n and n not in names[:i] and n not in (".", "..")]
    return [mirror / name for name in unique]


def _url_basename(url: str) -> str:
    return PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name


# --------------------------------------------------------------------------- fetch by scheme


def fetch(entry: ClipEntry, settings: DownloadSettings, work: Path) -> Fetched:
    """Obtain the file the URL names (a clip or an archive); `work` is scratch space for this call."""
    url = entry.url
    if url.startswith(("http://", "https://")):
        return fetch_http(url, settings)
    if url.startswith("file:"):
        return Fetched(_file_url_path(url), SOURCE_FILE, attempts=0)
    if url.startswith(YOUTUBE_PREFIX):
        return fetch_youtube(entry, settings, work)
    raise ClipRejected(f"unsupported URL scheme: {url}")  # the manifest check should have caught it


def _file_url_path(url: str) -> Path:
    """`file:///abs/path`, `file:/abs/path` or `file:relative/path` (relative to the working directory)."""
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ClipRejected(f"file URL with a remote host is not supported: {url}")
    path = Path(urllib.request.url2pathname(parts.path))
    if not path.is_file():
        raise ClipRejected(f"file {path} does not exist (from {url})")
    return path


# --------------------------------------------------------------------------- http(s)


def fetch_http(url: str, settings: DownloadSettings) -> Fetched:
    """Fetch `url` into the cache once; later clips from the same URL (zip members) reuse it.

    A lock per cache entry makes parallel jobs for members of one archive wait for the first
    download instead of each fetching the whole archive.
    """
    cache_dir = Path(settings.cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / cache_name(url)
    with _cache_lock(target):
        if target.is_file():
            log.info("using cached %s for %s", target, url)
            return Fetched(target, SOURCE_HTTP, attempts=0, evict_on_reject=True)
        attempts = download_with_retries(url, target, settings)
    return Fetched(target, SOURCE_HTTP, attempts=attempts, evict_on_reject=True)


def cache_name(url: str) -> str:
    """URL hash (distinct URLs never collide) plus a readable, filesystem-safe basename."""
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:CACHE_KEY_CHARS]
    base = UNSAFE_NAME_CHARS.sub("_", _url_basename(url)).lstrip(".") or CACHE_NAME_FALLBACK
    return f"{key}-{base}"


@contextlib.contextmanager
def _cache_lock(target: Path) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover - platform dependent
        yield
        return
    lock_path = target.with_name(target.name + ".lock")
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def download_with_retries(url: str, target: Path, settings: DownloadSettings) -> int:
    """Download `url` to `target` atomically; return the number of attempts used.

    Connection errors, timeouts, truncated bodies, 5xx and 429 are retried up to
    `settings.retries` times, waiting `backoff_s * 2**(k-1)` before retry k; any other HTTP
    error is a property of the URL and is rejected at once.
    """
    max_attempts = settings.retries + 1
    for attempt in range(1, max_attempts + 1):
        try:
            with atomic_path(target) as tmp:
                _http_attempt(url, tmp, settings.timeout_s)
            if attempt > 1:
                log.info("fetched %s on attempt %d", url, attempt)
            return attempt
        except _NetworkError as exc:
            if not exc.retry:
                raise ClipRejected(str(exc)) from None
            if attempt == max_attempts:
                raise ClipRejected(f"network error after {attempt} attempts: {exc}") from None
            delay = settings.backoff_s * 2 ** (attempt - 1)
            log.warning("attempt %d/%d failed: %s; retrying in %.2f s", attempt, max_attempts, exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")


def _http_attempt(url: str, tmp: Path, timeout_s: float) -> None:
    """One GET into `tmp`; network-side failures become _NetworkError, local I/O errors propagate."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        retry = exc.code >= 500 or exc.code in RETRY_STATUS
        raise _NetworkError(f"HTTP {exc.code} {exc.reason} for {url}", retry=retry) from None
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
        raise _NetworkError(f"{_describe(exc)} for {url}", retry=True) from None
    with response, tmp.open("wb") as out:
        received = _copy_response(response, out, url)
    expected = response.headers.get("Content-Length")
    if expected is not None and expected.isdigit() and received != int(expected):
        raise _NetworkError(f"truncated body: got {received} of {expected} bytes for {url}", retry=True)


def _copy_response(response: http.client.HTTPResponse, out: IO[bytes], url: str) -> int:
    received = 0
    while True:
        try:
            chunk = response.read(CHUNK_BYTES)
        except (OSError, http.client.HTTPException) as exc:
            raise _NetworkError(f"{_describe(exc)} while reading {url}", retry=True) from None
        if not chunk:
            return received
        out.write(chunk)
        received += len(chunk)


def _describe(exc: BaseException) -> str:
    """One line naming the error: URLError wraps the interesting part in `.reason`."""
    reason = getattr(exc, "reason", None)
    inner = reason if isinstance(reason, BaseException) else exc
    text = str(inner).strip() or type(inner).__name__
    return f"{type(inner).__name__}: {text}".replace("\n", " ")


# --------------------------------------------------------------------------- youtube


def fetch_youtube(entry: ClipEntry, settings: DownloadSettings, work: Path) -> Fetched:
    """Run yt-dlp into `work`; with a span, only that section is downloaded (already cut)."""
    exe = shutil.which(YTDLP)
    if exe is None:
        raise SetupError(YTDLP_MISSING)
    video_id = entry.url[len(YOUTUBE_PREFIX):].strip()
    if not video_id:
        raise ClipRejected(f"youtube URL without a video id: {entry.url!r}")
    args = youtube_args(exe, video_id, entry, settings, work)
    log.info("%s: running yt-dlp for %s", entry.id, video_id)
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ClipRejected(f"yt-dlp failed for {entry.url} (exit {proc.returncode}): {_last_line(proc.stderr)}")
    produced = sorted(p for p in work.glob(f"{YTDLP_OUTPUT_STEM}.*") if p.is_file() and not p.name.endswith(".part"))
    if not produced:
        raise ClipRejected(f"yt-dlp wrote no file for {entry.url}: {_last_line(proc.stderr)}")
    return Fetched(produced[0], SOURCE_YOUTUBE, attempts=1)


def youtube_args(exe: str, video_id: str, entry: ClipEntry, settings: DownloadSettings, work: Path) -> list[str]:
    """yt-dlp command line: mp4 at most 720p, network settings from params, optional section."""
    args = [
        exe, "--quiet", "--no-warnings", "--no-playlist",
        "-f", YTDLP_FORMAT, "--merge-output-format", "mp4",
        "--socket-timeout", _seconds(settings.timeout_s), "--retries", str(settings.retries),
        "-o", str(work / f"{YTDLP_OUTPUT_STEM}.%(ext)s"),
    ]
    if entry.start_s is not None or entry.end_s is not None:
        start = _seconds(entry.start_s or 0.0)
        end = "inf" if entry.end_s is None else _seconds(entry.end_s)
        args += ["--download-sections", f"*{start}-{end}", "--force-keyframes-at-cuts"]
    args.append(YOUTUBE_WATCH_URL.format(video_id=urllib.parse.quote(video_id, safe="-_")))
    return args


def _seconds(value: float) -> str:
    """Plain decimal seconds (never exponent notation, which yt-dlp would not parse)."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"
