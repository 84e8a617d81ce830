"""``--resume`` trusts a finished block only while the input chunks it read are unchanged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import convpipe
from convpipe.completion import MARKER_FOLDER, BlockRecorder
from convpipe.core import correlate_block
from convpipe.integrity import block_input_region, chunk_identities
from convpipe.sample import write_sample

CONVPIPE = str(Path(sys.executable).parent / "convpipe")
SHAPE = (6, 64, 80)  # stored one frame per chunk, (32, 32) tiles: block (t, i, j) reads frame t


def config(source: Path, out: Path, stride: int = 1) -> dict:
    return {
        "input": {"path": str(source)},
        "kernels": "sobel",
        "stride": stride,
        "combine": "magnitude",
        "output": {"path": str(out)},
        "compute": {"chunks": [32, 32], "scheduler": "synchronous"},
    }


def interrupt(out: Path, keep: int) -> set[tuple[int, ...]]:
    """Leave ``out`` as a run killed after ``keep`` blocks leaves it; the blocks kept."""
    markers = sorted((out / MARKER_FOLDER).iterdir())
    for marker in markers[keep:]:
        marker.unlink()
    array = zarr.open_group(str(out), mode="r+")["0"]
    array.attrs["convpipe"] = {**array.attrs["convpipe"], "complete": False}
    return BlockRecorder(str(out)).done()


def rewrite_frame(source: Path, t: int) -> None:
    array = zarr.open_group(str(source), mode="r+")["0"]
    array[t] = 255 - array[t]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.zarr"
    write_sample(str(path), *SHAPE)
    return path


def test_every_block_is_computed_from_exactly_the_region_it_records(tmp_path: Path, source: Path) -> None:
    out = tmp_path / "out.zarr"
    for stride in (1, 2):
        convpipe.run(config(source, out, stride), overwrite=out.exists(), progress=False)
        g = convpipe.plan(config(source, out, stride)).geometry
        result = zarr.open_group(str(out), mode="r")["0"]
        frames = zarr.open_group(str(source), mode="r")["0"][...]
        weights = convpipe.BUILTIN_BANKS["sobel"].weights
        starts = [np.cumsum((0,) + c) for c in g.output_chunks]
        for block in np.ndindex(*(len(c) for c in g.output_chunks)):
            region = block_input_region(g, block)
            expected = correlate_block(frames[region][:, None], weights, (stride, stride), "magnitude")
            where = tuple(slice(s[i], s[i + 1]) for s, i in zip(starts, block))
            assert result[where].tobytes() == expected.tobytes(), (stride, block, region)


def test_a_rewritten_chunk_that_a_finished_block_read_refuses_the_resume(tmp_path: Path, source: Path) -> None:
    out = tmp_path / "out.zarr"
    convpipe.run(config(source, out), progress=False)
    kept = interrupt(out, keep=8)
    frames_read = {block[0] for block in kept}
    t = max(frames_read)
    rewrite_frame(source, t)  # a middle frame, not one the fingerprint samples
    (tmp_path / "run.yaml").write_text(
        f"input: {{path: '{source}'}}\nkernels: sobel\ncombine: magnitude\noutput: {{path: '{out}'}}\n"
        "compute: {chunks: [32, 32], scheduler: synchronous}\n"
    )
    result = subprocess.run([CONVPIPE, "run", str(tmp_path / "run.yaml"), "--resume"], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert f"the input chunk c/{t}/" in line and "changed after block" in line and "--overwrite" in line
    assert BlockRecorder(str(out)).done() == kept  # nothing touched


def test_a_rewritten_chunk_that_no_finished_block_read_resumes_to_the_new_inputs_bytes(
    tmp_path: Path, source: Path
) -> None:
    out, fresh = tmp_path / "out.zarr", tmp_path / "fresh.zarr"
    convpipe.run(config(source, out), progress=False)
    kept = interrupt(out, keep=4)
    untouched = max(block[0] for block in kept) + 1
    rewrite_frame(source, untouched)
    summary = convpipe.run(config(source, out), resume=True, progress=False)
    assert summary.blocks_computed == summary.blocks_total - len(kept)
    convpipe.run(config(source, fresh), progress=False)
    assert zarr.open_group(str(out))["0"][...].tobytes() == zarr.open_group(str(fresh))["0"][...].tobytes()


def test_blocks_recorded_without_input_identities_are_computed_again(tmp_path: Path, source: Path) -> None:
    out = tmp_path / "out.zarr"
    convpipe.run(config(source, out), progress=False)
    kept = interrupt(out, keep=6)
    for marker in (out / MARKER_FOLDER).iterdir():
        marker.write_bytes(b"")  # as older versions wrote them
    summary = convpipe.run(config(source, out), resume=True, progress=False)
    assert summary.blocks_computed == summary.blocks_total
    assert len(kept) == 6


def test_missing_input_chunks_are_counted_in_one_warning(tmp_path: Path, source: Path, capsys) -> None:
    array = zarr.open_group(str(source), mode="r")["0"]
    identities = chunk_identities(array, tuple(slice(0, n) for n in array.shape))
    gone = sorted(identities)[:3]
    for key in gone:
        (source / "0" / key).unlink()
    convpipe.run(config(source, tmp_path / "out.zarr"), progress=False)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warnings) == 1
    assert "3 input chunk(s)" in warnings[0] and "fill value 0" in warnings[0] and gone[0] in warnings[0]


def test_identities_on_an_fsspec_store_change_when_a_chunk_is_rewritten() -> None:
    import uuid

    url = f"memory://integrity-{uuid.uuid4().hex[:8]}/in.zarr"
    write_sample(url, 2, 32, 32)
    array = zarr.open_group(url, mode="r")["0"]
    everything = tuple(slice(0, n) for n in array.shape)
    before = chunk_identities(array, everything)
    assert sorted(before) == ["c/0/0/0", "c/1/0/0"] and "missing" not in before.values()
    writable = zarr.open_group(url, mode="r+")["0"]
    writable[1] = 255 - writable[1]
    after = chunk_identities(array, everything)
    assert after["c/0/0/0"] == before["c/0/0/0"] and after["c/1/0/0"] != before["c/1/0/0"]


def test_an_image_file_rewritten_between_a_kill_and_the_resume_refuses_it(tmp_path: Path) -> None:
    import imageio.v3 as iio

    from convpipe.sample import sample_stack

    frames = tmp_path / "frames"
    frames.mkdir()
    for t, frame in enumerate(sample_stack(6, 32, 40)):
        iio.imwrite(frames / f"frame{t}.png", frame)
    out = tmp_path / "out.zarr"
    convpipe.run(config(frames, out), progress=False)
    interrupt(out, keep=2)
    iio.imwrite(frames / "frame4.png", 255 - iio.imread(frames / "frame4.png"))  # the sampled hash skips frame 4
    with pytest.raises(convpipe.ConvpipeError, match=r"written by a different run \(differs in: input\)"):
        convpipe.run(config(frames, out), resume=True, progress=False)
