"""The output store on its own: creation, reopening, swap, removal and location checks on real stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from convpipe.errors import OutputError
from convpipe.outputs import (
    check_output_location,
    consolidate,
    create_output,
    open_output_array,
    read_record,
    staging_path,
    swap_into_place,
)
from convpipe.paths import path_exists, remove_path


def create(path: Path, zarr_format: int = 3, **options) -> zarr.Array:
    return create_output(
        str(path),
        shape=(2, 3, 6, 8),
        chunks=(1, 3, 6, 4),
        dtype="float32",
        dimension_names=("t", "c", "y", "x"),
        array_attributes={"convpipe": {"complete": False}},
        group_attributes={"note": "group"},
        zarr_format=zarr_format,
        labels={"c": ["a", "b", "d"]},
        **options,
    )


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_create_output_lays_out_the_result_array(tmp_path: Path, zarr_format: int) -> None:
    create(tmp_path / "out.zarr", zarr_format)
    array = open_output_array(str(tmp_path / "out.zarr"))
    assert (array.shape, array.chunks, str(array.dtype)) == ((2, 3, 6, 8), (1, 3, 6, 4), "float32")
    assert np.isnan(array[:]).all()  # unwritten chunks read as NaN, never as zeros
    if zarr_format == 3:
        assert array.metadata.dimension_names == ("t", "c", "y", "x")
    else:
        assert array.attrs["_ARRAY_DIMENSIONS"] == ["t", "c", "y", "x"]
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    assert group.attrs["note"] == "group"
    assert list(group["c"][:]) == ["a", "b", "d"]  # the kernel names, xarray's coordinate of c
    assert read_record(str(tmp_path / "out.zarr")) == {"complete": False}


def test_blocks_written_through_the_reopened_array_are_stored(tmp_path: Path) -> None:
    create(tmp_path / "out.zarr")
    open_output_array(str(tmp_path / "out.zarr"), mode="r+")[0] = 1.5
    data = open_output_array(str(tmp_path / "out.zarr"))[:]
    assert (data[0] == 1.5).all() and np.isnan(data[1]).all()


def test_read_record_is_none_for_what_is_not_a_convpipe_output(tmp_path: Path) -> None:
    (tmp_path / "file.zarr").write_bytes(b"precious")
    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w").create_array("0", shape=(2, 2), dtype="u1")
    for name in ("missing.zarr", "file.zarr", "empty.zarr", "plain.zarr"):
        assert read_record(str(tmp_path / name)) is None, name


def test_consolidate_writes_the_final_attributes(tmp_path: Path) -> None:
    array = create(tmp_path / "out.zarr")
    array.attrs["convpipe"] = {"complete": True}
    consolidate(str(tmp_path / "out.zarr"))
    metadata = json.loads((tmp_path / "out.zarr" / "zarr.json").read_text())["consolidated_metadata"]
    assert metadata["metadata"]["0"]["attributes"]["convpipe"] == {"complete": True}


def test_swap_replaces_the_old_output_and_leaves_nothing_behind(tmp_path: Path) -> None:
    final, staged = tmp_path / "out.zarr", Path(staging_path(str(tmp_path / "out.zarr")))
    assert staged.name == "out.zarr.convpipe-incoming"
    create(final)
    open_output_array(str(final), mode="r+")[:] = 1.0
    create(staged)
    open_output_array(str(staged), mode="r+")[:] = 2.0
    swap_into_place(str(staged), str(final))
    assert (open_output_array(str(final))[:] == 2.0).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]  # no staging, no .convpipe-old-*


def test_swap_into_a_free_place(tmp_path: Path) -> None:
    staged = Path(staging_path(str(tmp_path / "out.zarr")))
    create(staged)
    swap_into_place(str(staged), str(tmp_path / "out.zarr"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]
    assert open_output_array(str(tmp_path / "out.zarr")).shape == (2, 3, 6, 8)


def test_swap_on_a_url_store() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe_file("/swap/out.zarr/old", b"old")
    fs.pipe_file("/swap/out.zarr.convpipe-incoming/new", b"new")
    swap_into_place("memory://swap/out.zarr.convpipe-incoming", "memory://swap/out.zarr")
    assert fs.cat_file("/swap/out.zarr/new") == b"new"
    assert not fs.exists("/swap/out.zarr/old") and not fs.exists("/swap/out.zarr.convpipe-incoming")


def test_remove_path_deletes_folders_files_and_url_prefixes(tmp_path: Path) -> None:
    import fsspec

    create(tmp_path / "out.zarr")
    (tmp_path / "file").write_bytes(b"x")
    fsspec.filesystem("memory").pipe_file("/rm/out.zarr/a", b"x")
    for path in (str(tmp_path / "out.zarr"), str(tmp_path / "file"), "memory://rm/out.zarr"):
        assert path_exists(path)
        remove_path(path)
        assert not path_exists(path)
    remove_path(str(tmp_path / "never-there"))  # nothing to remove is fine


@pytest.mark.parametrize(
    ("output", "source", "fragment"),
    [
        pytest.param("in.zarr", "in.zarr", "is the input itself", id="same"),
        pytest.param("in.zarr/out", "in.zarr", "is inside the input", id="inside"),
        pytest.param("data", "data/in.zarr", "contains the input", id="contains"),
        pytest.param("memory://b/in.zarr/out", "memory://b/in.zarr", "overlaps the input", id="url-inside"),
        pytest.param("memory://b/in.zarr", "memory://b/in.zarr/", "overlaps the input", id="url-same"),
        pytest.param("s3://bucket", "s3://other/in.zarr", "is a bucket .or store. root", id="bucket-root"),
        pytest.param("s3://bucket/", "in.zarr", "s3://bucket/out.zarr", id="bucket-root-slash"),
    ],
)
def test_output_locations_that_touch_the_input_are_refused(
    tmp_path: Path, output: str, source: str, fragment: str
) -> None:
    def where(path: str) -> str:
        return path if "://" in path else str(tmp_path / path)

    with pytest.raises(OutputError, match=fragment) as caught:
        check_output_location(where(output), where(source))
    assert caught.value.key == "output.path"


def test_output_locations_beside_the_input_are_fine(tmp_path: Path) -> None:
    check_output_location(str(tmp_path / "in.zarr-out"), str(tmp_path / "in.zarr"))  # a prefix, not a parent
    check_output_location("memory://b/in.zarr2", "memory://b/in.zarr")
