"""``workflows/ingest_run_preview.sh`` runs as written, from any folder.

The recipe is run as a subprocess with the environment's ``bin`` first on
PATH, as a user who activated it would; its PNG must show the input beside
the edge magnitude of the middle frame.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import zarr

from convpipe.preview import PANEL_GAP, stretch_to_uint8

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "workflows" / "ingest_run_preview.sh"
FRAMES, HEIGHT, WIDTH = 8, 96, 128  # what the recipe writes


def run_workflow(cwd: Path, *args: str, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    """The recipe as a user runs it: the environment's bin first on PATH, temporary files in ``tmpdir``."""
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    env = {**os.environ, "PATH": path, "TMPDIR": str(tmpdir)}
    return subprocess.run(
        ["bash", str(WORKFLOW), *args],
        cwd=cwd,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


def check_results(work: Path, done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr
    assert "status      complete" in done.stdout  # convpipe inspect
    assert f"preview: {work / 'preview.png'}" in done.stdout

    stack = zarr.open_group(str(work / "stack.zarr"), mode="r")["0"]
    edges = zarr.open_group(str(work / "edges.zarr"), mode="r")["0"]
    assert stack.shape == (FRAMES, HEIGHT, WIDTH)
    assert edges.shape == (FRAMES, HEIGHT - 2, WIDTH - 2)

    image = iio.imread(work / "preview.png")
    assert image.dtype == np.uint8
    assert image.shape[1] == WIDTH + PANEL_GAP + WIDTH  # the edges drawn on the input's grid
    image = image[-HEIGHT:]  # below the labels
    left, right = image[:, :WIDTH], image[1 : HEIGHT - 1, WIDTH + PANEL_GAP + 1 : -1]
    assert left.std() > 0 and right.std() > 0
    middle = FRAMES // 2
    np.testing.assert_array_equal(left, stretch_to_uint8(stack[middle]))
    np.testing.assert_array_equal(right, stretch_to_uint8(edges[middle]))  # centred on their 3x3 windows


def test_workflow_from_another_folder_into_a_new_temporary_folder(tmp_path: Path) -> None:
    elsewhere, temporary = tmp_path / "elsewhere", tmp_path / "tmp"
    elsewhere.mkdir()
    temporary.mkdir()
    done = run_workflow(elsewhere, tmpdir=temporary)  # no argument: a mktemp folder under $TMPDIR
    [work] = temporary.iterdir()
    assert work.name.startswith("convpipe-workflow.")
    assert f"working in {work}" in done.stdout
    check_results(work, done)
    assert sorted(p.name for p in (work / "frames").iterdir()) == [f"frame{i:02d}.png" for i in range(FRAMES)]
    assert not any(elsewhere.iterdir())  # nothing written where it was started
