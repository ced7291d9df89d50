"""One run at a time per output folder: an OS lock on `OUTPUT/run.lock` (`filelock.FileLock`).

The operating system releases the lock when its process ends, however it ends, so a run killed
outright leaves no stale lock to detect or take over: the file may stay, unlocked.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

LOCK_FILE = "run.lock"


class OutputDirInUseError(RuntimeError):
    """Another run holds the output folder's lock."""


@contextmanager
def output_dir_lock(output_dir: str | Path) -> Iterator[Path]:
    """Holds `output_dir/run.lock` inside the block.

    Raises:
        OutputDirInUseError: another live run holds it; the message names the lock file.
    """
    lock = Path(output_dir) / LOCK_FILE
    lock.parent.mkdir(parents=True, exist_ok=True)
    file_lock = FileLock(lock)
    try:
        file_lock.acquire(timeout=0)
    except Timeout:
        raise OutputDirInUseError(f"output_dir {lock.parent} is in use: another run holds {lock}; wait for it to end "
                                  "or choose another output_dir") from None
    try:
        yield lock
    finally:
        file_lock.release()
