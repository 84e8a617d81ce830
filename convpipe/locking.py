"""One run at a time per output: an exclusive lock beside it, ``OUTPUT.convpipe-lock``.

It covers the output and its staging copy (``OUTPUT.convpipe-incoming``),
which only a lock holder creates, swaps or removes, and says who holds it
(host, pid, start time), so that a refused run can name the other one.
On a local disk it is a file held with ``flock``, which the kernel releases
however its process ends. On an object store it is an object created with
a conditional write and removed when the run ends; a killed run leaves it
behind, and only a run on the same machine can tell that its holder is gone
(README, "Guarantees").
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from convpipe.errors import OutputError, StorageError
from convpipe.paths import StorageOptions, filesystem, local_path, unreachable_errors

LOCK_SUFFIX = ".convpipe-lock"

try:
    import fcntl
except ImportError:  # Windows: no flock; runs on local disks are not locked there
    fcntl = None


def lock_path(output: str) -> str:
    """The lock of ``output``: a file (or object) beside it."""
    local = local_path(output)
    return f"{output.rstrip('/')}{LOCK_SUFFIX}" if local is None else f"{local}{LOCK_SUFFIX}"


@contextlib.contextmanager
def output_lock(output: str, storage_options: StorageOptions | None = None) -> Iterator[None]:
    """Hold the lock of ``output`` for the duration, or raise ``OutputError`` naming its holder."""
    if local_path(output) is None:
        with _object_lock(output, storage_options):
            yield
        return
    path = lock_path(output)
    if fcntl is None:
        yield
        return
    fd = _acquire(path, output)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{_describe(_holder())}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # before the unlock: a run that opens it now finds it replaced (see _acquire)
        os.close(fd)


def _acquire(path: str, output: str) -> int:
    # The output's folder, which the run creates anyway.
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
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
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)  # its holder removed it between our open and our lock: try the new one


# --------------------------------------------------------------------------- object stores


@contextlib.contextmanager
def _object_lock(output: str, storage_options: StorageOptions | None) -> Iterator[None]:
    url = lock_path(output)
    fs, marker = filesystem(url, storage_options)
    me = _holder()
    content = json.dumps(me).encode()
    try:
        _create(fs, marker, content, output, url)
    except unreachable_errors() as exc:
        if isinstance(exc, OSError):
            raise  # refused, or the storage's own answer: the storage-error policy decides
        raise StorageError(
            f"{output}: cannot reach the store to take the lock {url} ({type(exc).__name__}: {exc})"
        )
    except NotImplementedError:
        print(
            f"convpipe: warning: {url}: this store has no conditional writes; the run is not locked",
            file=sys.stderr,
        )
        yield
        return
    try:
        yield
    finally:
        # Never remove a lock that someone else took after ours was removed by hand.
        with contextlib.suppress(*unreachable_errors()):
            if _read(fs, marker) == me:
                fs.rm(marker)


def _create(fs: Any, marker: str, content: bytes, output: str, url: str) -> None:
    """Create the lock object if absent, else take over a dead run's lock of this machine, else refuse."""
    with contextlib.suppress(FileExistsError):
        _create_if_absent(fs, marker, content)
        return
    with _machine_mutex(url):  # runs on this machine take over a dead run's lock one at a time
        holder = _read(fs, marker)
        if holder is not None and _dead_here(holder):
            fs.rm(marker)
            try:
                _create_if_absent(fs, marker, content)
                print(
                    f"convpipe: took over the lock of a run that is no longer running ({_describe(holder)})",
                    file=sys.stderr,
                )
                return
            except FileExistsError:
                holder = _read(fs, marker)  # a run on another machine was quicker
    who = _describe(holder) if holder else "holder unknown"
    raise OutputError(
        f"{output}: another convpipe run is using this output ({who}); wait for it to finish, or stop it "
        "first; if none is running (a killed run leaves its lock on an object store), "
        f"remove {url} and run again"
    )


def _create_if_absent(fs: Any, marker: str, content: bytes) -> None:
    """One conditional PUT; ``FileExistsError`` if the object exists, ``NotImplementedError`` without support."""
    try:
        fs.pipe_file(marker, content, mode="create")
    except (TypeError, ValueError) as exc:  # a filesystem without mode="create"
        raise NotImplementedError(str(exc)) from None
    try:  # the same create again must be refused: a store that ignores the condition cannot lock
        fs.pipe_file(marker, content, mode="create")
    except FileExistsError:
        return
    fs.rm(marker)
    raise NotImplementedError("conditional writes are ignored")


def _read(fs: Any, marker: str) -> dict[str, Any] | None:
    try:
        holder = json.loads(fs.cat_file(marker))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _holder() -> dict[str, Any]:
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": started, "machine": _machine()}


def _describe(holder: dict[str, Any]) -> str:
    return f"host {holder.get('host')}, pid {holder.get('pid')}, started {holder.get('started')}"


def _machine() -> str | None:
    """Host, boot and process namespace: where a pid means one process (None where unknown)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot:
            return f"{socket.gethostname()}/{boot.read().strip()}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _dead_here(holder: dict[str, Any]) -> bool:
    """Whether ``holder`` ran on this machine and its process is gone."""
    pid, machine = holder.get("pid"), _machine()
    if machine is None or holder.get("machine") != machine or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


@contextlib.contextmanager
def _machine_mutex(url: str) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    name = hashlib.sha256(url.encode()).hexdigest()[:16]
    with open(os.path.join(tempfile.gettempdir(), f"convpipe-lock-{name}"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        yield
