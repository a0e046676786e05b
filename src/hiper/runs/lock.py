"""One writer per run folder: an advisory ``flock`` on ``<run_dir>/.lock``.

The kernel drops the lock when its holder exits, however it exits (SIGKILL included), so a lock
left by a crashed run is never stale: the next run simply takes it. The file holds the holder's
pid, host and start time, so a refused run can name who holds the folder. (``flock`` is local to
one machine; run folders shared over NFS between hosts are not protected.)
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

__all__ = ["LOCK_FILE", "RunLock", "RunLockedError"]

LOCK_FILE = ".lock"


class RunLockedError(FileExistsError):
    """Another process holds the run folder."""


class RunLock:
    """``with RunLock(run_dir):`` — hold ``run_dir`` for this process, or raise
    :class:`RunLockedError` naming the holder. ``acquire``/``release`` for longer-lived holders."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.read(fd, 4096))
            os.close(fd)
            raise RunLockedError(
                f"run directory {str(self.path.parent)!r} is in use by another hiper process "
                f"({holder}); wait for it to finish, stop it, or choose another run_dir"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"pid {int(info['pid'])} on {info['host']}, since {since}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
