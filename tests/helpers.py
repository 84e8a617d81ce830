"""Helpers shared by the test modules: the CLI in process, run configs, outputs read back, interrupted runs.

Test modules import from here (and the oracle from ``reference.py``), never
from one another. Shared tables of cases live in ``cases.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml
import zarr
from cases import Bad
from typer.testing import CliRunner, Result

import convpipe
from convpipe.cli import app
from convpipe.completion import BlockRecorder
from convpipe.sample import write_sample

CONVPIPE = str(Path(sys.executable).parent / "convpipe")  # the installed console script
DASK = str(Path(sys.executable).parent / "dask")
STARTUP_TIMEOUT = 60.0  # seconds for a service (scheduler, worker, S3 server) to come up
SPATIAL_CHUNKS = (32, 32)
SMALL_SHAPE = (2, 96, 128)  # 2 frames (slabs) x 12 blocks of 32 x 32
SUMMARY_RESUMED = re.compile(r"resumed: (\d+) of (\d+) blocks computed")


# --------------------------------------------------------------------------- the CLI in process


def invoke(*args: str | Path) -> Result:
    """``convpipe ARGS`` through ``typer.testing.CliRunner``."""
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result


def assert_user_error(result: Result, *fragments: str, exit_code: int = 2) -> str:
    """``exit_code``, exactly one ``error:`` line on stderr, no traceback; returns the message."""
    assert result.exit_code == exit_code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash caught by the runner
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "error:" not in result.stdout
    message = errors[0][len("error: ") :]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from {message!r}"
    return message


def check_message(message: str, source: str, case: Bad) -> None:
    """The message names the file (and line), and holds every expected fragment."""
    prefix = f"{source}:{case.line}: " if case.line is not None else f"{source}: "
    assert message.startswith(prefix), f"{message!r} should start with {prefix!r}"
    for fragment in case.fragments:
        assert fragment in message, f"{fragment!r} missing from {message!r}"
    assert "\n" not in message


def resumed_counts(text: str) -> tuple[int, int]:
    """``(computed, total)`` from the summary line of a resumed run."""
    match = SUMMARY_RESUMED.search(text)
    assert match, f"no 'resumed: N of M blocks computed' in {text!r}"
    return int(match[1]), int(match[2])


# --------------------------------------------------------------------------- run configs


def run_config(
    input_path: str | Path,
    output_path: str | Path,
    *,
    kernels: Any = "sobel",
    stride: int | list[int] = 1,
    combine: str = "magnitude",
    dtype: str = "float32",
    scheduler: str = "threads",
    chunks: tuple[int, int] | None = SPATIAL_CHUNKS,
    **compute: Any,
) -> dict[str, Any]:
    """A run config as a mapping: sobel magnitude in (32, 32) tiles unless told otherwise.

    Extra keyword arguments are further ``compute`` keys (``workers``, ``retries``, ...).
    """
    return {
        "input": {"path": str(input_path)},
        "kernels": kernels,
        "stride": list(stride) if isinstance(stride, (tuple, list)) else stride,
        "combine": combine,
        "output": {"path": str(output_path), "dtype": dtype},
        "compute": {"chunks": None if chunks is None else list(chunks), "scheduler": scheduler, **compute},
    }


def write_yaml(path: Path, config: dict[str, Any]) -> Path:
    """Write a config mapping as a YAML file (for the CLI); returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def make_config(path: Path, input_path: str | Path, output_path: str | Path, **options: Any) -> Path:
    """:func:`run_config` written as a YAML file at ``path``."""
    return write_yaml(path, run_config(input_path, output_path, **options))


def run_in_process(input_path: str | Path, output_path: str | Path, **options: Any) -> convpipe.RunSummary:
    """Run :func:`run_config` through ``convpipe.run`` (threads unless told otherwise), no progress bar."""
    return convpipe.run(run_config(input_path, output_path, **options), progress=False)


# --------------------------------------------------------------------------- outputs read back


def read_output(path: str | Path) -> np.ndarray:
    """The result array ``0`` of an output group, read with zarr alone."""
    return zarr.open_group(str(path), mode="r")["0"][...]


def output_record(path: str | Path) -> dict:
    """The provenance record (``attrs["convpipe"]``) of an output."""
    return dict(zarr.open_group(str(path), mode="r")["0"].attrs["convpipe"])


def assert_same_bytes(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert actual.tobytes() == expected.tobytes()


def tree_digest(root: Path) -> str:
    """A hash of every file name and byte under ``root`` (and of the folder layout)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(b"F" + path.read_bytes() if path.is_file() else b"D")
    return digest.hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Staging, backup or lock files a run may have left next to its output."""
    return sorted(p.name for p in folder.iterdir() if ".convpipe-" in p.name)


def file_stamps(root: Path) -> dict[str, int]:
    """Modification time of every file under ``root``: unchanged stamps mean nothing was rewritten."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- shared inputs


@dataclass(frozen=True)
class Stack:
    """A generated input and the threaded result of :func:`run_config` on it."""

    input: Path
    reference: np.ndarray
    blocks: int


def make_stack(folder: Path, shape: tuple[int, int, int]) -> Stack:
    """A sample input in ``folder`` and its threaded reference output."""
    source, reference = folder / "in.zarr", folder / "reference.zarr"
    write_sample(str(source), *shape)
    run_in_process(source, reference)
    return Stack(source, read_output(reference), output_record(reference)["blocks"])


def shared_stack(tmp_path_factory: pytest.TempPathFactory, shape: tuple[int, int, int]) -> Stack:
    """Input + threaded reference, built once per test session (shared by the test modules)."""
    folder = tmp_path_factory.getbasetemp() / "shared-stacks" / "x".join(map(str, shape))
    source, reference = folder / "in.zarr", folder / "reference.zarr"
    if not (folder / "ready").exists():
        folder.mkdir(parents=True, exist_ok=True)
        make_stack(folder, shape)
        (folder / "ready").touch()
    return Stack(source, read_output(reference), output_record(reference)["blocks"])


# --------------------------------------------------------------------------- real runs in subprocesses


def start_convpipe(args: list[str | Path], logs: Path) -> subprocess.Popen:
    """Start the installed ``convpipe`` console script; stdout/stderr go to files in ``logs``."""
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "stdout", "wb") as out, open(logs / "stderr", "wb") as err:
        return subprocess.Popen([CONVPIPE, *map(str, args)], stdout=out, stderr=err, cwd=logs)


def stderr_of(logs: Path) -> str:
    return (logs / "stderr").read_text(encoding="utf-8", errors="replace").replace("\r", "\n")


@contextlib.contextmanager
def running(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Make sure a subprocess never outlives the test."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def wait_for_markers(output: str | Path, at_least: int, proc: subprocess.Popen, timeout: float = 60) -> int:
    """Poll the completion markers of a running ``proc`` until ``at_least`` blocks are recorded."""
    recorder = BlockRecorder(str(output))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(recorder.folder) and len(recorder.done()) >= at_least:
            return len(recorder.done())
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) before {at_least} blocks were recorded")
        time.sleep(0.02)
    raise AssertionError(f"fewer than {at_least} blocks recorded after {timeout} s")


def wait_until_settled(output: str | Path, quiet_for: float = 1.0, timeout: float = 20) -> set:
    """The recorded blocks once no new marker has appeared for ``quiet_for`` seconds."""
    recorder = BlockRecorder(str(output))
    done, last_change = recorder.done(), time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() - last_change < quiet_for:
        assert time.monotonic() < deadline, "markers are still appearing"
        time.sleep(0.1)
        now = recorder.done()
        if now != done:
            done, last_change = now, time.monotonic()
    return done


# --------------------------------------------------------------------------- crashes injected in process


class InjectedCrash(Exception):
    """Raised by the patched recorder: the run dies before recording a block."""


@contextlib.contextmanager
def crash_after(recorded: int) -> Iterator[None]:
    """Let ``recorded`` blocks be recorded, then crash every write task (after its block is stored)."""
    original = BlockRecorder.__call__
    calls = itertools.count()
    lock = threading.Lock()

    def record_or_crash(self, index):
        with lock:
            n = next(calls)
        if n >= recorded:
            raise InjectedCrash(f"injected crash before recording block {index}")
        return original(self, index)

    BlockRecorder.__call__ = record_or_crash
    try:
        yield
    finally:
        BlockRecorder.__call__ = original


def interrupted_run(input_path, output_path, recorded: int, overwrite: bool = False, **options: Any) -> None:
    """An in-process run on the synchronous scheduler that crashes after ``recorded`` blocks."""
    config = run_config(input_path, output_path, scheduler="synchronous", **options)
    with crash_after(recorded), pytest.raises(InjectedCrash):
        convpipe.run(config, overwrite=overwrite, progress=False)


# --------------------------------------------------------------------------- services on 127.0.0.1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class DaskCluster:
    """A scheduler and workers running as subprocesses; :meth:`stop` kills them all."""

    folder: Path
    address: str = ""
    scheduler: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        with open(self.folder / log_name, "wb") as log:
            return subprocess.Popen(
                [DASK, *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.folder
            )

    def log(self, name: str) -> str:
        return (self.folder / name).read_text(encoding="utf-8", errors="replace")

    def _wait_for_log(self, proc: subprocess.Popen, log_name: str, text: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if text in self.log(log_name):
                return
            if proc.poll() is not None:
                raise RuntimeError(f"{log_name} exited with {proc.returncode}:\n{self.log(log_name)}")
            time.sleep(0.05)
        raise TimeoutError(f"no {text!r} in {log_name} after {STARTUP_TIMEOUT} s:\n{self.log(log_name)}")

    def start(self, n_workers: int = 2) -> DaskCluster:
        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        self.scheduler = self._spawn(
            # --dashboard-address: without a dashboard the scheduler still serves HTTP, by default on 8787.
            # --idle-timeout: a safety net should this test process die without its finaliser.
            [
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
                "--dashboard-address",
                "127.0.0.1:0",
                "--idle-timeout",
                "600s",
            ],
            "scheduler.log",
        )
        self._wait_for_log(self.scheduler, "scheduler.log", "Scheduler at:")
        for name in [self.add_worker() for _ in range(n_workers)]:
            self.wait_for_worker(name)
        return self

    def add_worker(self) -> str:
        """Start one more single-threaded worker (its own process, no nanny); returns its name."""
        name = f"worker-{len(self.workers)}"
        args = [
            "worker",
            self.address,
            "--host",
            "127.0.0.1",
            "--name",
            name,
            "--nthreads",
            "1",
            "--no-nanny",
            "--no-dashboard",
            "--local-directory",
            str(self.folder / name),
            "--death-timeout",
            "60s",
        ]
        self.workers.append(self._spawn(args, f"{name}.log"))
        return name

    def wait_for_worker(self, name: str) -> None:
        index = int(name.rsplit("-", 1)[1])
        self._wait_for_log(self.workers[index], f"{name}.log", "Registered to:")

    def stop(self) -> None:
        procs = [p for p in [*self.workers, self.scheduler] if p is not None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in procs:
            proc.wait(timeout=30)


@dataclass
class S3Server:
    """A moto S3 server (``python -m moto.server``) on 127.0.0.1, a subprocess; :meth:`stop` kills it."""

    folder: Path
    endpoint: str = ""
    process: subprocess.Popen | None = None

    def start(self) -> S3Server:
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        with open(self.folder / "moto.log", "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"moto exited with {self.process.returncode}")
            time.sleep(0.1)
        raise TimeoutError(f"moto did not listen on {port} within {STARTUP_TIMEOUT} s")

    def environment(self) -> dict[str, str]:
        """What points botocore/s3fs (in this process and in children) at this server and nowhere else."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "convpipe-test",
            "AWS_SECRET_ACCESS_KEY": "convpipe-test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(self.folder / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.folder / "no-aws-credentials"),
            "AWS_MAX_ATTEMPTS": "2",
        }

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


@dataclass(frozen=True)
class Bucket:
    """A fresh bucket on the test's S3 server: ``url(key)`` gives ``s3://bucket/key``."""

    name: str
    fs: Any  # an s3fs.S3FileSystem for this server

    def url(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def upload(self, local: Path, key: str) -> str:
        """Copy a local file or folder (a Zarr store) into the bucket; returns its URL."""
        self.fs.put(str(local), f"{self.name}/{key}", recursive=True)
        return self.url(key)

    def objects(self, key: str = "") -> list[str]:
        """Every object under ``key``, relative to the bucket."""
        self.fs.invalidate_cache()
        return sorted(name[len(self.name) + 1 :] for name in self.fs.find(f"{self.name}/{key}"))

    def read_output(self, key: str) -> np.ndarray:
        """The result array ``0`` of an output group in the bucket, read with zarr alone."""
        return zarr.open_group(self.url(key), mode="r")["0"][...]


@contextlib.contextmanager
def benchmark_script(path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A script of ``benchmarks/`` loaded by path, its folder first on ``sys.path`` as when it runs.

    Afterwards ``sys.path``, ``PYTHONPATH`` (which ``benchmarks/this_tree.py``
    extends) and ``sys.modules`` are as before: no other test sees the
    benchmark's own modules (``checks``, ``timing``, ...).
    """
    before = set(sys.modules)
    monkeypatch.syspath_prepend(str(path.parent))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    spec = importlib.util.spec_from_file_location(f"convpipe_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        for name in set(sys.modules) - before:
            if str(path.parent) in str(getattr(sys.modules[name], "__file__", None) or ""):
                del sys.modules[name]
