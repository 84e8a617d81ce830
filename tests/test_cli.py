"""The ``convpipe`` command: one clear line and exit code 2 for every user mistake,
nothing the user had lost or damaged, and the happy paths end to end.

Most tests go through ``typer.testing.CliRunner``; two run the installed
console script as a real subprocess.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from cases import BAD_CONFIGS, Bad
from helpers import assert_user_error, check_message, invoke, leftovers, read_output, tree_digest
from reference import LAPLACIAN, correlate_loop, magnitude
from reference import SOBEL as SOBEL_WEIGHTS

import convpipe
from convpipe.sample import write_sample

REPO = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(
    r"^done: (?P<frames>\d+) frame\(s\), (?P<mpx>[\d.]+) Mpx in (?P<seconds>[\d.]+) s "
    r"\((?P<rate>[\d.]+|inf) Mpx/s\) -> (?P<output>.+)$"
)

# `sample_zarr` (conftest) is tmp_path / "in.zarr"; configs live in tmp_path too.
SOBEL = """\
input:
  path: in.zarr
kernels: sobel
combine: magnitude
output:
  path: out.zarr
"""


# --------------------------------------------------------------------------- bad configs, both commands


@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize("case", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config(tmp_path: Path, write_config, command: str, case: Bad) -> None:
    config = write_config(tmp_path, case.text)
    before = tree_digest(tmp_path)
    message = assert_user_error(invoke(command, config))
    check_message(message, str(config), case)
    assert tree_digest(tmp_path) == before  # nothing written, nothing changed


@pytest.mark.parametrize("command", ["run", "validate"])
def test_missing_config(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "missing.yaml"
    assert_user_error(invoke(command, missing), str(missing), "does not exist", "expected a YAML file")


@pytest.mark.parametrize("command", ["run", "validate"])
def test_config_is_a_folder(tmp_path: Path, command: str) -> None:
    assert_user_error(invoke(command, tmp_path), str(tmp_path), "is a folder", "expected a YAML file")


# --------------------------------------------------------------------------- bad inputs


def _zarr_group(path: Path, arrays: dict[str, tuple[int, ...]]) -> Path:
    group = zarr.open_group(str(path), mode="w")
    for name, shape in arrays.items():
        group.create_array(name, data=np.arange(np.prod(shape), dtype="uint8").reshape(shape))
    return path


def _rgb(tmp_path: Path) -> Path:
    path = tmp_path / "rgb.zarr"
    write_sample(str(path), frames=2, height=16, width=16, rgb=True)  # (2, 16, 16, 3)
    return path


THREE_CHANNEL_KERNEL = "kernels:\n  - name: k\n    weights: [[[1]], [[2]], [[3]]]\n"

BAD_INPUTS = {
    "missing-input": (
        lambda tmp: None,
        "input:\n  path: nowhere.zarr\nkernels: sobel\noutput:\n  path: out.zarr\n",
        ("input.path:", "nowhere.zarr", "does not exist"),
    ),
    "group-with-several-arrays": (
        lambda tmp: _zarr_group(tmp / "multi.zarr", {"raw": (2, 8, 8), "mask": (2, 8, 8)}),
        "input:\n  path: multi.zarr\nkernels: sobel\noutput:\n  path: out.zarr\n",
        ("input.array:", "several arrays (mask, raw)", "set input.array"),
    ),
    "array-not-in-group": (
        lambda tmp: _zarr_group(tmp / "multi.zarr", {"raw": (2, 8, 8), "mask": (2, 8, 8)}),
        "input:\n  path: multi.zarr\n  array: labels\nkernels: sobel\noutput:\n  path: out.zarr\n",
        ("input.array:", "no array 'labels'", "arrays there: mask, raw"),
    ),
    "one-dimensional-input": (
        lambda tmp: _zarr_group(tmp / "line.zarr", {"0": (50,)}),
        "input:\n  path: line.zarr\nkernels: sobel\noutput:\n  path: out.zarr\n",
        ("input.path:", "1 dimension(s) (50,)", "at least 2-D"),
    ),
    "kernel-larger-than-image": (
        lambda tmp: None,
        (
            "input:\n  path: in.zarr\nkernels:\n  - name: wide\n    weights: ["
            + ", ".join(["[1]"] * 33)
            + "]\noutput:\n  path: out.zarr\n"
        ),
        ("kernels:", "(33x1)", "larger than the image frames (32x40)"),
    ),
    "kernel-channels-vs-channel-axis": (
        _rgb,
        (
            "input:\n  path: rgb.zarr\n  channel_axis: 3\nkernels:\n  - name: k\n    weights: [[[1]], [[2]]]\n"
            "output:\n  path: out.zarr\n"
        ),
        ("kernels:", "2 channels", "the input has 3", "channel_axis = 3"),
    ),
    "3d-kernel-without-channel-axis": (
        lambda tmp: None,
        "input:\n  path: in.zarr\n" + THREE_CHANNEL_KERNEL + "output:\n  path: out.zarr\n",
        ("kernels:", "3 channels", "the input has 1", "channel_axis = None"),
    ),
    "channel-axis-contradicts-the-names": (
        _rgb,  # dims t, y, x, c
        "input:\n  path: rgb.zarr\n  channel_axis: 2\n" + THREE_CHANNEL_KERNEL + "output:\n  path: out.zarr\n",
        ("input.channel_axis:", "2 contradicts", "['t', 'y', 'x', 'c']"),
    ),
    "axes-contradict-the-names": (
        _rgb,
        "input:\n  path: rgb.zarr\n  axes: zyxc\n" + THREE_CHANNEL_KERNEL + "output:\n  path: out.zarr\n",
        ("input.axes:", "'zyxc' contradicts", "dimension_names"),
    ),
    "output-is-the-input": (
        lambda tmp: None,
        "input:\n  path: in.zarr\nkernels: sobel\noutput:\n  path: ./in.zarr\n",
        ("output.path:", "is the input itself"),
    ),
    "output-inside-the-input": (
        lambda tmp: None,
        "input:\n  path: in.zarr\nkernels: sobel\noutput:\n  path: in.zarr/edges\n",
        ("output.path:", "is inside the input"),
    ),
    "output-contains-the-input": (
        lambda tmp: None,
        "input:\n  path: in.zarr\nkernels: sobel\noutput:\n  path: .\n",
        ("output.path:", "contains the input"),
    ),
    "output-contains-the-input-array": (
        lambda tmp: None,
        "input:\n  path: in.zarr/0\nkernels: sobel\noutput:\n  path: in.zarr\n",
        ("output.path:", "contains the input"),
    ),
}


@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input(tmp_path: Path, sample_zarr: Path, write_config, command: str, case) -> None:
    make_input, text, fragments = case
    make_input(tmp_path)
    config = write_config(tmp_path, text)
    before = tree_digest(tmp_path)
    assert_user_error(invoke(command, config), *fragments)
    assert tree_digest(tmp_path) == before  # the input (and everything else) untouched


def test_channel_axis_out_of_range_names_the_config(tmp_path: Path, sample_zarr: Path, write_config) -> None:
    config = write_config(
        tmp_path, "input:\n  path: in.zarr\n  channel_axis: 5\nkernels: sobel\noutput:\n  path: o\n"
    )
    assert_user_error(invoke("validate", config), f"{config}:3: input.channel_axis", "out of range")


def test_empty_input_folder_names_the_key(tmp_path: Path, write_config) -> None:
    (tmp_path / "frames").mkdir()
    config = write_config(tmp_path, "input:\n  path: frames\nkernels: sobel\noutput:\n  path: out.zarr\n")
    assert_user_error(invoke("validate", config), "input.path:", "no image files")


def test_run_refuses_an_existing_output(tmp_path: Path, sample_zarr: Path, write_config) -> None:
    config = write_config(tmp_path, SOBEL)
    assert invoke("run", config, "--quiet").exit_code == 0
    output = tmp_path / "out.zarr"
    before, input_before = tree_digest(output), tree_digest(sample_zarr)
    assert_user_error(invoke("run", config), "output.path:", str(output), "already exists", "--overwrite")
    assert tree_digest(output) == before
    assert tree_digest(sample_zarr) == input_before
    assert leftovers(tmp_path) == []


def test_run_refuses_an_existing_output_even_if_it_is_a_file(
    tmp_path: Path, sample_zarr: Path, write_config
) -> None:
    config = write_config(tmp_path, SOBEL)
    (tmp_path / "out.zarr").write_bytes(b"precious")
    assert_user_error(invoke("run", config), "already exists")
    assert (tmp_path / "out.zarr").read_bytes() == b"precious"


def test_bogus_scheduler_option(tmp_path: Path, sample_zarr: Path, write_config) -> None:
    config = write_config(tmp_path, SOBEL)
    assert_user_error(
        invoke("run", config, "--scheduler", "bogus"),
        "--scheduler",
        "threads, processes, synchronous",
        "'bogus'",
    )
    assert not (tmp_path / "out.zarr").exists()


# --------------------------------------------------------------------------- positive paths


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"convpipe {convpipe.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", convpipe.__version__)


def test_no_arguments_prints_help() -> None:
    result = invoke()
    assert "run" in result.output and "validate" in result.output and "kernels" in result.output


def test_kernels_lists_the_builtin_banks() -> None:
    result = invoke("kernels")
    assert result.exit_code == 0, result.output
    banks = [line.split()[0] for line in result.stdout.splitlines() if line and not line.startswith(" ")]
    assert banks == ["sobel", "scharr", "prewitt", "roberts", "laplacian"]
    weights = {
        line.split(maxsplit=1)[0]: line.split(maxsplit=1)[1]
        for line in result.stdout.splitlines()
        if line.startswith("  ")
    }
    assert weights == {
        "sobel-x": "[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]",
        "sobel-y": "[[-1, -2, -1], [0, 0, 0], [1, 2, 1]]",
        "scharr-x": "[[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]]",
        "scharr-y": "[[-3, -10, -3], [0, 0, 0], [3, 10, 3]]",
        "prewitt-x": "[[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]]",
        "prewitt-y": "[[-1, -1, -1], [0, 0, 0], [1, 1, 1]]",
        "roberts-d1": "[[-1, 0], [0, 1]]",
        "roberts-d2": "[[0, -1], [1, 0]]",
        "laplacian": "[[0, 1, 0], [1, -4, 1], [0, 1, 0]]",
    }


@pytest.mark.parametrize(
    ("extra", "output_shape", "stride"),
    [("", "(4, 30, 38)", "1 x 1"), ("stride: [2, 3]\n", "(4, 15, 13)", "2 x 3")],
    ids=["stride-1", "stride-2x3"],
)
def test_validate_prints_the_plan_and_writes_nothing(
    tmp_path: Path, sample_zarr: Path, write_config, extra: str, output_shape: str, stride: str
) -> None:
    config = write_config(tmp_path, SOBEL + extra)
    before = tree_digest(tmp_path)
    result = invoke("validate", config)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"input       {sample_zarr}" in out
    assert "shape     (4, 32, 40)  dtype uint8  stored chunks (1, 32, 40)" in out
    assert "kernels     sobel: sobel-x, sobel-y  (2 x 3x3, 1 channel(s))" in out
    assert f"stride      {stride}   combine magnitude" in out
    assert f"output      {tmp_path / 'out.zarr'}" in out
    assert re.search(rf"shape     {re.escape(output_shape)}  dtype float32", out)
    assert re.search(r"chunks    \(\d+, \d+, \d+\)  codec blosc-lz4  format zarr3", out)
    tasks = re.search(r"^tasks\s+(\d+)$", out, re.MULTILINE)
    assert tasks and int(tasks.group(1)) >= 1
    assert out.rstrip().endswith("ok: the config is valid")
    assert not (tmp_path / "out.zarr").exists()
    assert tree_digest(tmp_path) == before


def test_run_writes_the_output_and_one_summary_line(tmp_path: Path, sample_zarr: Path, write_config) -> None:
    config = write_config(tmp_path, SOBEL)
    result = invoke("run", config)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    summaries = [line for line in result.stderr.splitlines() if line.startswith("done:")]
    assert len(summaries) == 1, result.stderr
    match = SUMMARY.match(summaries[0])
    assert match, summaries[0]
    assert int(match["frames"]) == 4
    assert float(match["mpx"]) == pytest.approx(4 * 32 * 40 / 1e6, abs=0.05)
    assert float(match["seconds"]) > 0
    assert match["output"] == str(tmp_path / "out.zarr")
    result_array = read_output(tmp_path / "out.zarr")
    assert result_array.dtype == np.float32
    frames = zarr.open_group(str(sample_zarr), mode="r")["0"][...]
    expected = magnitude(correlate_loop(frames[:, None], SOBEL_WEIGHTS, (1, 1)))
    np.testing.assert_allclose(result_array, expected, rtol=1e-6)


def test_run_quiet_prints_nothing(tmp_path: Path, sample_zarr: Path, write_config) -> None:
    config = write_config(tmp_path, SOBEL)
    result = invoke("run", config, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and result.stderr == ""
    assert read_output(tmp_path / "out.zarr").shape == (4, 30, 38)


def test_overwrite_replaces_the_output(tmp_path: Path, sample_zarr: Path, write_config) -> None:
    assert invoke("run", write_config(tmp_path, SOBEL), "-q").exit_code == 0
    laplacian = write_config(
        tmp_path, SOBEL.replace("sobel", "laplacian").replace("magnitude", "none") + "stride: 2\n", "lap.yaml"
    )
    result = invoke("run", laplacian, "--overwrite", "--quiet")
    assert result.exit_code == 0, result.output
    new = read_output(tmp_path / "out.zarr")
    frames = zarr.open_group(str(sample_zarr), mode="r")["0"][...]
    expected = correlate_loop(frames[:, None], LAPLACIAN, (2, 2))
    assert new.shape == expected.shape == (4, 1, 15, 19)  # the old (4, 30, 38) magnitude is gone
    np.testing.assert_array_equal(new, expected.astype(np.float32))
    assert leftovers(tmp_path) == []


def test_overwrite_from_the_config(tmp_path: Path, sample_zarr: Path, write_config) -> None:
    config = write_config(tmp_path, SOBEL + "  overwrite: true\n")
    assert invoke("run", config, "-q").exit_code == 0  # a convpipe output, with a stale file in it
    (tmp_path / "out.zarr" / "stale.txt").write_text("old")
    assert invoke("run", config, "-q").exit_code == 0
    assert not (tmp_path / "out.zarr" / "stale.txt").exists()
    assert read_output(tmp_path / "out.zarr").shape == (4, 30, 38)


def test_failed_overwrite_keeps_the_previous_output(tmp_path: Path, sample_zarr: Path, write_config) -> None:
    config = write_config(tmp_path, SOBEL)
    assert invoke("run", config, "-q").exit_code == 0
    before = tree_digest(tmp_path / "out.zarr")
    started = time.monotonic()
    result = invoke("run", config, "--overwrite", "--scheduler", "tcp://127.0.0.1:1")
    assert time.monotonic() - started < 15
    assert_user_error(result, "compute.scheduler:", "tcp://127.0.0.1:1", "cannot connect")
    assert tree_digest(tmp_path / "out.zarr") == before
    # The half-built replacement may stay beside it (for --resume), but no backup of the old output.
    assert [name for name in leftovers(tmp_path) if not name.endswith(".convpipe-incoming")] == []
    # A later overwrite that succeeds cleans everything up.
    assert invoke("run", config, "--overwrite", "-q").exit_code == 0
    assert leftovers(tmp_path) == []
    assert read_output(tmp_path / "out.zarr").shape == (4, 30, 38)


def test_a_full_disk_is_one_line_and_the_run_resumes(
    tmp_path: Path, sample_zarr: Path, write_config, monkeypatch
) -> None:
    """An OS storage error mid-run: one line naming it and the resume command, exit 1, no traceback."""
    import errno
    import itertools
    import threading

    from convpipe.pipeline import BlockWriter

    config = write_config(tmp_path, SOBEL + "compute:\n  chunks: [16, 16]\n")
    write_block = BlockWriter.__call__
    calls, lock = itertools.count(), threading.Lock()

    def write_until_full(self, block, block_info=None):
        with lock:
            n = next(calls)
        if n >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write_block(self, block, block_info)

    monkeypatch.setattr(BlockWriter, "__call__", write_until_full)
    assert_user_error(
        invoke("run", config, "-q"),
        "No space left on device",
        f"writing {tmp_path / 'out.zarr'}",
        f"convpipe run {config} --resume",
        exit_code=1,
    )

    monkeypatch.setattr(BlockWriter, "__call__", write_block)
    assert invoke("run", config, "--resume", "-q").exit_code == 0
    reference = tmp_path / "reference.yaml"
    reference.write_text(SOBEL.replace("out.zarr", "reference.zarr"), encoding="utf-8")
    assert invoke("run", reference, "-q").exit_code == 0
    np.testing.assert_array_equal(read_output(tmp_path / "out.zarr"), read_output(tmp_path / "reference.zarr"))


def test_other_os_errors_keep_their_traceback(tmp_path: Path, sample_zarr: Path, write_config, monkeypatch) -> None:
    """Only storage refusals are user-facing; anything else is a bug and must stay visible."""
    import errno

    from convpipe.pipeline import BlockWriter

    def broken(self, block, block_info=None):
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    monkeypatch.setattr(BlockWriter, "__call__", broken)
    result = invoke("run", write_config(tmp_path, SOBEL), "-q")
    assert result.exit_code == 1 and isinstance(result.exception, OSError)


# --------------------------------------------------------------------------- the real command


def _convpipe_command() -> list[str]:
    for candidate in (Path(sys.executable).parent / "convpipe", shutil.which("convpipe")):
        if candidate and Path(candidate).is_file():
            return [str(candidate)]
    return [sys.executable, "-m", "convpipe.cli"]


def run_installed(*args: str | Path, **options) -> subprocess.CompletedProcess:
    """Run the installed ``convpipe`` command with ``args``; text output captured, 60 s at most."""
    command = [*_convpipe_command(), *map(str, args)]
    return subprocess.run(command, capture_output=True, check=False, text=True, timeout=60, **options)


def test_console_script_runs_the_shipped_sobel_config(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    config = project / "configs" / "sobel.yaml"
    shutil.copy(
        REPO / "configs" / "sobel.yaml", config
    )  # input ../data/sample.zarr, output ../out/sobel.zarr
    write_sample(str(project / "data" / "sample.zarr"), frames=4, height=32, width=40)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_installed("run", config, cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    output = project / "out" / "sobel.zarr"
    last = proc.stderr.strip().splitlines()[-1]
    match = SUMMARY.match(last)
    assert match and int(match["frames"]) == 4 and match["output"] == str(output), proc.stderr
    frames = zarr.open_group(str(project / "data" / "sample.zarr"), mode="r")["0"][...]
    expected = magnitude(correlate_loop(frames[:, None], SOBEL_WEIGHTS, (1, 1)))
    np.testing.assert_allclose(read_output(output), expected, rtol=1e-6)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity masks are a Linux feature")
def test_validate_counts_the_cpus_the_process_may_use(tmp_path: Path, sample_zarr: Path, write_config) -> None:
    """Pinned to one CPU (as a container or batch job may be), convpipe plans one task in flight, not one per core."""
    config = write_config(tmp_path, SOBEL)
    pin_to_one_cpu = lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    proc = run_installed("validate", config, preexec_fn=pin_to_one_cpu)
    assert proc.returncode == 0, proc.stderr
    memory = next(line for line in proc.stdout.splitlines() if line.startswith("memory"))
    assert memory.endswith("in flight with 1 thread(s)"), memory


def test_console_script_bad_config(tmp_path: Path, write_config) -> None:
    config = write_config(tmp_path, SOBEL + "stride: 0\n")
    proc = run_installed("run", config, env={**os.environ, "PYTHONWARNINGS": "default"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert proc.stderr == f"error: {config}:7: stride: must be a positive integer or [sy, sx], got 0\n"
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--storage-option", "endpoint_url"], "expected KEY=VALUE"),
        (["--storage-option", "=x"], "expected KEY=VALUE"),
        (["--storage-option", "anon=true"], "applies to URLs only"),
    ],
)
def test_inspect_storage_options_are_checked_before_anything_is_opened(
    tmp_path: Path, options: list[str], fragment: str
) -> None:
    write_sample(str(tmp_path / "in.zarr"), 2, 16, 16)
    result = invoke("inspect", tmp_path / "in.zarr", *options)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert fragment in " ".join(result.stderr.split()), result.stderr  # typer may wrap the usage message


def test_storage_options_from_the_command_line_nest_and_read_yaml_scalars() -> None:
    from convpipe.paths import storage_options_from_assignments

    options = storage_options_from_assignments(
        ["endpoint_url=http://127.0.0.1:9000", "anon=false", "client_kwargs.region_name=eu-west-1", "port=9000"]
    )
    assert options == {
        "endpoint_url": "http://127.0.0.1:9000",
        "anon": False,
        "client_kwargs": {"region_name": "eu-west-1"},
        "port": 9000,
    }
    with pytest.raises(ValueError, match="already has a value"):
        storage_options_from_assignments(["a=1", "a.b=2"])
