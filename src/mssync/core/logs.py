"""Logging for `mssync <command>`: mssync's own messages, and third-party libraries kept quiet.

`-v` is for debugging mssync: it shows mssync's DEBUG lines (stage timings among them), not the
hundreds of lines numba's compiler logs at DEBUG whenever librosa compiles a function. So the root
logger, which every library's logger falls back to, stays at WARNING, and only the `mssync` logger
is lowered to INFO (default) or DEBUG (-v).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import IO, Iterator

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that log a lot at INFO/DEBUG; held at WARNING even if one of them sets its own level.
QUIET_LIBRARIES = ("numba", "matplotlib", "PIL", "urllib3", "absl", "h5py", "fsspec", "filelock", "asyncio",
                   "snakemake", "torch", "jax")
_HANDLER_FLAG = "_mssync_handler"


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (as logging's last-resort handler does),
    so a command run in-process (tests) never writes to a stream that was swapped out since."""

    @property
    def stream(self) -> IO[str]:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


def configure_logging(verbose: bool, stream: IO[str] | None = None) -> logging.Handler:
    """Send log records to `stream` (stderr): mssync's at DEBUG when `verbose`, else INFO; every
    other library's at WARNING. Calling it again replaces the handler it added before."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_FLAG, False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream) if stream is not None else _CurrentStderr()
    handler.setFormatter(logging.Formatter(FORMAT))
    setattr(handler, _HANDLER_FLAG, True)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("mssync").setLevel(logging.DEBUG if verbose else logging.INFO)
    return handler


@contextlib.contextmanager
def timed(log: logging.Logger, what: str) -> Iterator[None]:
    """Log at DEBUG how long the block took ("loading the generator: 1.42 s"), so `-v` shows where a
    command spends its time."""
    start = time.perf_counter()
    yield
    log.debug("%s: %.2f s", what, time.perf_counter() - start)
