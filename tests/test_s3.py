"""Object storage, live: input and output in a bucket of a real S3 API (moto's server on 127.0.0.1).

The server is a subprocess (``s3_server`` fixture); the ``s3`` fixture makes a
new bucket and points every S3 client of the test, and of the processes it
starts, at the server through the environment (``AWS_ENDPOINT_URL``, dummy
credentials), so that nothing looks anywhere else. ``convpipe`` runs as the
installed console script, on threads or on a real ``dask scheduler`` with
two ``dask worker`` subprocesses; results are compared with the reference
(tests/reference.py) and byte for byte with uninterrupted runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from helpers import (
    CONVPIPE,
    Bucket,
    DaskCluster,
    assert_same_bytes,
    assert_user_error,
    free_port,
    invoke,
    make_config,
    read_output,
    resumed_counts,
    run_config,
    run_in_process,
    running,
    start_convpipe,
    stderr_of,
    write_yaml,
)
from reference import SOBEL, correlate_loop, magnitude

import convpipe
from convpipe import remote_swap
from convpipe.completion import BlockRecorder
from convpipe.errors import ConfigError, OutputError
from convpipe.paths import filesystem
from convpipe.sample import sample_stack, write_sample

RUN_TIMEOUT = 120.0
SHAPE = (2, 64, 64)  # 2 slabs x 4 blocks of 32 x 32
LONG_SHAPE = (4, 64, 96)  # 24 blocks: long enough on moto to be stopped midway


def upload_sample(s3: Bucket, tmp_path: Path, shape: tuple[int, int, int] = SHAPE) -> str:
    local = tmp_path / "local-in.zarr"
    write_sample(str(local), *shape)
    return s3.upload(local, "in.zarr")


def expected(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    return magnitude(correlate_loop(sample_stack(*shape)[:, None], SOBEL, (1, 1)))


def convpipe_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """The installed ``convpipe`` command, to the end (it inherits the test's S3 environment)."""
    return subprocess.run(
        [CONVPIPE, *map(str, args)], capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=cwd, check=False
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def wait_for_records(s3: Bucket, key: str, at_least: int, proc: subprocess.Popen) -> None:
    recorder, deadline = BlockRecorder(s3.url(key)), time.monotonic() + RUN_TIMEOUT
    while len(recorder.done()) < at_least:
        assert proc.poll() is None, f"the run ended ({proc.returncode}) before {at_least} blocks were written"
        assert time.monotonic() < deadline, f"fewer than {at_least} blocks recorded"
        time.sleep(0.05)


def test_threads_run_from_bucket_to_bucket_gives_the_reference(tmp_path: Path, s3: Bucket) -> None:
    config = make_config(tmp_path / "run.yaml", upload_sample(s3, tmp_path), s3.url("out.zarr"))
    done = convpipe_cli("run", config, "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = s3.read_output("out.zarr")
    np.testing.assert_allclose(result, expected(), rtol=1e-6)
    opened = xr.open_zarr(s3.url("out.zarr"))  # xarray, straight from the bucket
    assert opened["0"].dims == ("t", "y", "x")
    assert_same_bytes(opened["0"].values, result)
    assert s3.objects() == sorted(
        k for k in s3.objects() if k.startswith(("in.zarr/", "out.zarr/"))
    )  # no lock left


def test_cluster_run_from_bucket_to_bucket_gives_the_threads_bytes(tmp_path: Path, s3: Bucket) -> None:
    source = upload_sample(s3, tmp_path)
    run_in_process(tmp_path / "local-in.zarr", tmp_path / "threads.zarr")  # the same run on a local disk
    cluster = DaskCluster(tmp_path / "cluster")
    (tmp_path / "cluster").mkdir()
    try:
        cluster.start()  # the workers inherit the S3 environment
        on_cluster = make_config(tmp_path / "cluster.yaml", source, s3.url("cluster.zarr"))
        done = convpipe_cli("run", on_cluster, "--quiet", "--scheduler", cluster.address, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    finally:
        cluster.stop()
    result = s3.read_output("cluster.zarr")
    assert_same_bytes(result, read_output(tmp_path / "threads.zarr"))
    np.testing.assert_allclose(result, expected(), rtol=1e-6)


def test_killed_run_resumes_to_the_uninterrupted_bytes(tmp_path: Path, s3: Bucket) -> None:
    source = upload_sample(s3, tmp_path, LONG_SHAPE)
    run_in_process(tmp_path / "local-in.zarr", tmp_path / "whole.zarr")  # uninterrupted, on a local disk
    config = make_config(tmp_path / "run.yaml", source, s3.url("out.zarr"))
    with running(start_convpipe(["run", config], tmp_path / "killed")) as proc:
        wait_for_records(s3, "out.zarr", 2, proc)
        proc.kill()
        proc.wait(timeout=30)
    assert "out.zarr.convpipe-lock" in s3.objects()  # a SIGKILL leaves the lock object behind
    resumed = convpipe_cli("run", config, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "took over the lock of a run that is no longer running" in resumed.stderr  # same machine, pid gone
    computed, total = resumed_counts(resumed.stderr)
    assert 0 < computed < total
    assert_same_bytes(s3.read_output("out.zarr"), read_output(tmp_path / "whole.zarr"))
    assert "out.zarr.convpipe-lock" not in s3.objects()


class DroppedPut(Exception):
    """A chunk PUT that never completed (the connection dropped): S3 then stores nothing."""


def test_a_chunk_whose_put_failed_is_not_trusted_on_resume(
    tmp_path: Path, s3: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The completion marker of a block is written only after its chunk PUTs returned."""
    source, output = upload_sample(s3, tmp_path), s3.url("out.zarr")
    original = zarr.storage.FsspecStore.set

    async def set_or_drop(self, key, value, *args, **kwargs):
        if key == "0/c/1/1/1":  # frame 1, tile (1, 1)
            raise DroppedPut(key)
        return await original(self, key, value, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.FsspecStore, "set", set_or_drop)
    with pytest.raises(DroppedPut):
        convpipe.run(run_config(source, output, scheduler="synchronous"), progress=False)
    monkeypatch.setattr(zarr.storage.FsspecStore, "set", original)
    done = BlockRecorder(output).done()
    assert (1, 1, 1) not in done and len(done) >= 4  # the blocks before it were recorded
    summary = convpipe.run(run_config(source, output), resume=True, progress=False)
    assert summary.blocks_computed == 8 - len(done)
    np.testing.assert_allclose(s3.read_output("out.zarr"), expected(), rtol=1e-6)


def test_overwrite_replaces_the_output_and_leaves_nothing_behind(tmp_path: Path, s3: Bucket) -> None:
    source, output = upload_sample(s3, tmp_path), s3.url("out.zarr")
    convpipe.run(run_config(source, output, stride=2), progress=False)
    with pytest.raises(OutputError, match="already exists"):
        convpipe.run(run_config(source, output), progress=False)
    convpipe.run(run_config(source, output), overwrite=True, progress=False)
    np.testing.assert_allclose(s3.read_output("out.zarr"), expected(), rtol=1e-6)
    assert not [k for k in s3.objects() if ".convpipe-" in k.split("/")[0]]


class DroppedCopy(Exception):
    """The connection dropped in the middle of the server-side copies of a swap."""


class HalfCopies:
    """An S3 filesystem whose ``copy`` of many objects copies the first half, then fails."""

    def __init__(self, fs) -> None:
        self.fs = fs

    def __getattr__(self, name: str):
        return getattr(self.fs, name)

    def copy(self, sources, targets, **kwargs):
        half = len(sources) // 2
        self.fs.copy(sources[:half], targets[:half], **kwargs)
        raise DroppedCopy(f"after {half} of {len(sources)} objects")


def test_an_interrupted_swap_is_finished_by_the_next_run(
    tmp_path: Path, s3: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = upload_sample(s3, tmp_path)
    assert convpipe.run(run_config(source, s3.url("out.zarr"), stride=2), progress=False)

    def flaky_filesystem(*args):
        fs, root = filesystem(*args)
        return HalfCopies(fs), root

    with monkeypatch.context() as patched, pytest.raises(DroppedCopy):
        patched.setattr(remote_swap, "filesystem", flaky_filesystem)
        convpipe.run(run_config(source, s3.url("out.zarr")), overwrite=True, progress=False)
    keys = s3.objects()
    assert "out.zarr.convpipe-swap" in keys and "out.zarr/zarr.json" not in keys  # half copied, not visible
    finished = convpipe_cli(
        "run",
        write_yaml(tmp_path / "again.yaml", run_config(source, s3.url("out.zarr"))),
        "--quiet",
        cwd=tmp_path,
    )
    assert finished.returncode == 2  # the plain run finds the output in place, after finishing the swap
    assert "finished an interrupted replacement" in finished.stderr
    np.testing.assert_allclose(s3.read_output("out.zarr"), expected(), rtol=1e-6)
    assert not [k for k in s3.objects() if ".convpipe-" in k.split("/")[0]]


def test_a_second_run_on_the_same_output_is_refused_at_once(tmp_path: Path, s3: Bucket) -> None:
    source = upload_sample(s3, tmp_path)
    config = make_config(tmp_path / "run.yaml", source, s3.url("out.zarr"))
    with running(start_convpipe(["run", config], tmp_path / "first")) as first:
        wait_for_records(s3, "out.zarr", 1, first)
        first.send_signal(signal.SIGSTOP)  # holding the lock, mid-run, for as long as the second run takes
        try:
            message = assert_user_error(
                invoke("run", config, "--resume"), "another convpipe run is using this output"
            )
        finally:
            first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=RUN_TIMEOUT) == 0, stderr_of(tmp_path / "first")
    assert f"pid {first.pid}," in message
    np.testing.assert_allclose(s3.read_output("out.zarr"), expected(), rtol=1e-6)
    assert "out.zarr.convpipe-lock" not in s3.objects()  # released at the end of the run


def test_a_lock_left_by_a_run_elsewhere_is_refused_with_what_to_do(tmp_path: Path, s3: Bucket) -> None:
    source, output, lock = (
        upload_sample(s3, tmp_path),
        s3.url("out.zarr"),
        f"{s3.name}/out.zarr.convpipe-lock",
    )
    holder = {
        "host": "node-17",
        "pid": 4242,
        "started": "2026-01-02T03:04:05+00:00",
        "machine": "node-17/x/y",
    }
    s3.fs.pipe_file(lock, json.dumps(holder).encode())
    with pytest.raises(OutputError) as refused:
        convpipe.run(run_config(source, output), progress=False)
    assert "host node-17, pid 4242, started 2026-01-02T03:04:05+00:00" in str(refused.value)
    assert f"remove {s3.url('out.zarr.convpipe-lock')}" in str(refused.value)
    assert not [k for k in s3.objects() if k.startswith("out.zarr/")]  # nothing written
    s3.fs.rm(lock)  # what the message says to do
    convpipe.run(run_config(source, output), progress=False)
    np.testing.assert_allclose(s3.read_output("out.zarr"), expected(), rtol=1e-6)


def test_storage_options_in_the_config_reach_every_client(tmp_path: Path, s3: Bucket, s3_server) -> None:
    """Endpoint and credentials from ``input/output.storage_options``, with the environment pointing nowhere."""
    source = upload_sample(s3, tmp_path)
    options = {"endpoint_url": s3_server.endpoint, "key": "convpipe-test", "secret": "top-secret-value"}
    config = run_config(source, s3.url("out.zarr"))
    config["input"]["storage_options"] = options
    config["output"]["storage_options"] = dict(options)
    nowhere = {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_ACCESS_KEY_ID": "wrong",
    }
    done = subprocess.run(
        [CONVPIPE, "run", str(write_yaml(tmp_path / "run.yaml", config)), "--quiet"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=tmp_path,
        env=nowhere,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = zarr.open_group(s3.url("out.zarr"), mode="r")["0"]
    np.testing.assert_allclose(result[...], expected(), rtol=1e-6)
    attributes = json.dumps(result.attrs.asdict())
    assert "top-secret-value" not in attributes and "storage_options" not in attributes


def test_inspect_takes_storage_options_from_the_command_line(tmp_path: Path, s3: Bucket, s3_server) -> None:
    """``convpipe inspect URL --storage-option ...`` with the environment pointing nowhere."""
    run_in_process(upload_sample(s3, tmp_path), s3.url("out.zarr"))
    nowhere = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_ACCESS_KEY_ID": "wrong"}

    def inspect(*options: str) -> subprocess.CompletedProcess:
        command = [CONVPIPE, "inspect", s3.url("out.zarr"), "--json", *options]
        return subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=nowhere, check=False)

    assert inspect().returncode != 0  # the environment's endpoint does not answer
    done = inspect(
        "--storage-option", f"endpoint_url={s3_server.endpoint}",
        "--storage-option", "key=convpipe-test",
        "--storage-option", "secret=top-secret-value",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["shape"] == [SHAPE[0], SHAPE[1] - 2, SHAPE[2] - 2]
    assert report["complete"] is True and report["blocks_done"] == report["blocks_total"] > 0
    assert [axis["name"] for axis in report["axes"]] == ["t", "y", "x"]


def test_bad_storage_options_are_one_line(tmp_path: Path, s3: Bucket) -> None:
    config = run_config(s3.url("in.zarr"), s3.url("out.zarr"))
    config["output"]["storage_options"] = ["endpoint_url", "http://x"]
    with pytest.raises(ConfigError, match=r"output\.storage_options: must be a mapping of fsspec options"):
        convpipe.run(config, progress=False)


def test_an_output_store_that_cannot_be_reached_is_one_line(tmp_path: Path, s3: Bucket) -> None:
    config = run_config(upload_sample(s3, tmp_path), "s3://elsewhere/out.zarr")
    config["output"]["storage_options"] = {"endpoint_url": f"http://127.0.0.1:{free_port()}"}  # nothing listens
    message = assert_user_error(invoke("run", write_yaml(tmp_path / "run.yaml", config)), exit_code=1)
    assert message.startswith("s3://elsewhere/out.zarr: cannot reach the store to take the lock")
