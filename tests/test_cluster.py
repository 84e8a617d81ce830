"""Running on a Dask cluster: a real ``dask scheduler`` and ``dask worker`` subprocesses on 127.0.0.1.

The cluster processes are started from this virtualenv's ``dask`` command,
each in its own process group, with bounded waits, and are always killed by
the fixture's finaliser. ``convpipe run --scheduler tcp://...`` (or
``compute.scheduler`` in the config) runs in process through ``CliRunner``,
or as a real subprocess where a signal has to reach it (Ctrl-C) or where it
must keep running while the test kills a worker. Every result is compared
byte for byte with the threaded run of the same config.

``compute.scheduler: local`` and ``compute.retries`` are checked in process.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import tifffile
from helpers import (
    SMALL_SHAPE,
    DaskCluster,
    Stack,
    assert_same_bytes,
    interrupted_run,
    invoke,
    make_config,
    output_record,
    read_output,
    resumed_counts,
    run_config,
    run_in_process,
    running,
    shared_stack,
    start_convpipe,
    stderr_of,
    wait_for_markers,
    wait_until_settled,
)

import convpipe
from convpipe.completion import BlockRecorder
from convpipe.sample import sample_stack, write_sample

ONE_FRAME = (1, 96, 128)  # one slab of 12 blocks
# One slab of 256 blocks: some 5 s on two single-threaded workers, long enough to lose one midway.
BIG_SHAPE = (1, 512, 512)
RUN_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """One cluster shared by the tests of this module that do not harm it."""
    shared = DaskCluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield shared.start()
    finally:
        shared.stop()


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return shared_stack(tmp_path_factory, BIG_SHAPE)


@contextlib.contextmanager
def occupied_port(port: int) -> Iterator[None]:
    """Listen on ``port`` (all interfaces) for the duration, unless someone else already does."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(OSError):  # already taken: just as good
            holder.bind(("0.0.0.0", port))
            holder.listen()
        yield
    finally:
        holder.close()


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections (the kernel's backlog) but never answers."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]
    finally:
        server.close()


def run_cli(*args: str | Path) -> tuple[int, str]:
    """``convpipe ARGS`` in process (CliRunner); exit code and stderr, progress bar updates split at ``\\r``."""
    result = invoke(*args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr.replace("\r", "\n")


def progress_reached(stderr: str, total: int) -> bool:
    """The bar ended at ``total/total``: it counted each write task once, and only those."""
    return any(
        line.startswith("convpipe: 100%") and f"| {total}/{total} [" in line for line in stderr.splitlines()
    )


# --------------------------------------------------------------------------- same bits as the threaded run


@pytest.mark.parametrize("how", ["--scheduler", "compute.scheduler"])
def test_cluster_run_gives_the_threaded_bits(tmp_path: Path, cluster: DaskCluster, how: str) -> None:
    source = tmp_path / "in.zarr"
    write_sample(str(source), *ONE_FRAME)
    run_in_process(source, tmp_path / "threaded.zarr")
    out = tmp_path / "out.zarr"
    if how == "--scheduler":
        code, stderr = run_cli(
            "run", make_config(tmp_path / "run.yaml", source, out), "--scheduler", cluster.address
        )
    else:
        code, stderr = run_cli(
            "run", make_config(tmp_path / "run.yaml", source, out, scheduler=cluster.address)
        )
    assert code == 0, stderr
    blocks = output_record(out)["blocks"]
    assert blocks == 12
    assert progress_reached(stderr, blocks), stderr  # the bar follows the futures
    assert stderr.strip().splitlines()[-1].startswith("done: 1 frame(s)")
    assert output_record(out)["complete"] is True
    assert_same_bytes(read_output(out), read_output(tmp_path / "threaded.zarr"))


def test_several_slabs_on_the_cluster_give_the_threaded_bits(tmp_path: Path, cluster: DaskCluster) -> None:
    source = tmp_path / "in.zarr"
    write_sample(str(source), *SMALL_SHAPE)  # two frames: two slabs, submitted one after the other
    run_in_process(source, tmp_path / "threaded.zarr")
    out = tmp_path / "out.zarr"
    code, stderr = run_cli(
        "run", make_config(tmp_path / "run.yaml", source, out), "--scheduler", cluster.address
    )
    assert code == 0, stderr
    assert progress_reached(stderr, output_record(out)["blocks"]), stderr
    assert_same_bytes(read_output(out), read_output(tmp_path / "threaded.zarr"))


def test_tiff_input_runs_on_the_cluster(tmp_path: Path, cluster: DaskCluster) -> None:
    """Image files are read inside the tasks: nothing unpicklable travels to the worker processes."""
    source = tmp_path / "stack.tif"
    tifffile.imwrite(source, sample_stack(*ONE_FRAME))
    run_in_process(source, tmp_path / "threaded.zarr")
    out = tmp_path / "out.zarr"
    code, stderr = run_cli(
        "run", make_config(tmp_path / "run.yaml", source, out), "--scheduler", cluster.address
    )
    assert code == 0, stderr
    assert_same_bytes(read_output(out), read_output(tmp_path / "threaded.zarr"))


def test_resume_on_the_cluster_after_a_local_crash(tmp_path: Path, cluster: DaskCluster) -> None:
    source, out = tmp_path / "in.zarr", tmp_path / "out.zarr"
    write_sample(str(source), *ONE_FRAME)
    run_in_process(source, tmp_path / "threaded.zarr")
    interrupted_run(source, out, recorded=4)
    code, stderr = run_cli(
        "run", make_config(tmp_path / "run.yaml", source, out), "--resume", "--scheduler", cluster.address
    )
    assert code == 0, stderr
    assert resumed_counts(stderr) == (8, 12)
    assert progress_reached(stderr, 8), stderr
    assert_same_bytes(read_output(out), read_output(tmp_path / "threaded.zarr"))


def test_ctrl_c_on_the_cluster_exits_130_and_resumes_anywhere(
    tmp_path: Path, cluster: DaskCluster, big: Stack
) -> None:
    out = tmp_path / "out.zarr"
    config = make_config(tmp_path / "run.yaml", big.input, out)
    with running(start_convpipe(["run", config, "--scheduler", cluster.address], tmp_path / "logs")) as proc:
        wait_for_markers(out, 5, proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    stderr = stderr_of(tmp_path / "logs")
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted; finished blocks are kept. Resume with: convpipe run {config} --resume "
        f"--scheduler {cluster.address}"
    )
    recorded = wait_until_settled(out)  # a task already running on a worker may still finish
    assert 0 < len(recorded) < big.blocks

    # The fingerprint ignores where blocks were computed: finish on the local threads.
    summary = convpipe.run(config, resume=True, progress=False)
    assert (summary.blocks_computed, summary.blocks_total) == (big.blocks - len(recorded), big.blocks)
    assert_same_bytes(read_output(out), big.reference)


# --------------------------------------------------------------------------- losing a worker


def test_run_survives_a_worker_killed_mid_run(tmp_path: Path, cluster: DaskCluster, big: Stack) -> None:
    """A worker busy with a real run is SIGKILLed; a newcomer keeps the shared cluster at two workers."""
    victim_name, victim = next((f"worker-{i}", w) for i, w in enumerate(cluster.workers) if w.poll() is None)
    cluster.wait_for_worker(cluster.add_worker())
    out = tmp_path / "out.zarr"
    config = make_config(tmp_path / "run.yaml", big.input, out)
    with running(start_convpipe(["run", config, "--scheduler", cluster.address], tmp_path / "logs")) as proc:
        wait_for_markers(out, 24, proc)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        done_at_kill = len(BlockRecorder(str(out)).done())
        assert proc.poll() is None and done_at_kill < big.blocks, (
            "the run finished before the worker was killed; make BIG_SHAPE bigger"
        )
        code = proc.wait(timeout=RUN_TIMEOUT)
    stderr = stderr_of(tmp_path / "logs")
    assert code == 0, stderr
    assert progress_reached(stderr, big.blocks), stderr
    scheduler_log = cluster.log("scheduler.log")
    assert re.search(rf"Remove worker addr: \S+ name: {victim_name} ", scheduler_log), scheduler_log
    # The victim had finished blocks whose results it held: the scheduler ran them again elsewhere.
    assert "caused the cluster to lose already computed task(s)" in scheduler_log, scheduler_log
    assert output_record(out)["complete"] is True
    assert len(BlockRecorder(str(out)).done()) == big.blocks
    assert_same_bytes(read_output(out), big.reference)


@pytest.mark.parametrize("how", ["--scheduler", "compute.scheduler"])
def test_a_scheduler_that_never_answers_is_refused_before_anything_is_written(tmp_path: Path, how: str) -> None:
    source, out = tmp_path / "in.zarr", tmp_path / "out.zarr"
    write_sample(str(source), *ONE_FRAME)
    with silent_port() as port:
        address = f"tcp://127.0.0.1:{port}"
        if how == "--scheduler":
            config = make_config(tmp_path / "run.yaml", source, out, connect_timeout=1)
            code, stderr = run_cli("run", config, "--scheduler", address)
        else:
            config = make_config(tmp_path / "run.yaml", source, out, scheduler=address, connect_timeout=1)
            code, stderr = run_cli("run", config)
    assert code == 2, stderr
    assert stderr.strip().splitlines() == [
        f"error: compute.scheduler: the Dask scheduler at {address} did not answer within 1 s (compute.connect_timeout)"
    ]
    assert not out.exists()  # nothing to be refused as "unfinished" by the next plain run


@pytest.mark.parametrize("address", ["tcp://h:notaport", "tcp://", "foo://bar", "tcp://127.0.0.1:1"])
def test_a_bad_scheduler_address_is_one_line(tmp_path: Path, address: str) -> None:
    source, out = tmp_path / "in.zarr", tmp_path / "out.zarr"
    write_sample(str(source), *ONE_FRAME)
    code, stderr = run_cli("run", make_config(tmp_path / "run.yaml", source, out), "--scheduler", address)
    assert code == 2, stderr
    [line] = stderr.strip().splitlines()
    assert line.startswith(f"error: compute.scheduler: cannot connect to the Dask scheduler at {address} (")
    assert not out.exists()


# --------------------------------------------------------------------------- the local schedulers


@pytest.mark.parametrize("scheduler", ["threads", "processes", "synchronous"])
def test_progress_bar_counts_every_block_on_the_local_schedulers(tmp_path: Path, scheduler: str) -> None:
    source, out = tmp_path / "in.zarr", tmp_path / "out.zarr"
    write_sample(str(source), *SMALL_SHAPE)  # two slabs
    code, stderr = run_cli("run", make_config(tmp_path / "run.yaml", source, out, scheduler=scheduler))
    assert code == 0, stderr
    assert progress_reached(stderr, output_record(out)["blocks"]), stderr


# --------------------------------------------------------------------------- LocalCluster and retries


def test_local_scheduler_starts_a_local_cluster_of_the_configured_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import distributed

    sizes: list[dict[str, int]] = []

    class RecordingCluster(distributed.LocalCluster):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            sizes.append({name: worker.nthreads for name, worker in self.workers.items()})

    monkeypatch.setattr(distributed, "LocalCluster", RecordingCluster)
    source, out = tmp_path / "in.zarr", tmp_path / "out.zarr"
    write_sample(str(source), *ONE_FRAME)
    run_in_process(source, tmp_path / "threaded.zarr")
    config = make_config(
        tmp_path / "run.yaml", source, out, scheduler="local", workers=1, threads_per_worker=2
    )
    with occupied_port(8787):  # as when another Dask cluster runs: no "Port 8787 is already in use" warning
        convpipe.run(config, progress=True)
    assert sizes == [{0: 2}]  # not the default for this machine (2 workers x 1 thread)
    assert progress_reached(capsys.readouterr().err.replace("\r", "\n"), 12)
    assert_same_bytes(read_output(out), read_output(tmp_path / "threaded.zarr"))


@pytest.fixture(scope="module")
def in_process_cluster() -> Iterator[str]:
    """A LocalCluster of threads in this process, so that tasks see monkeypatched code."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # not 8787, which may be taken
    ) as local:
        yield local.scheduler_address


@pytest.mark.parametrize(("retries", "succeeds"), [(None, True), (1, False)], ids=["default-2", "1"])
def test_retries(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    in_process_cluster: str,
    retries: int | None,
    succeeds: bool,
) -> None:
    """Block (0, 1, 1) fails twice: enough with the default 2 retries, too much with 1."""
    failures: list[tuple[int, ...]] = []
    lock = threading.Lock()
    original = BlockRecorder.__call__

    def fail_twice(self, index):
        with lock:
            if tuple(index) == (0, 1, 1) and len(failures) < 2:
                failures.append(index)
                raise OSError(f"injected failure {len(failures)} of block {index}")
        return original(self, index)

    monkeypatch.setattr(BlockRecorder, "__call__", fail_twice)
    source, out = tmp_path / "in.zarr", tmp_path / "out.zarr"
    write_sample(str(source), *ONE_FRAME)
    compute = {} if retries is None else {"retries": retries}
    plan = convpipe.plan(run_config(source, out, **compute))
    assert plan.config.compute.retries == (2 if retries is None else retries)
    if succeeds:
        convpipe.run(plan, scheduler=in_process_cluster, progress=False)
        assert len(failures) == 2
        monkeypatch.undo()
        run_in_process(source, tmp_path / "threaded.zarr")
        assert_same_bytes(read_output(out), read_output(tmp_path / "threaded.zarr"))
    else:
        with pytest.raises(OSError, match="injected failure 2"):
            convpipe.run(plan, scheduler=in_process_cluster, progress=False)
        assert output_record(out)["complete"] is False
        assert (0, 1, 1) not in BlockRecorder(str(out)).done()
