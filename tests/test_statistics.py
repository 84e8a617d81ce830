"""Display windows from per-block statistics: exact ranges, robust percentiles, the same whatever the chunking.

The oracle is NumPy on the whole array (``np.nanmin``, ``np.percentile`` of the
finite values); end to end, the windows an output carries are checked against
the output's own values, and a resumed run against an uninterrupted one.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import interrupted_run, read_output, run_in_process, write_sample

import convpipe
from convpipe.statistics import BlockMeasure, display_window, merge, sample_step

RNG = np.random.default_rng(15)


def noisy(shape: tuple[int, ...]) -> np.ndarray:
    """Normal values (sd 100) with a few hot pixels, NaN and infinities."""
    data = (RNG.standard_normal(shape) * 100).astype(np.float32)
    flat = data.reshape(-1)
    hot = RNG.choice(flat.size, size=flat.size // 2000 + 1, replace=False)
    flat[hot] = 1e6
    flat[hot[:2]] = [np.nan, np.inf]
    flat[7] = -np.inf
    return data


def measured(data: np.ndarray, chunks: tuple[int, ...], channel_axis: int | None, step: int) -> dict:
    """Merged statistics of ``data`` measured block by block in ``chunks``."""
    measure = BlockMeasure(channel_axis, step)
    measures = []
    for corner in itertools.product(*(range(0, n, c) for n, c in zip(data.shape, chunks))):
        region = tuple(slice(o, min(o + c, n)) for o, c, n in zip(corner, chunks, data.shape))
        measures.append(measure(data[region], region))
    return merge(measures)


def check_window(window: dict, values: np.ndarray) -> None:
    """Exact min/max of the finite values; start/end enclose the 0.1 / 99.9 % percentiles, within one bin."""
    finite = values[np.isfinite(values)].astype(np.float64)
    assert window["min"] == finite.min() and window["max"] == finite.max()
    below, above = (np.percentile(finite, [0.1, 99.9], method=m) for m in ("lower", "higher"))
    assert np.count_nonzero(finite < window["start"]) <= 0.001 * finite.size
    assert np.count_nonzero(finite > window["end"]) <= 0.001 * finite.size
    assert below[0] - abs(below[0]) / 16 <= window["start"] <= above[0]
    assert below[1] <= window["end"] <= above[1] + abs(above[1]) / 16


@pytest.mark.parametrize("step", [1, 3])
@pytest.mark.parametrize("chunks", [(4, 3, 40, 50), (1, 1, 7, 11), (3, 2, 16, 32)], ids=str)
def test_statistics_do_not_depend_on_the_chunking(chunks, step: int) -> None:
    data = noisy((4, 3, 40, 50))
    whole = measured(data, data.shape, 1, step)
    parts = measured(data, chunks, 1, step)
    assert sorted(whole) == sorted(parts) == ["0", "1", "2"]
    for channel in whole:
        assert (
            whole[channel]["min"] == parts[channel]["min"] and whole[channel]["max"] == parts[channel]["max"]
        )
        np.testing.assert_array_equal(whole[channel]["counts"], parts[channel]["counts"])
        assert display_window(whole[channel]) == display_window(parts[channel])
        # The histogram counts exactly the lattice of the whole output, wherever the blocks start.
        lattice = data[:, int(channel), ::step, ::step]
        assert whole[channel]["counts"].sum() == lattice.size


def test_windows_are_the_robust_range_and_ignore_hot_pixels() -> None:
    data = noisy((2, 60, 70))
    window = display_window(measured(data, (1, 25, 30), None, 1)["0"])
    check_window(window, data)
    assert window["max"] == 1e6 and window["end"] < 1000  # the hot pixels set max, not the window


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(np.full((3, 4), 7.0), {"min": 7.0, "max": 8.0, "start": 7.0, "end": 8.0}, id="constant"),
        pytest.param(
            np.full((3, 4), np.nan), {"min": 0.0, "max": 1.0, "start": 0.0, "end": 1.0}, id="no-number"
        ),
        pytest.param(np.zeros((3, 4)), {"min": 0.0, "max": 1.0, "start": 0.0, "end": 1.0}, id="zeros"),
    ],
)
def test_degenerate_channels_still_have_a_usable_window(values: np.ndarray, expected: dict) -> None:
    assert display_window(measured(values, values.shape, None, 1)["0"]) == expected


def test_the_sample_step_bounds_the_sample_and_is_one_for_small_outputs() -> None:
    assert sample_step((3, 512, 512), 1) == 1
    big = (1000, 8192, 8192)
    step = sample_step(big, 2)
    assert (big[0] * (big[1] // step) * (big[2] // step)) <= 2 * (1 << 22)


# --------------------------------------------------------------------------- end to end


def omero_windows(path: Path) -> list[dict]:
    attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
    return [c["window"] for c in attrs.get("ome", attrs)["omero"]["channels"]]


@pytest.mark.parametrize("combine", ["magnitude", "none"])
def test_an_output_carries_the_windows_of_its_own_values(tmp_path: Path, combine: str) -> None:
    write_sample(str(tmp_path / "in.zarr"), 3, 70, 90)
    run_in_process(tmp_path / "in.zarr", tmp_path / "out.zarr", combine=combine, stride=2)
    values = read_output(tmp_path / "out.zarr")
    windows = omero_windows(tmp_path / "out.zarr")
    channels = [values] if combine == "magnitude" else [values[:, c] for c in range(values.shape[1])]
    assert len(windows) == len(channels)
    for window, channel in zip(windows, channels):
        check_window(window, channel)


def test_a_resumed_run_gets_the_windows_of_a_straight_run_in_other_chunks(tmp_path: Path) -> None:
    write_sample(str(tmp_path / "in.zarr"), 2, 96, 128)
    straight = tmp_path / "straight.zarr"
    run_in_process(tmp_path / "in.zarr", straight, combine="none", chunks=(64, 64))
    resumed = tmp_path / "resumed.zarr"
    interrupted_run(tmp_path / "in.zarr", resumed, recorded=5, combine="none")
    convpipe.run(
        {
            "input": {"path": str(tmp_path / "in.zarr")},
            "kernels": "sobel",
            "combine": "none",
            "output": {"path": str(resumed)},
            "compute": {"chunks": [32, 32], "scheduler": "threads"},
        },
        resume=True,
        progress=False,
    )
    assert omero_windows(resumed) == omero_windows(straight)
    assert [w["start"] < w["end"] for w in omero_windows(resumed)] == [True, True]
