"""A scheduler lost mid-run is one line with the resume command, and the resume on a new cluster finishes the run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zarr

import convpipe
from convpipe.sample import write_sample

DASK = str(Path(sys.executable).parent / "dask")
CONVPIPE = str(Path(sys.executable).parent / "convpipe")


def start_cluster(folder: Path) -> tuple[str, list[subprocess.Popen]]:
    """A ``dask scheduler`` and one ``dask worker`` on 127.0.0.1; its address and the processes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "scheduler.log").open("w") as scheduler_log, (folder / "worker.log").open("w") as worker_log:
        scheduler = subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL, stderr=scheduler_log,
        )
        worker = subprocess.Popen(
            [DASK, "worker", address, "--nthreads", "1", "--no-nanny", "--dashboard-address", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL, stderr=worker_log,
        )
    deadline = time.monotonic() + 60
    while "Registered to" not in (folder / "worker.log").read_text():
        assert time.monotonic() < deadline, (folder / "worker.log").read_text()
        time.sleep(0.1)
    return address, [worker, scheduler]


def stop(processes: list[subprocess.Popen]) -> None:
    for proc in processes:
        proc.kill()
        proc.wait(timeout=30)


def test_a_lost_scheduler_is_one_line_and_the_run_resumes_elsewhere(tmp_path: Path) -> None:
    source, out = tmp_path / "in.zarr", tmp_path / "out.zarr"
    write_sample(str(source), 48, 128, 128)
    config = tmp_path / "run.yaml"
    address, cluster = start_cluster(tmp_path / "first")
    try:
        config.write_text(
            f"input: {{path: '{source}'}}\nkernels: sobel\ncombine: magnitude\noutput: {{path: '{out}'}}\n"
            f"compute: {{chunks: [64, 64], scheduler: '{address}'}}\n"
        )
        run = subprocess.Popen([CONVPIPE, "run", str(config)], stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        markers = out / "0" / ".convpipe-done"
        while run.poll() is None and not (markers.is_dir() and len(os.listdir(markers)) >= 3):
            time.sleep(0.02)
        cluster[1].kill()  # the scheduler goes away mid-run
        _, stderr = run.communicate(timeout=120)
    finally:
        stop(cluster)
    assert run.returncode == 1, stderr
    assert "Traceback" not in stderr
    [line] = [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("error: ")]
    assert f"compute.scheduler: the connection to the Dask scheduler at {address} was lost" in line
    assert f"resume with: convpipe run {config} --resume" in line

    convpipe.run(config, resume=True, scheduler="threads", progress=False)
    fresh = tmp_path / "fresh.zarr"
    convpipe.run({**_mapping(source, fresh)}, progress=False)
    assert zarr.open_group(str(out))["0"][...].tobytes() == zarr.open_group(str(fresh))["0"][...].tobytes()


def _mapping(source: Path, out: Path) -> dict:
    return {
        "input": {"path": str(source)},
        "kernels": "sobel",
        "combine": "magnitude",
        "output": {"path": str(out)},
        "compute": {"chunks": [64, 64]},
    }


@pytest.mark.parametrize("scheduler", ["processes", "local"])
def test_ctrl_c_on_worker_processes_is_one_line(tmp_path: Path, scheduler: str) -> None:
    """A terminal's Ctrl-C goes to the whole process group: workers included."""
    source, out = tmp_path / "in.zarr", tmp_path / "out.zarr"
    write_sample(str(source), 48, 128, 128)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"input: {{path: '{source}'}}\nkernels: sobel\noutput: {{path: '{out}'}}\n"
        f"compute: {{chunks: [64, 64], scheduler: {scheduler}}}\n"
    )
    run = subprocess.Popen([CONVPIPE, "run", str(config), "-q"], stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                           start_new_session=True)
    markers = out / "0" / ".convpipe-done"
    while run.poll() is None and not (markers.is_dir() and len(os.listdir(markers)) >= 3):
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    assert stderr.strip().splitlines() == [
        f"interrupted; finished blocks are kept. Resume with: convpipe run {config} --resume"
    ]
    assert convpipe.run(config, resume=True, scheduler="threads", progress=False).blocks_computed > 0
