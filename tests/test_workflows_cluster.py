"""``workflows/cluster_run.sh``: the cluster recipe runs end to end and leaves nothing behind.

The script is run as a real subprocess in its own process group, with this
virtualenv first on PATH and TMPDIR inside the test's folder, so that a
leftover process (anything still in the group) or a leftover temporary
folder is seen; the finaliser kills the group whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import zarr

import convpipe

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "workflows" / "cluster_run.sh"
TIMEOUT = 180


def live_processes_in_group(pgid: int, grace: float = 10.0) -> list[str]:
    """Live (not zombie) processes of group ``pgid``, after up to ``grace`` seconds for them to end.

    A worker started by a nanny may be reaped by init a moment after the script
    is gone; a zombie has exited already and does not count.
    """
    deadline = time.monotonic() + grace
    while True:
        live = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                text = stat.read_text()
                comm_end = text.rindex(")")
                state, _ppid, group = text[comm_end + 2 :].split()[:3]
                if int(group) == pgid and state != "Z":
                    live.append(f"{stat.parent.name} {(stat.parent / 'cmdline').read_bytes()!r}")
        if not live or time.monotonic() > deadline:
            return live
        time.sleep(0.2)


@dataclass(frozen=True)
class ScriptRun:
    returncode: int
    stdout: str
    stderr: str
    pid: int  # also the id of its process group


@pytest.fixture
def run_script(tmp_path: Path) -> Iterator[Callable[..., ScriptRun]]:
    """``run_script(*args, **env)``: run the recipe to the end; kill its process group afterwards."""
    started: list[subprocess.Popen] = []

    def run(*args: str, **env: str) -> ScriptRun:
        (tmp_path / "tmp").mkdir(exist_ok=True)
        environment = dict(
            os.environ,
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            TMPDIR=str(tmp_path / "tmp"),
            **env,
        )
        proc = subprocess.Popen(
            ["bash", str(SCRIPT), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=environment,
            start_new_session=True,
        )
        started.append(proc)
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
        return ScriptRun(proc.returncode, stdout, stderr, proc.pid)

    yield run
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def threaded_sobel(output: Path) -> np.ndarray:
    """configs/sobel.yaml on the threads scheduler, written to ``output``."""
    config = convpipe.load_config(REPO / "configs" / "sobel.yaml")
    config = replace(config, output=replace(config.output, path=str(output)))
    convpipe.run(config, progress=False)
    return zarr.open_group(str(output), mode="r")["0"][...]


def test_recipe_runs_the_sobel_config_on_a_local_cluster(tmp_path: Path, run_script) -> None:
    out = tmp_path / "result" / "sobel.zarr"
    result = run_script(str(out))
    assert result.returncode == 0, result.stderr
    assert "scheduler at tcp://127.0.0.1:" in result.stderr
    assert "2 workers registered" in result.stderr
    assert "done: 16 frame(s)" in result.stderr
    assert "status      complete" in result.stdout  # the convpipe inspect report

    array = zarr.open_group(str(out), mode="r")["0"]
    assert array.attrs["convpipe"]["complete"] is True
    expected = threaded_sobel(tmp_path / "threaded.zarr")
    assert array[...].tobytes() == expected.tobytes()

    assert live_processes_in_group(result.pid) == []  # the cluster did not outlive the recipe
    assert list((tmp_path / "tmp").iterdir()) == []  # its temporary folder is gone


def test_recipe_tears_the_cluster_down_when_the_run_fails(tmp_path: Path, run_script) -> None:
    result = run_script(str(tmp_path / "out.zarr"), CONVPIPE="false")
    assert result.returncode != 0
    assert "--- scheduler.log" in result.stderr  # the logs are shown on failure
    assert live_processes_in_group(result.pid) == []
    assert list((tmp_path / "tmp").iterdir()) == []
    assert not (tmp_path / "out.zarr").exists()
