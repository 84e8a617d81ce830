"""Interrupted runs: integrity of what is on disk, ``--resume``, overwrite swaps, fsspec URLs.

A run is interrupted four ways: Ctrl-C (SIGINT) and SIGKILL of a real
``convpipe run`` subprocess, and, where determinism matters more than
realism, an exception injected into the completion recorder of an in-process
run on the synchronous scheduler (a crash after exactly N recorded blocks).
Every resumed output is compared byte for byte with an uninterrupted
threaded run of the same config.

The shared helpers (runs, crashes, subprocesses) are in ``helpers.py``.
"""

from __future__ import annotations

import itertools
import re
import shlex
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import (
    SMALL_SHAPE,
    Stack,
    assert_same_bytes,
    file_stamps,
    interrupted_run,
    invoke,
    leftovers,
    make_config,
    make_stack,
    output_record,
    read_output,
    resumed_counts,
    run_config,
    run_in_process,
    running,
    shared_stack,
    start_convpipe,
    stderr_of,
    tree_digest,
    wait_for_markers,
)

import convpipe
from convpipe.completion import BlockRecorder
from convpipe.outputs import staging_path
from convpipe.sample import write_sample

# One frame is one slab (one job on the threads scheduler) of 576 blocks: a run long enough
# (a few seconds with the start-up) to be interrupted in the middle of its only slab.
BIG_SHAPE = (1, 768, 768)


def block_regions(config_path: Path) -> dict[tuple[int, ...], tuple[slice, ...]]:
    """Output region of every block (task) of a config, by block index."""
    chunks = convpipe.plan(config_path).geometry.output_chunks
    offsets = [np.concatenate([[0], np.cumsum(sizes)]) for sizes in chunks]
    return {
        index: tuple(slice(int(o[i]), int(o[i + 1])) for o, i in zip(offsets, index))
        for index in itertools.product(*(range(len(sizes)) for sizes in chunks))
    }


def zarr_chunk_regions(array: zarr.Array) -> Iterator[tuple[slice, ...]]:
    starts = [range(0, n, c) for n, c in zip(array.shape, array.chunks)]
    for corner in itertools.product(*starts):
        yield tuple(slice(s, min(s + c, n)) for s, c, n in zip(corner, array.chunks, array.shape))


def inside(region: tuple[slice, ...], block: tuple[slice, ...]) -> bool:
    return all(b.start <= r.start and r.stop <= b.stop for r, b in zip(region, block))


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return shared_stack(tmp_path_factory, BIG_SHAPE)


@pytest.fixture
def small(tmp_path: Path) -> Stack:
    return make_stack(tmp_path, SMALL_SHAPE)


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
    # A recorded block is whole and right; anything else is, Zarr chunk by Zarr chunk, either right
    # (stored before the kill), NaN (never stored) or, since zarrs writes a chunk file in place, a
    # chunk that fails to decode (cut mid-write): never zeros, never wrong values.
    recorded_regions = [region for index, region in block_regions(config).items() if index in recorded]
    for region in recorded_regions:
        assert array[region].tobytes() == big.reference[region].tobytes(), region
    unwritten = 0
    for region in zarr_chunk_regions(array):
        try:
            chunk = array[region]
        except Exception:  # a truncated chunk: never one of a recorded block
            assert not any(inside(region, block) for block in recorded_regions), region
            unwritten += 1
            continue
        if np.isnan(chunk).all():
            unwritten += 1
        else:
            assert chunk.tobytes() == big.reference[region].tobytes(), region
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
    assert leftovers(tmp_path) == []
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

    summary = convpipe.run(run_config(source, out), overwrite=True, progress=False)
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
    summary = convpipe.run(run_config(source, out), resume=True, progress=False)
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
