"""One run at a time per output: an exclusive lock file beside it.

``OUTPUT.convpipe-lock`` is held with ``flock`` for the whole run, so the
kernel releases it when the process ends in any way (a SIGKILL included): a
lock left by a dead run is simply free, and the next run takes it over. The
file says who holds it (host, pid, start time), so that a refused run can
name the other one. It covers the output and its staging copy
(``OUTPUT.convpipe-incoming``), which only a lock holder creates, swaps or
removes.

Object stores (``s3://...``) have no lock that two machines can share
atomically: there, runs are not locked, and two concurrent runs on one output
must be avoided by the user (README, "Guarantees").
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
from collections.abc import Iterator

from convpipe.errors import OutputError
from convpipe.paths import local_path

LOCK_SUFFIX = ".convpipe-lock"

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None


def lock_path(output: str) -> str | None:
    """The lock file of ``output``, or None where no lock is possible (URLs)."""
    local = local_path(output)
    return None if local is None else str(local.with_name(local.name + LOCK_SUFFIX))


@contextlib.contextmanager
def output_lock(output: str) -> Iterator[None]:
    """Hold the lock of ``output`` for the duration, or raise ``OutputError`` naming its holder."""
    path = lock_path(output)
    if path is None or fcntl is None:
        yield
        return
    fd = _acquire(path, output)
    try:
        os.ftruncate(fd, 0)
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        os.write(fd, f"host {socket.gethostname()}, pid {os.getpid()}, started {started}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # before the unlock: a run that opens it now finds it replaced (see _acquire)
        os.close(fd)


def _acquire(path: str, output: str) -> int:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)  # the output's folder, which the run creates anyway
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 1000).decode(errors="replace").strip() or "holder unknown"
            os.close(fd)
            raise OutputError(
                f"{output}: another convpipe run is using this output ({holder}); "
                "wait for it to finish, or stop it first"
            ) from None
        try:
            same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            return fd
        os.close(fd)  # its holder removed it between our open and our lock: try the new one
