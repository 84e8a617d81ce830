"""Opening inputs on their own: Zarr arrays and groups, picking the array, errors with their key."""

from __future__ import annotations

import pickle
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import zarr

from convpipe.errors import InputError
from convpipe.inputs import open_input, open_zarr_array
from convpipe.outputs import consolidate


def make_group(path: Path, arrays: dict[str, np.ndarray], zarr_format: int = 3) -> Path:
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    for name, data in arrays.items():
        group.create_array(name, data=data, chunks=(1,) + data.shape[1:])
    return path


STACK = np.arange(3 * 6 * 7, dtype=np.uint16).reshape(3, 6, 7)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_group_with_one_array_opens_lazily_with_its_geometry(tmp_path: Path, zarr_format: int) -> None:
    stack = open_input(str(make_group(tmp_path / "in.zarr", {"raw": STACK}, zarr_format)))
    assert (stack.shape, stack.dtype, stack.stored_chunks) == ((3, 6, 7), np.dtype("uint16"), (1, 6, 7))
    np.testing.assert_array_equal(stack.to_dask(((1, 2), (6,), (7,))).compute(), STACK)


def test_a_named_array_of_a_group_and_a_plain_array(tmp_path: Path) -> None:
    path = make_group(tmp_path / "in.zarr", {"raw": STACK, "mask": STACK[:, :2]})
    assert open_input(str(path), "mask").shape == (3, 2, 7)
    plain = zarr.create_array(str(tmp_path / "plain.zarr"), data=STACK)
    assert open_input(str(tmp_path / "plain.zarr")).shape == plain.shape


def test_image_files_open_as_a_stack(tmp_path: Path) -> None:
    for t, frame in enumerate(STACK.astype(np.uint8)):
        iio.imwrite(tmp_path / f"frame{t}.png", frame)
    stack = open_input(str(tmp_path))
    assert (stack.shape, stack.dtype, stack.array_path) == ((3, 6, 7), np.dtype("uint8"), None)
    np.testing.assert_array_equal(stack.to_dask(((3,), (6,), (7,))).compute(), STACK.astype(np.uint8))


def test_image_files_named_by_a_file_url_are_fingerprinted_like_their_path(tmp_path: Path) -> None:
    for t, frame in enumerate(STACK.astype(np.uint8)):
        iio.imwrite(tmp_path / f"frame{t}.png", frame)
    by_url = open_input(tmp_path.as_uri())
    assert by_url.shape == (3, 6, 7)
    assert by_url.identity() == open_input(str(tmp_path)).identity() | {"path": tmp_path.as_uri()}


@pytest.mark.parametrize(
    ("arrays", "array", "key", "fragment"),
    [
        pytest.param(
            {"raw": STACK, "mask": STACK}, None, "input.array", "several arrays (mask, raw)", id="several"
        ),
        pytest.param({"raw": STACK}, "labels", "input.array", "no array 'labels'", id="unknown-name"),
        pytest.param({}, None, "input.path", "holds no array", id="empty-group"),
        pytest.param({"line": np.arange(5)}, None, "input.path", "expected at least 2-D", id="1-d"),
        pytest.param({"flags": np.zeros((2, 3, 3), bool)}, None, "input.path", "dtype bool", id="bool-dtype"),
    ],
)
def test_input_errors_carry_their_config_key(tmp_path: Path, arrays, array, key: str, fragment: str) -> None:
    path = make_group(tmp_path / "in.zarr", arrays)
    with pytest.raises(InputError) as caught:
        open_input(str(path), array)
    assert caught.value.key == key
    assert fragment in str(caught.value)
    assert not str(caught.value).startswith("input.")  # the key is data, not a prefix to parse back


def test_a_missing_input_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nowhere.zarr does not exist") as caught:
        open_input(str(tmp_path / "nowhere.zarr"))
    assert caught.value.key == "input.path"


def test_an_array_name_on_a_plain_array_is_refused(tmp_path: Path) -> None:
    zarr.create_array(str(tmp_path / "plain.zarr"), data=STACK)
    with pytest.raises(InputError, match="single array, not a group; remove input.array") as caught:
        open_input(str(tmp_path / "plain.zarr"), "0")
    assert caught.value.key == "input.array"


def test_open_zarr_array_prefers_the_default_then_the_only_array(tmp_path: Path) -> None:
    both = make_group(tmp_path / "both.zarr", {"0": STACK, "c": STACK[:, :1]})
    assert open_zarr_array(str(both), default="0")[1] == "0"
    with pytest.raises(InputError, match="several arrays"):
        open_zarr_array(str(both))  # no default: two arrays are ambiguous
    single = make_group(tmp_path / "single.zarr", {"raw": STACK})
    assert open_zarr_array(str(single), default="0")[1] == "raw"
    with pytest.raises(InputError, match=r"has no array '0' \(arrays: 'raw'\); choose one with --array"):
        open_zarr_array(str(single), default="0", take_single=False, keys=("PATH", "--array"))


def test_open_zarr_array_reads_nested_paths_and_live_attributes(tmp_path: Path) -> None:
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_group("s0").create_array("image", data=STACK, attributes={"state": "old"})
    consolidate(str(tmp_path / "g.zarr"))
    zarr.open_array(str(tmp_path / "g.zarr" / "s0" / "image"), mode="r+").attrs["state"] = "new"
    array, name = open_zarr_array(str(tmp_path / "g.zarr"), "s0/image")
    assert name == "s0/image" and array.attrs["state"] == "new"  # not the stale consolidated copy
    with pytest.raises(InputError, match="no array 's0'"):
        open_zarr_array(str(tmp_path / "g.zarr"), "s0")  # a group, not an array


def test_a_file_that_is_not_zarr_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "notes.zarr").write_text("hello")
    with pytest.raises(InputError, match="is not a readable Zarr array or group") as caught:
        open_zarr_array(str(tmp_path / "notes.zarr"))
    assert caught.value.key == "path"


def test_the_content_signature_notices_a_rewritten_sampled_chunk(tmp_path: Path) -> None:
    path = make_group(tmp_path / "in.zarr", {"0": STACK})
    before = open_input(str(path)).content_signature()
    assert open_input(str(path)).content_signature() == before
    zarr.open_array(str(path / "0"), mode="r+")[-1, 0, 0] = 999  # the last chunk is always sampled
    assert open_input(str(path)).content_signature() != before


def test_errors_keep_their_key_through_pickling() -> None:
    error = pickle.loads(pickle.dumps(InputError("bad", key="input.path")))
    assert (str(error), error.key) == ("bad", "input.path")
