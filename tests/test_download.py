"""Download stage against a real local HTTP server, real zip files and real sample clips.

Nothing in the network stack is mocked: a ThreadingHTTPServer on 127.0.0.1 serves files from a
temporary directory and can be told to fail a path's first requests with 503 or to answer 404.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pytest
from helpers import tiny_params

from mssync.core.config import DownloadSettings
from mssync.core.errors import ClipRejected, MssyncError
from mssync.core.records import OK, REJECTED, read_record
from mssync.data.download import cache_name, download_clip
from mssync.data.manifest import ClipEntry

SHARED = Path(__file__).resolve().parents[2] / "shared"
CLIPS_DIR = SHARED / "data" / "clips"
CLIPS_CSV = SHARED / "data" / "clips.csv"
SAMPLE_ID = "vox2-00010"  # ~126 KB
OTHER_ID = "vox2-00086"  # ~164 KB

pytestmark = pytest.mark.skipif(not CLIPS_DIR.is_dir(), reason=f"sample clips not found at {CLIPS_DIR}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shared_hash(clip_id: str) -> str:
    with CLIPS_CSV.open(newline="", encoding="utf-8") as fh:
        return next(row["sha256"] for row in csv.DictReader(fh) if row["id"] == clip_id)


@pytest.fixture(scope="module")
def clip_bytes() -> bytes:
    return (CLIPS_DIR / f"{SAMPLE_ID}.mp4").read_bytes()


@pytest.fixture(scope="module")
def other_bytes() -> bytes:
    return (CLIPS_DIR / f"{OTHER_ID}.mp4").read_bytes()


# --------------------------------------------------------------------------- the local server


class FileServer:
    """Serves files from `root`; per path: fail the first N requests with 503, or always 404."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fail_first: dict[str, int] = {}
        self.not_found: set[str] = set()
        self.hits: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, name: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def put(self, name: str, data: bytes) -> str:
        (self.root / name).write_bytes(data)
        return self.url(name)

    def _count(self, name: str) -> int:
        with self._lock:
            self.hits[name] += 1
            return self.hits[name]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                name = urlsplit(self.path).path.lstrip("/")
                hit = server._count(name)
                path = server.root / name
                if name in server.not_found or not path.is_file():
                    self.send_error(404)
                elif hit <= server.fail_first.get(name, 0):
                    self.send_error(503)
                else:
                    body = path.read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # keep pytest output quiet
                pass

        return Handler


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # a proxy in the environment must not intercept
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "www"
    root.mkdir()
    srv = FileServer(root)
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(timeout=5)


@pytest.fixture
def settings(tmp_path: Path) -> DownloadSettings:
    return DownloadSettings(mirror_dir=None, cache_dir=str(tmp_path / "cache"), retries=3, backoff_s=0.01, timeout_s=5)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "raw"
    path.mkdir(parents=True)
    return path


def closed_port_url(name: str) -> str:
    """A URL nobody listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def make_zip(path: Path, members: dict[str, bytes]) -> bytes:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path.read_bytes()


def run(entry: ClipEntry, settings: DownloadSettings, out: Path, strict: bool = False) -> tuple[dict, Path, Path]:
    dest, record_path = out / f"{entry.id}.mp4", out / f"{entry.id}.json"
    record = download_clip(entry=entry, settings=settings, dest=dest, record_path=record_path, strict=strict)
    assert read_record(record_path) == json.loads(json.dumps(record))  # what is returned is what is on disk
    return record, dest, record_path


def assert_rejected(record: dict, dest: Path, *needles: str) -> None:
    assert record["status"] == REJECTED, record
    assert record["stage"] == "download"
    assert "\n" not in record["reason"]
    for needle in needles:
        assert needle in record["reason"], record["reason"]
    assert not dest.exists()
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")], "temporary files left behind"


# --------------------------------------------------------------------------- http(s)


def test_http_fetch_is_verified_and_recorded(server, settings, out, clip_bytes):
    url = server.put("clip.mp4", clip_bytes)
    entry = ClipEntry("c1", url, "spk1", sha256=sha256(clip_bytes))

    record, dest, _ = run(entry, settings, out)

    assert dest.read_bytes() == clip_bytes
    assert record == {
        "clip_id": "c1", "stage": "download", "status": OK,
        "speaker": "spk1", "file": "c1.mp4", "source": "http", "url": url, "member": None,
        "sha256": sha256(clip_bytes), "verified": True, "bytes": len(clip_bytes), "attempts": 1, "trim": None,
    }
    assert server.hits["clip.mp4"] == 1
    assert (Path(settings.cache_dir) / cache_name(url)).read_bytes() == clip_bytes


def test_without_manifest_hash_the_clip_is_kept_unverified(server, settings, out, clip_bytes):
    url = server.put("clip.mp4", clip_bytes)
    record, dest, _ = run(ClipEntry("c1", url, "spk1"), settings, out)
    assert record["status"] == OK
    assert record["verified"] is False
    assert record["sha256"] == sha256(dest.read_bytes()) == sha256(clip_bytes)


def test_transient_503_is_retried(server, settings, out, clip_bytes):
    url = server.put("flaky.mp4", clip_bytes)
    server.fail_first["flaky.mp4"] = 2

    record, dest, _ = run(ClipEntry("c1", url, "spk1", sha256=sha256(clip_bytes)), settings, out)

    assert record["status"] == OK
    assert record["attempts"] == 3
    assert server.hits["flaky.mp4"] == 3
    assert dest.read_bytes() == clip_bytes


def test_persistent_503_gives_up_after_the_retries(server, settings, out, clip_bytes):
    url = server.put("down.mp4", clip_bytes)
    server.fail_first["down.mp4"] = 100

    record, dest, _ = run(ClipEntry("c1", url, "spk1", sha256=sha256(clip_bytes)), settings, out)

    assert_rejected(record, dest, "503", "after 4 attempts", url)
    assert server.hits["down.mp4"] == settings.retries + 1
    assert record["url"] == url and record["speaker"] == "spk1" and record["member"] is None


def test_connection_refused_is_retried_then_rejected(settings, out):
    url = closed_port_url("clip.mp4")
    record, dest, _ = run(ClipEntry("c1", url, "spk1"), settings, out)
    assert_rejected(record, dest, "network error after 4 attempts", "refused")


def test_404_is_rejected_without_retrying(server, settings, out):
    url = server.url("gone.mp4")

    record, dest, _ = run(ClipEntry("c1", url, "spk1"), settings, out)

    assert_rejected(record, dest, "HTTP 404", url)
    assert server.hits["gone.mp4"] == 1


def test_hash_mismatch_is_rejected_and_keeps_an_earlier_good_file(server, settings, out, clip_bytes):
    url = server.put("changed.mp4", b"not the clip the manifest describes")
    entry = ClipEntry("c1", url, "spk1", sha256=sha256(clip_bytes))

    record, dest, _ = run(entry, settings, out)
    assert_rejected(record, dest, "sha256 mismatch", sha256(clip_bytes))
    assert not (Path(settings.cache_dir) / cache_name(url)).exists(), "a bad download must not stay cached"

    dest.write_bytes(clip_bytes)  # a verified file from an earlier run
    record, dest, _ = run(entry, settings, out)
    assert record["status"] == REJECTED
    assert dest.read_bytes() == clip_bytes
    assert server.hits["changed.mp4"] == 2


# --------------------------------------------------------------------------- zip members


def test_zip_members_share_one_archive_download(server, settings, out, tmp_path, clip_bytes, other_bytes):
    archive = make_zip(tmp_path / "a.zip", {"Input/00010.mp4": clip_bytes, "Input/00086.mp4": other_bytes})
    url = server.put("Input.zip", archive)
    first = ClipEntry(SAMPLE_ID, url, "spk1", sha256=shared_hash(SAMPLE_ID), member="Input/00010.mp4")
    second = ClipEntry(OTHER_ID, url, "spk2", sha256=shared_hash(OTHER_ID), member="Input/00086.mp4")

    rec1, dest1, _ = run(first, settings, out)
    rec2, dest2, _ = run(second, settings, out)

    assert server.hits["Input.zip"] == 1
    assert dest1.read_bytes() == clip_bytes and dest2.read_bytes() == other_bytes
    assert (rec1["status"], rec1["source"], rec1["attempts"], rec1["verified"]) == (OK, "http", 1, True)
    assert (rec2["status"], rec2["source"], rec2["attempts"], rec2["verified"]) == (OK, "http", 0, True)
    assert rec1["member"] == "Input/00010.mp4"
    assert rec1["sha256"] == shared_hash(SAMPLE_ID)


def test_missing_member_is_rejected(server, settings, out, tmp_path, clip_bytes):
    url = server.put("a.zip", make_zip(tmp_path / "a.zip", {"Input/00010.mp4": clip_bytes}))

    record, dest, _ = run(ClipEntry("c1", url, "spk1", member="Input/nope.mp4"), settings, out)

    assert_rejected(record, dest, f"archive {url} has no member 'Input/nope.mp4'")
    assert (Path(settings.cache_dir) / cache_name(url)).exists(), "the archive is fine; other members reuse it"


def test_not_a_zip_is_rejected(server, settings, out, clip_bytes):
    url = server.put("fake.zip", clip_bytes)

    record, dest, _ = run(ClipEntry("c1", url, "spk1", member="Input/00010.mp4"), settings, out)

    assert_rejected(record, dest, "not a zip archive", url)


# --------------------------------------------------------------------------- mirror


def test_mirror_with_matching_hash_needs_no_network(settings, out, tmp_path, monkeypatch, clip_bytes):
    monkeypatch.chdir(tmp_path)  # the mirror path is relative to the working directory
    mirror = os.path.relpath(CLIPS_DIR, tmp_path)
    url = closed_port_url("Input.zip")
    entry = ClipEntry(SAMPLE_ID, url, "spk1", sha256=shared_hash(SAMPLE_ID), member="Input/00010.mp4")

    record, dest, _ = run(entry, DownloadSettings(**{**vars(settings), "mirror_dir": mirror}), out)

    assert (record["status"], record["source"], record["attempts"], record["verified"]) == (OK, "mirror", 0, True)
    assert dest.read_bytes() == clip_bytes
    assert not Path(settings.cache_dir).exists()


def test_mirror_file_with_wrong_hash_falls_back_to_the_network(server, settings, out, tmp_path, clip_bytes):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "c1.mp4").write_bytes(b"stale copy")
    (mirror / "clip.mp4").write_bytes(b"another stale copy")
    url = server.put("clip.mp4", clip_bytes)
    entry = ClipEntry("c1", url, "spk1", sha256=sha256(clip_bytes))

    record, dest, _ = run(entry, DownloadSettings(**{**vars(settings), "mirror_dir": str(mirror)}), out)

    assert (record["status"], record["source"], record["attempts"]) == (OK, "http", 1)
    assert dest.read_bytes() == clip_bytes


def test_mirror_without_manifest_hash_trusts_only_the_id_name(settings, out, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "clip.mp4").write_bytes(b"same basename as the URL, but could be anything")
    url = closed_port_url("clip.mp4")
    mirrored = DownloadSettings(**{**vars(settings), "mirror_dir": str(mirror), "retries": 0})

    record, dest, _ = run(ClipEntry("c1", url, "spk1"), mirrored, out)
    assert_rejected(record, dest, "network error after 1 attempts")

    (mirror / "c1.mp4").write_bytes(b"named after the clip")
    record, dest, _ = run(ClipEntry("c1", url, "spk1"), mirrored, out)
    assert (record["status"], record["source"], record["verified"]) == (OK, "mirror", False)
    assert dest.read_bytes() == b"named after the clip"


# --------------------------------------------------------------------------- file:


def test_file_urls_absolute_and_relative(settings, out, tmp_path, monkeypatch, clip_bytes):
    src = tmp_path / "local" / "talk.mp4"
    src.parent.mkdir()
    src.write_bytes(clip_bytes)
    monkeypatch.chdir(tmp_path)

    absolute = ClipEntry("abs", src.as_uri(), "spk1", sha256=sha256(clip_bytes), start_s=0.5, end_s=2.0)
    record, dest, _ = run(absolute, settings, out)
    assert (record["status"], record["source"], record["attempts"], record["verified"]) == (OK, "file", 0, True)
    assert record["trim"] == {"start_s": 0.5, "end_s": 2.0}  # applied later by the crop stage
    assert dest.read_bytes() == clip_bytes

    record, dest, _ = run(ClipEntry("rel", "file:local/talk.mp4", "spk1"), settings, out)
    assert (record["status"], record["source"], record["trim"]) == (OK, "file", None)
    assert dest.read_bytes() == clip_bytes


def test_file_url_to_a_missing_file_is_rejected(settings, out, tmp_path):
    missing = tmp_path / "nowhere.mp4"
    record, dest, _ = run(ClipEntry("c1", missing.as_uri(), "spk1"), settings, out)
    assert_rejected(record, dest, "does not exist", str(missing))


def test_file_url_zip_member(settings, out, tmp_path, clip_bytes):
    archive = tmp_path / "local.zip"
    make_zip(archive, {"Input/00010.mp4": clip_bytes})
    entry = ClipEntry(SAMPLE_ID, archive.as_uri(), "spk1", sha256=shared_hash(SAMPLE_ID), member="Input/00010.mp4")
    record, dest, _ = run(entry, settings, out)
    assert (record["status"], record["source"]) == (OK, "file")
    assert dest.read_bytes() == clip_bytes


# --------------------------------------------------------------------------- separate audio (audio_url)

AUDIO_ID = "styletalk-kristinoem"  # 256x256 30 fps video without an audio track + its 16 kHz wav (~580 KB)


def shared_row(clip_id: str) -> dict[str, str]:
    with CLIPS_CSV.open(newline="", encoding="utf-8") as fh:
        return next(row for row in csv.DictReader(fh) if row["id"] == clip_id)


@pytest.fixture(scope="module")
def audio_bytes() -> bytes:
    return (CLIPS_DIR / f"{AUDIO_ID}.wav").read_bytes()


def audio_entry(url: str, audio_url: str, clip_id: str = AUDIO_ID, **overrides: object) -> ClipEntry:
    """The sample row with a separate audio file, its hashes from clips.csv unless overridden."""
    row = shared_row(AUDIO_ID)
    fields = {"sha256": row["sha256"], "audio_url": audio_url, "audio_sha256": row["audio_sha256"], **overrides}
    return ClipEntry(clip_id, url, "kristi-noem", **fields)  # type: ignore[arg-type]


def assert_audio_rejected(record: dict, dest: Path, *needles: str) -> None:
    """Rejected because of the audio file: neither file is installed, the reason says `audio_url:`."""
    assert_rejected(record, dest, "audio_url: ", *needles)
    assert record["audio_url"] and record["url"]
    assert not list(dest.parent.glob(f"{dest.stem}.audio*")), "no audio file may be installed"


def test_separate_audio_from_file_urls_is_verified_and_recorded(settings, out, audio_bytes):
    video = CLIPS_DIR / f"{AUDIO_ID}.mp4"
    wav = CLIPS_DIR / f"{AUDIO_ID}.wav"
    entry = audio_entry(video.as_uri(), wav.as_uri(), start_s=1.0, end_s=4.0)

    record, dest, _ = run(entry, settings, out)

    assert (record["status"], record["source"], record["file"]) == (OK, "file", f"{AUDIO_ID}.mp4")
    assert dest.read_bytes() == video.read_bytes()
    assert record["trim"] == {"start_s": 1.0, "end_s": 4.0}  # the crop stage cuts video and audio alike
    assert record["audio"] == {
        "file": f"{AUDIO_ID}.audio.wav", "source": "file", "url": wav.as_uri(),
        "sha256": shared_row(AUDIO_ID)["audio_sha256"], "verified": True, "bytes": len(audio_bytes), "attempts": 0,
    }
    assert (out / record["audio"]["file"]).read_bytes() == audio_bytes


def test_separate_audio_comes_from_the_mirror_by_hash(settings, out, tmp_path, monkeypatch, audio_bytes):
    """The published URLs are unreachable here; both files are found in ../shared/data/clips by their hash."""
    row = shared_row(AUDIO_ID)
    base = f"https://raw.githubusercontent.com/{row['source_repo']}/{row['source_commit']}/"
    assert row["audio_file"] == f"clips/{AUDIO_ID}.wav"  # the mirror's name, not the URL's basename
    monkeypatch.chdir(tmp_path)
    mirrored = DownloadSettings(**{**vars(settings), "mirror_dir": os.path.relpath(CLIPS_DIR, tmp_path)})

    record, dest, _ = run(audio_entry(base + row["source_path"], base + row["audio_source_path"]), mirrored, out)

    assert (record["status"], record["source"], record["verified"]) == (OK, "mirror", True)
    assert (record["audio"]["source"], record["audio"]["attempts"], record["audio"]["verified"]) == ("mirror", 0, True)
    assert record["audio"]["url"] == base + "samples/source_video/wav/KristiNoem.wav"
    assert (out / f"{AUDIO_ID}.audio.wav").read_bytes() == audio_bytes
    assert not Path(settings.cache_dir).exists(), "nothing was fetched"


def test_mirror_without_audio_hash_trusts_only_the_id_name(settings, out, tmp_path, clip_bytes):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "c1.mp4").write_bytes(clip_bytes)
    (mirror / "speech.wav").write_bytes(b"same basename as the audio URL, but could be anything")
    mirrored = DownloadSettings(**{**vars(settings), "mirror_dir": str(mirror), "retries": 0})
    entry = ClipEntry("c1", closed_port_url("c1.mp4"), "spk1", audio_url=closed_port_url("speech.wav"))

    record, dest, _ = run(entry, mirrored, out)
    assert_audio_rejected(record, dest, "network error after 1 attempts")

    (mirror / "c1.wav").write_bytes(b"named after the clip")
    record, dest, _ = run(entry, mirrored, out)
    assert (record["status"], record["audio"]["source"], record["audio"]["verified"]) == (OK, "mirror", False)
    assert (out / "c1.audio.wav").read_bytes() == b"named after the clip"


def test_separate_audio_over_http_is_retried_and_verified(server, settings, out, clip_bytes, audio_bytes):
    url, audio_url = server.put("talk.mp4", clip_bytes), server.put("talk.WAV", audio_bytes)
    server.fail_first["talk.WAV"] = 1
    entry = ClipEntry("c1", url, "spk1", sha256=sha256(clip_bytes), audio_url=audio_url,
                      audio_sha256=sha256(audio_bytes))

    record, dest, _ = run(entry, settings, out)

    assert (record["status"], record["source"], record["attempts"]) == (OK, "http", 1)
    audio = record["audio"]
    assert (audio["file"], audio["source"], audio["attempts"], audio["bytes"]) == ("c1.audio.wav", "http", 2, len(audio_bytes))
    assert (out / "c1.audio.wav").read_bytes() == audio_bytes and dest.read_bytes() == clip_bytes


def test_missing_audio_file_is_rejected(settings, out, tmp_path):
    """A file: URL to nothing is the local 404: the clip is rejected, and its video not installed either."""
    missing = tmp_path / "nowhere.wav"
    entry = audio_entry((CLIPS_DIR / f"{AUDIO_ID}.mp4").as_uri(), missing.as_uri())

    record, dest, _ = run(entry, settings, out)

    assert_audio_rejected(record, dest, "does not exist", str(missing))
    assert record["audio_url"] == missing.as_uri()


def test_audio_404_is_rejected_without_retrying(server, settings, out, clip_bytes):
    entry = ClipEntry("c1", server.put("c1.mp4", clip_bytes), "spk1", audio_url=server.url("gone.wav"))
    record, dest, _ = run(entry, settings, out)
    assert_audio_rejected(record, dest, "HTTP 404", server.url("gone.wav"))
    assert server.hits["gone.wav"] == 1


def test_audio_hash_mismatch_is_rejected_and_keeps_earlier_good_files(server, settings, out, clip_bytes, audio_bytes):
    audio_url = server.put("speech.wav", b"not the speech the manifest describes")
    entry = ClipEntry("c1", server.put("c1.mp4", clip_bytes), "spk1", audio_url=audio_url,
                      audio_sha256=sha256(audio_bytes))

    record, dest, _ = run(entry, settings, out)
    assert_audio_rejected(record, dest, "sha256 mismatch", f"expected {sha256(audio_bytes)}")
    assert not (Path(settings.cache_dir) / cache_name(audio_url)).exists(), "a bad download must not stay cached"

    dest.write_bytes(clip_bytes)  # verified files from an earlier run stay as they are
    (out / "c1.audio.wav").write_bytes(audio_bytes)
    record, _, _ = run(entry, settings, out)
    assert record["status"] == REJECTED and "audio_url: sha256 mismatch" in record["reason"]
    assert dest.read_bytes() == clip_bytes and (out / "c1.audio.wav").read_bytes() == audio_bytes


def test_strict_raises_for_a_bad_audio_file(settings, out, tmp_path, clip_bytes):
    video = tmp_path / "c1.mp4"
    video.write_bytes(clip_bytes)
    entry = ClipEntry("c1", video.as_uri(), "spk1", audio_url=(tmp_path / "nowhere.wav").as_uri())

    with pytest.raises(ClipRejected, match="audio_url: file .* does not exist"):
        download_clip(entry=entry, settings=settings, dest=out / "c1.mp4", record_path=out / "c1.json", strict=True)

    record = read_record(out / "c1.json")
    assert record["status"] == REJECTED and record["reason"].startswith("audio_url: ")
    assert not (out / "c1.mp4").exists()


# --------------------------------------------------------------------------- youtube:

FAKE_YTDLP = """#!{python}
# Stand-in for yt-dlp: records its argv, then "downloads" the first 2 s of a real clip.
import json, subprocess, sys
args = sys.argv[1:]
with open({log!r}, "w") as fh:
    json.dump(args, fh)
if {fail!r}:
    sys.stderr.write("[youtube] abc: Downloading webpage\\nERROR: [youtube] abc: Video unavailable\\n")
    sys.exit(1)
template = args[args.index("-o") + 1]
assert "--download-sections" in args
subprocess.run([{ffmpeg!r}, "-v", "error", "-y", "-ss", "0", "-t", "2", "-i", {src!r}, "-c", "copy",
                template.replace("%(ext)s", "mp4")], check=True)
"""


def install_fake_ytdlp(bin_dir: Path, log: Path, fail: bool = False) -> None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is needed to make the stand-in yt-dlp's clip")
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "yt-dlp"
    script.write_text(FAKE_YTDLP.format(python=sys.executable, log=str(log), fail=fail, ffmpeg=ffmpeg,
                                        src=str(CLIPS_DIR / f"{SAMPLE_ID}.mp4")))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_youtube_section_is_cut_by_ytdlp(settings, out, tmp_path, monkeypatch):
    install_fake_ytdlp(tmp_path / "bin", tmp_path / "argv.json")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    entry = ClipEntry("yt1", "youtube:abc123XYZ_-", "spk1", start_s=1.0, end_s=3.5)

    record, dest, _ = run(entry, settings, out)

    assert (record["status"], record["source"], record["trim"]) == (OK, "youtube", None)
    assert record["sha256"] == sha256(dest.read_bytes()) and record["bytes"] == dest.stat().st_size > 0
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[argv.index("--download-sections") + 1] == "*1-3.5"
    assert "--force-keyframes-at-cuts" in argv
    assert argv[-1] == "https://www.youtube.com/watch?v=abc123XYZ_-"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "yt-dlp's scratch directory was left behind"


def test_youtube_failure_is_a_rejection_with_the_last_stderr_line(settings, out, tmp_path, monkeypatch):
    install_fake_ytdlp(tmp_path / "bin", tmp_path / "argv.json", fail=True)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")

    record, dest, _ = run(ClipEntry("yt1", "youtube:abc", "spk1"), settings, out)

    assert_rejected(record, dest, "yt-dlp failed", "exit 1", "ERROR: [youtube] abc: Video unavailable")


def test_youtube_without_ytdlp_is_a_setup_error(settings, out, tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    with pytest.raises(MssyncError, match="yt-dlp is not installed") as info:
        run(ClipEntry("yt1", "youtube:abc", "spk1"), settings, out)

    assert not isinstance(info.value, ClipRejected)
    assert not (out / "yt1.json").exists(), "a setup error is not a property of the clip: no record"


# --------------------------------------------------------------------------- strict + CLI


def test_strict_raises_after_writing_the_record(server, settings, out):
    entry = ClipEntry("c1", server.url("gone.mp4"), "spk1")

    with pytest.raises(ClipRejected, match="HTTP 404"):
        download_clip(entry=entry, settings=settings, dest=out / "c1.mp4", record_path=out / "c1.json", strict=True)

    record = read_record(out / "c1.json")
    assert record["status"] == REJECTED and "HTTP 404" in record["reason"]
    assert not (out / "c1.mp4").exists()


def mssync_command() -> list[str]:
    """The console script installed beside this interpreter (fallback: the module)."""
    script = Path(sys.executable).with_name("mssync")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mssync"]


def test_cli_clips_downloads_then_crops_a_shard_end_to_end(server, settings, tmp_path, clip_bytes):
    """`mssync clips` (the data phase's shard job) over http: the download record and the crop."""
    url = server.put("Input.zip", make_zip(tmp_path / "a.zip", {"Input/00010.mp4": clip_bytes}))
    manifest = tmp_path / "samples.csv"
    manifest.write_text(
        "id,url,sha256,speaker,member,start_s,end_s,split\n"
        f"{SAMPLE_ID},{url},{shared_hash(SAMPLE_ID)},spk1,Input/00010.mp4,,,\n",
        encoding="utf-8",
    )
    params = tiny_params()
    proc = subprocess.run(
        [*mssync_command(), "clips", "--manifest", str(manifest), "--shard", "000of001",
         "--record", "data/clips/shards/000of001.json", "--strict",
         "--shards-settings", json.dumps(params["shards"]), "--download-settings", json.dumps(vars(settings)),
         "--crop-settings", json.dumps(params["crop"]), "--landmarker-settings", json.dumps(params["landmarker"])],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"},
    )

    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / f"data/raw/{SAMPLE_ID}.mp4").read_bytes() == clip_bytes
    record = read_record(tmp_path / f"data/raw/{SAMPLE_ID}.json")
    assert (record["status"], record["source"], record["verified"]) == (OK, "http", True)
    assert read_record(tmp_path / f"data/clips/{SAMPLE_ID}.json")["status"] == OK
    shard = read_record(tmp_path / "data/clips/shards/000of001.json")
    assert [c["clip_id"] for c in shard["clips"]] == [SAMPLE_ID] and set(shard["clips"][0]["seconds"]) == {"download", "crop"}
    assert server.hits["Input.zip"] == 1
