"""One writer per workdir: an exclusive lock on ``workdir/.lock`` held for the whole run.

The lock is ``fcntl.flock`` on that file, so the kernel releases it when its holder exits in
any way, ``kill -9`` included: a lock left by a dead process is simply taken over, no stale-pid
guessing. The file records the holder (pid, host, start time) for the message a second writer
gets. ``jaxcnn eval`` takes no lock (it only reads).

Network file systems: on Linux NFS (v3 with lockd, v4) ``flock`` is emulated with POSIX
byte-range locks and works between clients; on file systems without lock support the lock
fails to be taken and the run refuses to start rather than run unprotected. A crashed NFS
client's lock is released when the server notices (its lease time, typically 90 s).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from typing import Any

LOCK_FILE = ".lock"


class WorkdirLockedError(RuntimeError):
    """Another process is writing into the workdir; the message names it (pid, host)."""


class WorkdirLock:
    """Context manager: holds ``workdir/.lock`` exclusively (creates ``workdir`` if missing).

    Raises :class:`WorkdirLockedError` at once when another live process holds it. On exit,
    a workdir this lock created and that still holds nothing but the lock file (a run that
    failed during start-up) is removed again.
    """

    def __init__(self, workdir: str | os.PathLike):
        self.workdir = os.path.abspath(os.fspath(workdir))
        self.path = os.path.join(self.workdir, LOCK_FILE)
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> "WorkdirLock":
        if os.path.exists(self.workdir) and not os.path.isdir(self.workdir):
            raise NotADirectoryError(errno.ENOTDIR, f"the workdir {self.workdir} is a file, not a folder")
        self._created = not os.path.exists(self.workdir)
        os.makedirs(self.workdir, exist_ok=True)
        # Held through a read-only descriptor: a file open for writing would keep the file system
        # from being remounted read-only, and flock needs no write access.
        fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OSError(err.errno, f"cannot lock the workdir {self.workdir} ({self.path}): {err.strerror}; "
                              f"its file system may not support locks") from err
            raise WorkdirLockedError(
                f"the workdir {self.workdir} is in use by {describe_holder(read_holder(self.path))}; "
                f"one run writes a workdir at a time. Wait for it to finish (or stop it), or use another "
                f"--workdir. `jaxcnn eval` may read it meanwhile."
            ) from None
        self._fd = fd
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            with open(self.path, "w") as f:
                f.write(json.dumps(record) + "\n")
        except OSError:
            pass  # a read-only workdir: the run reports it at its first write, naming what it could not write
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is None:
            return
        try:
            if self._created and os.listdir(self.workdir) == [LOCK_FILE]:
                # Nothing was written: leave no empty workdir behind a failed start.
                os.unlink(self.path)
                os.rmdir(self.workdir)
        except OSError:
            pass
        finally:
            os.close(self._fd)  # releases the lock
            self._fd = None


def read_holder(path: str) -> dict[str, Any]:
    """The ``{"pid", "host", "since"}`` a lock file records (``{}`` when unreadable)."""
    try:
        with open(path) as f:
            holder = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process (its lock file names none yet)"
    return f"process {holder.get('pid')} on host {holder.get('host')} (since {holder.get('since')})"
