"""Completion records on their own: markers written and read back, fingerprints, stray files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from convpipe.completion import MARKER_FOLDER, BlockRecorder, block_name, fingerprint


@pytest.fixture(params=["local", "memory"])
def output(request, tmp_path: Path) -> str:
    """An output path on the local disk or on an fsspec URL store."""
    if request.param == "local":
        return str(tmp_path / "out.zarr")
    return f"memory://completion-{tmp_path.name}/out.zarr"


def test_recorded_blocks_read_back(output: str) -> None:
    recorder = BlockRecorder(output)
    assert recorder.done() == set()  # no marker folder yet
    for index in [(0, 0, 0), (3, 1, 2), (10, 0, 11)]:
        recorder(index)
    recorder((3, 1, 2))  # a repeated task records the same block again
    assert BlockRecorder(output + "/").done() == {(0, 0, 0), (3, 1, 2), (10, 0, 11)}


def test_the_recorder_pickles_for_worker_processes(output: str) -> None:
    recorder = pickle.loads(pickle.dumps(BlockRecorder(output)))
    recorder((1, 2))
    assert BlockRecorder(output).done() == {(1, 2)}


def test_markers_live_inside_the_array_folder_where_readers_never_look(tmp_path: Path) -> None:
    BlockRecorder(str(tmp_path / "out.zarr"))((2, 0, 1))
    assert MARKER_FOLDER == "0/.convpipe-done"
    assert [p.name for p in (tmp_path / "out.zarr" / "0" / ".convpipe-done").iterdir()] == ["2.0.1"]
    assert block_name((2, 0, 1)) == "2.0.1"


def test_stray_files_are_not_blocks(tmp_path: Path) -> None:
    recorder = BlockRecorder(str(tmp_path / "out.zarr"))
    recorder((1, 1))
    folder = tmp_path / "out.zarr" / MARKER_FOLDER
    (folder / ".1.2.1234.tmp").write_bytes(b"")  # a marker being written by another process
    (folder / ".DS_Store").write_bytes(b"")
    (folder / "notes.txt").write_text("hello")
    assert recorder.done() == {(1, 1)}


def test_fingerprints_are_stable_and_see_every_field() -> None:
    fields = {"stride": [1, 2], "combine": "none", "input": {"shape": [4, 32, 40]}}
    assert fingerprint(fields) == fingerprint(dict(reversed(list(fields.items()))))  # key order is irrelevant
    assert fingerprint(fields) != fingerprint({**fields, "stride": [2, 1]})
    assert fingerprint(fields) != fingerprint({**fields, "input": {"shape": [4, 32, 41]}})
    assert len(fingerprint(fields)) == 32


def test_records_read_back_with_what_they_hold(output: str) -> None:
    recorder = BlockRecorder(output)
    inputs = {(0, 1): {"0.0": "10:1"}, (2, 3): {"0.1": "12:5"}}
    statistics = {"0": {"min": -1.5, "max": 2.0}}
    recorder.with_inputs(inputs).with_statistics((0, 1), statistics)((0, 1))
    recorder.with_inputs(inputs)((2, 3))  # identities without statistics
    recorder((4, 4))  # an empty marker
    records = BlockRecorder(output).read_all({(0, 1), (2, 3), (4, 4)})
    assert set(records) == {(0, 1), (2, 3), (4, 4)}
    assert (records[(0, 1)].inputs, records[(0, 1)].statistics) == (inputs[(0, 1)], statistics)
    assert (records[(2, 3)].inputs, records[(2, 3)].statistics) == (inputs[(2, 3)], None)
    assert (records[(4, 4)].inputs, records[(4, 4)].statistics) == (None, None)
    assert BlockRecorder(output).read_all(set()) == {}


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"inputs": [], "statistics": "x"}'])
def test_an_unreadable_record_holds_nothing(tmp_path: Path, content: bytes) -> None:
    recorder = BlockRecorder(str(tmp_path / "out.zarr"))
    recorder((0, 0))
    (tmp_path / "out.zarr" / MARKER_FOLDER / "0.0").write_bytes(content)
    record = recorder.read_all({(0, 0)})[(0, 0)]
    assert (record.inputs, record.statistics) == (None, None)
