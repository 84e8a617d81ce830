"""Broken inputs give one line naming the config key and the store, exit code 2, and create nothing."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import zarr
from typer.testing import CliRunner

from convpipe.cli import app
from convpipe.sample import write_sample


def edit_metadata(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(store: Path) -> None:
        path = store / "0" / "zarr.json"
        metadata = json.loads(path.read_text())
        change(metadata)
        path.write_text(json.dumps(metadata))

    return edit


def truncate_metadata(store: Path) -> None:
    path = store / "0" / "zarr.json"
    path.write_text(path.read_text()[:200])


def zero_frames(store: Path) -> None:
    shutil.rmtree(store)
    zarr.create_array(str(store), shape=(0, 32, 40), chunks=(1, 32, 40), dtype="uint8")


CASES = {
    "truncated-metadata": (truncate_metadata, None, ("input.path:", "not a readable Zarr", "JSONDecodeError")),
    "negative-shape": (edit_metadata(lambda m: m.update(shape=[-4, 32, 40])), None, ("input.path:", "non-negative")),
    "zero-chunk": (
        edit_metadata(lambda m: m["chunk_grid"]["configuration"].update(chunk_shape=[0, 32, 40])),
        None,
        ("input.path:", "no empty chunk"),
    ),
    "unknown-codec": (
        edit_metadata(lambda m: m["codecs"][1].update(name="nosuchcodec")),
        None,
        ("input.path:", "nosuchcodec"),
    ),
    "zero-frames": (zero_frames, None, ("input.path:", "shape (0, 32, 40)", "no empty axis")),
    "array-outside-the-group": (lambda store: None, "../x", ("input.array:", "no array '../x'")),
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_broken_input_is_one_line(tmp_path: Path, command: str, case) -> None:
    damage, array, fragments = case
    store = tmp_path / "in.zarr"
    write_sample(str(store), 4, 32, 40)
    damage(store)
    config = tmp_path / "run.yaml"
    array_line = f"  array: '{array}'\n" if array else ""
    config.write_text(f"input:\n  path: {store}\n{array_line}kernels: sobel\noutput:\n  path: {tmp_path}/out.zarr\n")
    result = CliRunner().invoke(app, [command, str(config)])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {config}:")
    for fragment in fragments:
        assert fragment in line, line
    assert not (tmp_path / "out.zarr").exists()


def test_an_unreachable_url_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("input:\n  path: http://127.0.0.1:1/in.zarr\nkernels: sobel\noutput:\n  path: out.zarr\n")
    result = CliRunner().invoke(app, ["validate", str(config)])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert "input.path: cannot read http://127.0.0.1:1/in.zarr" in line


def test_a_chunk_that_cannot_be_decoded_is_named_and_the_run_resumes_once_it_is_repaired(tmp_path: Path) -> None:
    store = tmp_path / "in.zarr"
    write_sample(str(store), 6, 32, 40)  # one stored chunk per frame; frame 4 is not one the fingerprint samples
    chunk = store / "0" / "c" / "4" / "0" / "0"
    good = chunk.read_bytes()
    chunk.write_bytes(b"\x00garbage" * 8)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"input:\n  path: {store}\nkernels: sobel\noutput:\n  path: {tmp_path}/out.zarr\n"
        "compute:\n  scheduler: synchronous\n  chunks: [32, 40]\n"
    )
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 2, result.output
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert f"input.path: the stored chunk c/4/0/0 of {store} cannot be decoded" in line
    assert f"resume with: convpipe run {config} --resume" in line
    chunk.write_bytes(good)
    resumed = CliRunner().invoke(app, ["run", str(config), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    fresh = tmp_path / "fresh.yaml"
    fresh.write_text(config.read_text().replace("out.zarr", "fresh.zarr"))
    assert CliRunner().invoke(app, ["run", str(fresh)]).exit_code == 0
    out = zarr.open_group(str(tmp_path / "out.zarr"))["0"][...]
    assert out.tobytes() == zarr.open_group(str(tmp_path / "fresh.zarr"))["0"][...].tobytes()
