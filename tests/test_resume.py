"""Interrupted runs: integrity of what is on disk, ``--resume``, overwrite swaps, fsspec URLs.

A run is interrupted four ways: Ctrl-C (SIGINT) and SIGKILL of a real
``convpipe run`` subprocess, and, where determinism matters more than
realism, an exception injected into the completion recorder of an in-process
run on the synchronous scheduler (a crash after exactly N recorded blocks).
Every resumed output is compared byte for byte with an uninterrupted
threaded run of the same config.

The helpers at the top are shared with ``test_cluster.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner, Result

from convpipe.cli import app
from convpipe.completion import BlockRecorder
from convpipe.config import load_config, parse_config
from convpipe.planner import make_plan
from convpipe.runner import execute
from convpipe.sample import write_sample
from convpipe.outputs import staging_path

CONVPIPE = str(Path(sys.executable).parent / "convpipe")
SPATIAL_CHUNKS = (32, 32)
SMALL_SHAPE = (2, 96, 128)  # 2 frames (slabs) x 12 blocks of 32 x 32
# One frame is one slab (one job on the threads scheduler) of 576 blocks: a run long enough
# (a few seconds with the start-up) to be interrupted in the middle of its only slab.
BIG_SHAPE = (1, 768, 768)
SUMMARY_RESUMED = re.compile(r"resumed: (\d+) of (\d+) blocks computed")


# --------------------------------------------------------------------------- shared helpers


def config_yaml(
    input_path: str | Path,
    output_path: str | Path,
    *,
    kernels: str = "sobel",
    stride: int = 1,
    combine: str = "magnitude",
    dtype: str = "float32",
    scheduler: str = "threads",
    compute: str = "",
) -> str:
    """A run config: sobel magnitude in (32, 32) tiles unless told otherwise."""
    cy, cx = SPATIAL_CHUNKS
    return (
        f"input: {{path: '{input_path}'}}\n"
        f"kernels: {kernels}\n"
        f"stride: {stride}\n"
        f"combine: {combine}\n"
        f"output: {{path: '{output_path}', dtype: {dtype}}}\n"
        f"compute: {{chunks: [{cy}, {cx}], scheduler: '{scheduler}'{compute}}}\n"
    )


def make_config(path: Path, input_path: str | Path, output_path: str | Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_yaml(input_path, output_path, **options), encoding="utf-8")
    return path


def run_in_process(input_path, output_path, **options) -> None:
    """Run a config through the Python API (threads unless told otherwise), no progress bar."""
    execute(make_plan(parse_config(config_yaml(input_path, output_path, **options))), progress=False)


def read_output(path: str | Path) -> np.ndarray:
    return zarr.open_group(str(path), mode="r")["0"][...]


def output_record(path: str | Path) -> dict:
    return dict(zarr.open_group(str(path), mode="r")["0"].attrs["convpipe"])


def assert_same_bytes(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert actual.tobytes() == expected.tobytes()


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def resumed_counts(text: str) -> tuple[int, int]:
    """``(computed, total)`` from the summary line of a resumed run."""
    match = SUMMARY_RESUMED.search(text)
    assert match, f"no 'resumed: N of M blocks computed' in {text!r}"
    return int(match[1]), int(match[2])


def block_regions(config_path: Path) -> dict[tuple[int, ...], tuple[slice, ...]]:
    """Output region of every block (task) of a config, by block index."""
    chunks = make_plan(load_config(config_path)).geometry.output_chunks
    offsets = [np.concatenate([[0], np.cumsum(sizes)]) for sizes in chunks]
    return {
        index: tuple(slice(int(o[i]), int(o[i + 1])) for o, i in zip(offsets, index))
        for index in itertools.product(*(range(len(sizes)) for sizes in chunks))
    }


def zarr_chunk_regions(array: zarr.Array) -> Iterator[tuple[slice, ...]]:
    starts = [range(0, n, c) for n, c in zip(array.shape, array.chunks)]
    for corner in itertools.product(*starts):
        yield tuple(slice(s, min(s + c, n)) for s, c, n in zip(corner, array.chunks, array.shape))


def file_stamps(root: Path) -> dict[str, int]:
    """Modification time of every file under ``root``: unchanged stamps mean nothing was rewritten."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(b"F" + path.read_bytes() if path.is_file() else b"D")
    return digest.hexdigest()


@dataclass(frozen=True)
class Stack:
    """A generated input and the threaded result of :func:`config_yaml` on it."""

    input: Path
    reference: np.ndarray
    blocks: int


def shared_stack(tmp_path_factory: pytest.TempPathFactory, shape: tuple[int, int, int]) -> Stack:
    """Input + threaded reference, built once per test session (shared by the test modules)."""
    folder = tmp_path_factory.getbasetemp() / "shared-stacks" / "x".join(map(str, shape))
    source, reference = folder / "in.zarr", folder / "reference.zarr"
    if not (folder / "ready").exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_sample(str(source), *shape)
        run_in_process(source, reference)
        (folder / "ready").touch()
    return Stack(source, read_output(reference), output_record(reference)["blocks"])


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


def interrupted_run(input_path, output_path, recorded: int, overwrite: bool = False, **options) -> None:
    """An in-process run on the synchronous scheduler that crashes after ``recorded`` blocks."""
    plan = make_plan(parse_config(config_yaml(input_path, output_path, scheduler="synchronous", **options)))
    with crash_after(recorded), pytest.raises(InjectedCrash):
        execute(plan, overwrite=overwrite, progress=False)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return shared_stack(tmp_path_factory, BIG_SHAPE)


@pytest.fixture
def small(tmp_path: Path) -> Stack:
    source, reference = tmp_path / "in.zarr", tmp_path / "reference.zarr"
    write_sample(str(source), *SMALL_SHAPE)
    run_in_process(source, reference)
    return Stack(source, read_output(reference), output_record(reference)["blocks"])


# --------------------------------------------------------------------------- real interruptions


def test_ctrl_c_exits_130_and_prints_a_resume_command_that_finishes_the_run(
    tmp_path: Path, big: Stack
) -> None:
    out = tmp_path / "out.zarr"
    config = make_config(tmp_path / "run.yaml", big.input, out)
    with running(start_convpipe(["run", config], tmp_path / "logs")) as proc:
        wait_for_markers(out, 5, proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    stderr = stderr_of(tmp_path / "logs")
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last == f"interrupted; finished blocks are kept. Resume with: convpipe run {config} --resume"

    recorded = BlockRecorder(str(out)).done()
    assert 0 < len(recorded) < big.blocks, "the run was not interrupted in the middle"
    assert output_record(out)["complete"] is False

    command = shlex.split(last.split("Resume with: ", 1)[1])
    assert command[0] == "convpipe"
    result = invoke(*command[1:])
    assert result.exit_code == 0, result.output
    todo = big.blocks - len(recorded)
    assert resumed_counts(result.stderr) == (todo, big.blocks)
    # One slab, one job on one thread: the bar still moves block by block, not all at the end.
    counts = {int(n) for n in re.findall(rf"\| *(\d+)/{todo} \[", result.stderr)}
    assert todo in counts and any(0 < n < todo for n in counts), result.stderr
    assert output_record(out)["complete"] is True
    assert_same_bytes(read_output(out), big.reference)


def test_sigkill_leaves_whole_blocks_and_resume_gives_the_uninterrupted_bytes(
    tmp_path: Path, big: Stack
) -> None:
    out = tmp_path / "out.zarr"
    config = make_config(tmp_path / "run.yaml", big.input, out)
    with running(start_convpipe(["run", config, "--quiet"], tmp_path / "logs")) as proc:
        wait_for_markers(out, 10, proc)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL

    recorded = BlockRecorder(str(out)).done()
    assert 0 < len(recorded) < big.blocks, "the run was not killed in the middle"
    array = zarr.open_group(str(out), mode="r")["0"]
    assert array.attrs["convpipe"]["complete"] is False
    data = array[...]
    # A recorded block is whole and right; anything else is, Zarr chunk by Zarr chunk,
    # either right (stored before the kill) or NaN (never stored): never zeros, never torn.
    for index, region in block_regions(config).items():
        if index in recorded:
            assert data[region].tobytes() == big.reference[region].tobytes(), index
    unwritten = 0
    for region in zarr_chunk_regions(array):
        if np.isnan(data[region]).all():
            unwritten += 1
        else:
            assert data[region].tobytes() == big.reference[region].tobytes(), region
    assert unwritten > 0

    refused = invoke("run", config)
    assert refused.exit_code == 2 and "unfinished convpipe output; pass --resume" in refused.stderr

    result = invoke("run", config, "--resume")
    assert result.exit_code == 0, result.output
    assert resumed_counts(result.stderr) == (big.blocks - len(recorded), big.blocks)
    assert output_record(out)["complete"] is True
    assert len(BlockRecorder(str(out)).done()) == big.blocks
    assert_same_bytes(read_output(out), big.reference)


# --------------------------------------------------------------------------- on-disk state of an unfinished run


def test_unfinished_output_is_marked_incomplete_and_reads_nan(tmp_path: Path, small: Stack) -> None:
    out = tmp_path / "out.zarr"
    interrupted_run(small.input, out, recorded=4)
    assert len(BlockRecorder(str(out)).done()) == 4
    array = zarr.open_group(str(out), mode="r")["0"]
    assert array.attrs["convpipe"]["complete"] is False
    assert np.isnan(array.fill_value)
    data = array[...]
    nan_chunks = [region for region in zarr_chunk_regions(array) if np.isnan(data[region]).all()]
    assert len(nan_chunks) > 0
    stored = ~np.isnan(data)
    np.testing.assert_array_equal(data[stored], small.reference[stored])


def test_resume_of_a_complete_output_computes_nothing(tmp_path: Path, small: Stack) -> None:
    out = tmp_path / "out.zarr"
    config = make_config(tmp_path / "run.yaml", small.input, out)
    assert invoke("run", config, "-q").exit_code == 0
    chunks_before = {k: v for k, v in file_stamps(out).items() if not k.endswith("zarr.json")}
    result = invoke("run", config, "--resume")
    assert result.exit_code == 0, result.output
    assert resumed_counts(result.stderr) == (0, small.blocks)
    chunks_after = {k: v for k, v in file_stamps(out).items() if not k.endswith("zarr.json")}
    assert chunks_after == chunks_before  # no chunk and no marker rewritten
    assert output_record(out)["complete"] is True
    assert_same_bytes(read_output(out), small.reference)


def test_resume_after_a_crash_computes_only_the_missing_blocks(tmp_path: Path, small: Stack) -> None:
    out = tmp_path / "out.zarr"
    interrupted_run(small.input, out, recorded=5)
    stamps = {k: v for k, v in file_stamps(out).items() if ".convpipe-done" in k}
    assert len(stamps) == 5
    result = invoke("run", make_config(tmp_path / "run.yaml", small.input, out), "--resume")
    assert result.exit_code == 0, result.output
    assert resumed_counts(result.stderr) == (small.blocks - 5, small.blocks)
    after = file_stamps(out)
    assert {k: after[k] for k in stamps} == stamps  # the recorded blocks were not redone
    assert_same_bytes(read_output(out), small.reference)


# One changed setting each; the interrupted run used sobel, stride 1, magnitude, float32.
DIFFERENT_RUNS = {
    "stride": ({"stride": 2}, "stride"),
    "kernels": ({"kernels": "prewitt"}, "kernels"),
    "combine": ({"combine": "none"}, "combine"),
    "dtype": ({"dtype": "float64"}, "dtype"),
    "input-shape": ({}, "input"),
}


@pytest.mark.parametrize("change", DIFFERENT_RUNS.values(), ids=DIFFERENT_RUNS.keys())
def test_resume_refuses_a_different_run(tmp_path: Path, small: Stack, change) -> None:
    options, differing = change
    out = tmp_path / "out.zarr"
    interrupted_run(small.input, out, recorded=4)
    if not options:  # the input was replaced by a wider one
        write_sample(str(small.input), SMALL_SHAPE[0], SMALL_SHAPE[1], SMALL_SHAPE[2] + 32)
    before = tree_digest(out)
    result = invoke("run", make_config(tmp_path / "changed.yaml", small.input, out, **options), "--resume")
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "different run" in lines[0] and "cannot resume" in lines[0]
    listed = lines[0].split("differs in: ", 1)[1].split(")", 1)[0].split(", ")
    assert differing in listed
    assert tree_digest(out) == before  # nothing touched


def test_resume_refuses_an_input_rewritten_in_place(tmp_path: Path, small: Stack) -> None:
    out = tmp_path / "out.zarr"
    interrupted_run(small.input, out, recorded=4)
    source = zarr.open_group(str(small.input), mode="r+")["0"]
    source[...] = 255 - source[...]  # same path, shape, dtype and chunks; other pixels
    result = invoke("run", make_config(tmp_path / "run.yaml", small.input, out), "--resume")
    assert result.exit_code == 2, result.output
    assert "differs in: input" in result.stderr


# --------------------------------------------------------------------------- overwrite


def test_interrupted_overwrite_keeps_the_old_output_until_the_resumed_swap(
    tmp_path: Path, small: Stack
) -> None:
    out = tmp_path / "out.zarr"
    run_in_process(small.input, out, stride=2)  # the old output: another run, complete
    old = tree_digest(out)

    interrupted_run(small.input, out, recorded=3, overwrite=True)
    staged = Path(staging_path(str(out)))
    assert tree_digest(out) == old
    assert len(BlockRecorder(str(staged)).done()) == 3
    assert output_record(staged)["complete"] is False

    config = make_config(tmp_path / "run.yaml", small.input, out)
    result = invoke("run", config, "--resume")
    assert result.exit_code == 0, result.output
    assert resumed_counts(result.stderr) == (small.blocks - 3, small.blocks)
    assert not staged.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if ".convpipe-" in p.name) == []
    assert output_record(out)["complete"] is True
    assert_same_bytes(read_output(out), small.reference)


def test_resume_finishes_the_output_beside_another_runs_unfinished_replacement(
    tmp_path: Path, small: Stack
) -> None:
    out = tmp_path / "out.zarr"
    interrupted_run(small.input, out, recorded=4)  # ours: stride 1, unfinished
    interrupted_run(small.input, out, recorded=2, overwrite=True, stride=2)  # another run's replacement
    staged = Path(staging_path(str(out)))
    theirs = tree_digest(staged)

    result = invoke("run", make_config(tmp_path / "run.yaml", small.input, out), "--resume")
    assert result.exit_code == 0, result.output
    assert resumed_counts(result.stderr) == (small.blocks - 4, small.blocks)
    assert_same_bytes(read_output(out), small.reference)
    assert tree_digest(staged) == theirs  # the other run's work is left alone, still resumable

    result = invoke("run", make_config(tmp_path / "other.yaml", small.input, out, kernels="prewitt"), "--resume")
    assert result.exit_code == 2, result.output
    assert f"output.path: {out} was written by a different run" in result.stderr  # the output's own reason


# --------------------------------------------------------------------------- fsspec URLs


@pytest.fixture
def memory_root() -> Iterator[str]:
    """A fresh ``memory://`` prefix, emptied afterwards (the memory filesystem is process-global)."""
    import fsspec

    name = f"convpipe-test-{uuid.uuid4().hex[:8]}"
    yield f"memory://{name}"
    fs = fsspec.filesystem("memory")
    if fs.exists(f"/{name}"):
        fs.rm(f"/{name}", recursive=True)


def test_memory_urls_give_the_local_bytes_and_overwrite_swaps(memory_root: str, small: Stack) -> None:
    source, out = f"{memory_root}/in.zarr", f"{memory_root}/out.zarr"
    write_sample(source, *SMALL_SHAPE)
    run_in_process(source, out)
    assert output_record(out)["complete"] is True
    assert_same_bytes(read_output(out), small.reference)

    plan = make_plan(parse_config(config_yaml(source, out)))
    summary = execute(plan, overwrite=True, progress=False)
    assert summary.blocks_computed == summary.blocks_total == small.blocks
    assert_same_bytes(read_output(out), small.reference)
    import fsspec

    assert not fsspec.filesystem("memory").exists(staging_path(out).split("://", 1)[1])


def test_memory_url_run_resumes_after_a_crash(memory_root: str, small: Stack) -> None:
    source, out = f"{memory_root}/in.zarr", f"{memory_root}/out.zarr"
    write_sample(source, *SMALL_SHAPE)
    interrupted_run(source, out, recorded=5)
    assert len(BlockRecorder(out).done()) == 5
    assert output_record(out)["complete"] is False
    summary = execute(make_plan(parse_config(config_yaml(source, out))), resume=True, progress=False)
    assert (summary.blocks_computed, summary.blocks_total) == (small.blocks - 5, small.blocks)
    assert output_record(out)["complete"] is True
    assert_same_bytes(read_output(out), small.reference)


def test_file_urls_give_the_local_bytes(tmp_path: Path, small: Stack) -> None:
    out = tmp_path / "url-out.zarr"
    config = make_config(tmp_path / "run.yaml", f"file://{small.input}", f"file://{out}")
    result = invoke("run", config)
    assert result.exit_code == 0, result.output
    assert_same_bytes(read_output(out), small.reference)
    assert output_record(out)["complete"] is True
    again = invoke("run", config, "--resume")
    assert again.exit_code == 0, again.output
    assert resumed_counts(again.stderr) == (0, small.blocks)
