"""Nothing the user had is lost: one run at a time per output, swaps that recover, only convpipe's own outputs removed.

Real processes hold the lock and run concurrently; interrupted swaps are
reproduced by leaving the folders exactly where a kill between two renames
leaves them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import CONVPIPE, leftovers, make_config, read_output

import convpipe
from convpipe.completion import MARKER_FOLDER
from convpipe.sample import write_sample

SHAPE = (2, 96, 128)


def config(folder: Path, source: Path, out: str | Path, stride: int = 1, name: str = "run.yaml") -> Path:
    """A sobel-magnitude config on the synchronous scheduler, written to ``folder / name``."""
    return make_config(folder / name, source, out, stride=stride, scheduler="synchronous")


def convpipe_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed ``convpipe`` command."""
    return subprocess.run(
        [CONVPIPE, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def one_error_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    return line


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.zarr"
    write_sample(str(path), *SHAPE)
    return path


def start_lock_holder(output: Path) -> subprocess.Popen:
    """A process that takes the output's lock as a run does, then waits to be killed."""
    code = (
        "import sys, time; from convpipe.locking import output_lock; "
        "held = output_lock(sys.argv[1]); held.__enter__(); print('locked', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(output)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


# --------------------------------------------------------------------------- the lock


def test_a_second_run_is_refused_at_once_and_a_dead_runs_lock_is_taken_over(tmp_path: Path, source: Path) -> None:
    out = tmp_path / "out.zarr"
    cfg = config(tmp_path, source, out)
    holder = start_lock_holder(out)
    try:
        line = one_error_line(convpipe_cli("run", cfg, cwd=tmp_path))
        assert "another convpipe run is using this output" in line
        assert f"pid {holder.pid}," in line and "host " in line and "started " in line
        assert not out.exists()  # refused before anything was written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=30)
    assert (tmp_path / "out.zarr.convpipe-lock").exists()  # a dead run's lock file stays behind...
    result = convpipe_cli("run", cfg, "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr  # ...and is simply free
    assert not (tmp_path / "out.zarr.convpipe-lock").exists()
    assert read_output(out).shape == (2, 94, 126)


def test_two_resumes_of_a_killed_overwrite_never_lose_the_output(tmp_path: Path, source: Path) -> None:
    reference = tmp_path / "reference.zarr"
    convpipe.run(config(tmp_path, source, reference, stride=2, name="ref.yaml"), progress=False)
    out = tmp_path / "out.zarr"
    cfg = config(tmp_path, source, out)
    for attempt in range(3):
        convpipe.run(config(tmp_path, source, out, stride=1, name="old.yaml"), overwrite=True, progress=False)
        cfg = config(tmp_path, source, out, stride=2)
        killed = subprocess.Popen([CONVPIPE, "run", str(cfg), "--overwrite", "-q"], cwd=tmp_path)
        markers = tmp_path / "out.zarr.convpipe-incoming" / MARKER_FOLDER
        while killed.poll() is None and not (markers.is_dir() and any(markers.iterdir())):
            time.sleep(0.001)  # not a busy loop: the machine may have two cores, the run needs one
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        both = [subprocess.Popen([CONVPIPE, "run", str(cfg), "--resume", "-q"], cwd=tmp_path,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(p.wait(timeout=120), p.communicate()[1]) for p in both]
        assert 0 in [code for code, _ in results], results
        for code, stderr in results:
            assert code == 0 or (code == 2 and "another convpipe run is using this output" in stderr), results
        assert read_output(out).tobytes() == read_output(reference).tobytes(), f"attempt {attempt}"
        assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- interrupted swaps


@pytest.fixture
def old_and_new(tmp_path: Path, source: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """``out.zarr`` (stride 1) and a finished replacement (stride 2) beside it, named as a swap names them."""
    out, new = tmp_path / "out.zarr", tmp_path / "new.zarr"
    convpipe.run(config(tmp_path, source, out, name="old.yaml"), progress=False)
    convpipe.run(config(tmp_path, source, new, stride=2, name="new.yaml"), progress=False)
    os.replace(new, tmp_path / "out.zarr.convpipe-incoming")
    return out, read_output(out), read_output(tmp_path / "out.zarr.convpipe-incoming")


def run_and_note(tmp_path: Path, source: Path, out: Path) -> str:
    """A plain run of any config on ``out``: it recovers the swap first, then refuses the existing output."""
    result = convpipe_cli("run", config(tmp_path, source, out, name="any.yaml"), cwd=tmp_path)
    one_error_line(result)  # out.zarr exists again: a plain run does not replace it
    [note] = [line for line in result.stderr.splitlines() if line.startswith("convpipe: ")]
    return note


def test_a_swap_killed_between_its_renames_is_finished_by_the_next_run(tmp_path, source, old_and_new) -> None:
    out, _, new = old_and_new
    os.replace(out, tmp_path / "out.zarr.convpipe-old")  # killed right after the first rename
    note = run_and_note(tmp_path, source, out)
    assert "finished an interrupted replacement" in note
    assert read_output(out).tobytes() == new.tobytes()
    assert leftovers(tmp_path) == []


def test_a_swap_whose_replacement_is_unfinished_gives_the_old_output_back(tmp_path, source, old_and_new) -> None:
    out, old, _ = old_and_new
    incoming = tmp_path / "out.zarr.convpipe-incoming"
    next(iter((incoming / MARKER_FOLDER).iterdir())).unlink()  # one block without its record
    os.replace(out, tmp_path / "out.zarr.convpipe-old")
    note = run_and_note(tmp_path, source, out)
    assert "restored the previous output" in note
    assert read_output(out).tobytes() == old.tobytes()


def test_a_backup_left_after_the_swap_is_removed(tmp_path, source, old_and_new) -> None:
    out, old, _ = old_and_new
    (tmp_path / "out.zarr.convpipe-incoming").rename(tmp_path / "out.zarr.convpipe-old")  # half-removed backup
    note = run_and_note(tmp_path, source, out)
    assert "removed" in note and "convpipe-old" in note
    assert read_output(out).tobytes() == old.tobytes()
    assert not (tmp_path / "out.zarr.convpipe-old").exists()


# --------------------------------------------------------------------------- what --overwrite may remove


@pytest.mark.parametrize("where", ["user-folder", "config-folder", "config-file", "incoming-user-folder"])
def test_overwrite_never_removes_what_convpipe_did_not_write(tmp_path: Path, source: Path, where: str) -> None:
    work = tmp_path / "work"
    (work / "notes").mkdir(parents=True)
    (work / "notes" / "ideas.txt").write_text("keep me")
    out = {
        "user-folder": work / "notes",
        "config-folder": work,
        "config-file": work / "run.yaml",
        "incoming-user-folder": work / "out.zarr",
    }[where]
    cfg = config(work, source, out)
    if where == "incoming-user-folder":
        convpipe.run(cfg, progress=False)  # a real convpipe output, and a user's folder where its replacement goes
        (work / "notes").rename(work / "out.zarr.convpipe-incoming")
    before = tree(work)
    line = one_error_line(convpipe_cli("run", cfg, "--overwrite", cwd=work))
    expected = {
        "user-folder": "is not a convpipe output",
        "config-folder": "holds the config file",
        "config-file": "is the config file",
        "incoming-user-folder": "is not a convpipe output",
    }[where]
    assert expected in line and "output.path" in line
    assert tree(work) == before


def test_overwrite_replaces_an_empty_folder(tmp_path: Path, source: Path) -> None:
    (tmp_path / "out.zarr").mkdir()
    convpipe.run(config(tmp_path, source, tmp_path / "out.zarr"), overwrite=True, progress=False)
    assert read_output(tmp_path / "out.zarr").shape == (2, 94, 126)


# --------------------------------------------------------------------------- leftovers of a killed run


def test_resume_ignores_stray_files_and_removes_partial_chunk_files(tmp_path: Path, source: Path) -> None:
    out = tmp_path / "out.zarr"
    cfg = config(tmp_path, source, out)
    convpipe.run(cfg, progress=False)
    reference = read_output(out)
    markers = out / MARKER_FOLDER
    next(iter(markers.iterdir())).unlink()
    (markers / "1.tmp").write_text("")  # a stray file that looks like a record
    partial = next(out.glob("0/c/*/*/*")).with_suffix(".0123abcd.partial")
    partial.write_bytes(b"half a chunk")
    record = zarr.open_group(str(out), mode="r+")["0"]
    record.attrs["convpipe"] = {**record.attrs["convpipe"], "complete": False}
    summary = convpipe.run(cfg, resume=True, progress=False)
    assert summary.blocks_computed == 1
    assert not partial.exists()
    assert read_output(out).tobytes() == reference.tobytes()


def test_resume_and_overwrite_together_are_one_error(tmp_path: Path, source: Path) -> None:
    line = one_error_line(convpipe_cli("run", config(tmp_path, source, tmp_path / "o.zarr"), "--resume",
                                       "--overwrite", cwd=tmp_path))
    assert "--resume and --overwrite exclude each other" in line
    assert not (tmp_path / "o.zarr").exists()


def test_the_printed_resume_command_survives_a_path_with_spaces(tmp_path: Path, source: Path) -> None:
    from convpipe.runner import resume_command

    folder = tmp_path / "my configs"
    folder.mkdir()
    plan = convpipe.plan(config(folder, source, tmp_path / "o.zarr", name="a b.yaml"))
    command = resume_command(plan, "tcp://h:1")
    assert command == f"convpipe run '{folder / 'a b.yaml'}' --resume --scheduler tcp://h:1"
