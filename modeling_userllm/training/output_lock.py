"""One run at a time per output folder: `OUTPUT/run.lock`, holding the host and process id of its run.

The lock goes when its run ends, whether it finishes or raises. A run killed outright leaves it:
a later run on the same host sees that process dead and takes the lock over with a warning. A
lock from another host, or whose process id now belongs to another live process, reads as held;
the message names the file to delete then.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_FILE = "run.lock"


class OutputDirInUseError(RuntimeError):
    """Another run holds the output folder's lock."""


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _read_holder(lock: Path) -> dict | None:
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


@contextmanager
def output_dir_lock(output_dir: str | Path) -> Iterator[Path]:
    """Holds `output_dir/run.lock` inside the block. The lock is written to a temporary file and
    linked to its name, which fails when the name exists: two runs cannot both take it.

    Raises:
        OutputDirInUseError: a live process (or one on another host, or an unreadable lock)
            holds the lock; the message names the holder and the lock file.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    lock = output_dir / LOCK_FILE
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    candidate = output_dir / f".{LOCK_FILE}.{me['pid']}"
    candidate.write_text(json.dumps(me), encoding="utf-8")
    try:
        while True:
            try:
                os.link(candidate, lock)
                break
            except FileExistsError:
                holder = _read_holder(lock)
            if holder is None:
                continue  # released meanwhile
            pid, host = holder.get("pid"), holder.get("host")
            if host == me["host"] and isinstance(pid, int) and not _process_is_alive(pid):
                logger.warning("Taking over the stale lock %s of process %d, which is no longer running", lock, pid)
                lock.unlink(missing_ok=True)
                continue
            held_by = f"process {pid} on {host}" if pid is not None else "an unreadable lock"
            raise OutputDirInUseError(
                f"output_dir {output_dir} is in use by another run ({held_by}, lock file {lock}): wait for it to end or "
                f"choose another output_dir; if no run uses the folder any more, delete {lock}")
    finally:
        candidate.unlink(missing_ok=True)
    try:
        yield lock
    finally:
        if _read_holder(lock) == me:
            lock.unlink(missing_ok=True)
