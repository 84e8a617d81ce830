"""Running the write tasks on a scheduler, a bounded number of slabs at a time.

The work comes as *jobs*: one list of Delayed write tasks per slab (batch
chunk). Slabs are independent, so keeping only a few in flight bounds memory
by the chunks being worked on, whatever the length of the stack. Progress is
counted in written blocks on stderr, for every scheduler (on a cluster from
the futures, since Dask's local diagnostics do not see them).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait

import dask
import psutil
from dask.callbacks import Callback
from dask.local import get_sync
from dask.multiprocessing import get as get_processes
from dask.threaded import get as get_threads

from convpipe.config import ComputeSpec
from convpipe.errors import ClusterError, ConfigError, ConvpipeError
from convpipe.resources import local_cpus as local_threads  # the local schedulers' threads (tests patch it)

JOBS_PER_THREAD = 2
"""Jobs kept in flight per thread: one running, one ready to start."""


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        disable=not enabled,
        file=sys.stderr,
        unit="block",
        desc="convpipe",
        dynamic_ncols=True,
        mininterval=0.5,
    )


class _HeapTrimmer:
    """Gives the heap's free pages back to the OS (glibc ``malloc_trim``) when the RSS drifts up.

    glibc serves blocks of tens of MiB from its heap once such a buffer has
    been freed (its mmap threshold adapts), and the heap's free pages then
    keep the RSS growing with the number of blocks processed. Trimming after
    every job keeps the peak flat but is slow (freed pages fault in again),
    so the trim runs only when the RSS exceeds by ``DRIFT`` the level it had
    after the first jobs (the working set).
    No-op where ``malloc_trim`` is unavailable.
    """

    DRIFT = 1.05
    WARMUP_JOBS = 8

    def __init__(self) -> None:
        self.jobs = 0
        self.reference = 0
        self.trim = None
        if sys.platform.startswith("linux"):
            import ctypes
            import ctypes.util

            try:
                self.trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
            except (OSError, AttributeError):
                return
            self.process = psutil.Process()

    def job_done(self) -> None:
        if self.trim is None:
            return
        self.jobs += 1
        rss = self.process.memory_info().rss
        if self.jobs <= self.WARMUP_JOBS:
            self.reference = max(self.reference, rss)
        elif rss > self.DRIFT * self.reference:
            self.trim(0)


def run_jobs(jobs: Iterable[list], n_jobs: int, total: int, compute: ComputeSpec, progress: bool) -> None:
    """Compute ``jobs`` on the scheduler named in ``compute``, with a progress bar of ``total`` blocks.

    With fewer jobs (``n_jobs``) than threads (one large image is a single
    slab), the threads scheduler spreads the tasks of each job over every
    thread instead of running each job on one.
    """
    scheduler = compute.scheduler
    if scheduler in ("threads", "processes", "synchronous"):
        with _progress_bar(total, progress) as bar:
            threads = local_threads()
            if scheduler == "processes":  # one process pool for all jobs; Ctrl-C is the parent's to handle
                with ProcessPoolExecutor(threads, initializer=_ignore_ctrl_c) as pool:
                    _run_one_job_at_a_time(jobs, functools.partial(get_processes, pool=pool), bar)
            elif scheduler == "threads" and n_jobs >= threads:
                _run_on_threads(jobs, threads, bar)
            else:  # synchronous, or fewer slabs than threads: each slab over every thread
                _run_one_job_at_a_time(jobs, get_sync if scheduler == "synchronous" else get_threads, bar)
        return
    with distributed_client(compute) as client, _progress_bar(total, progress) as bar:
        _run_on_cluster(client, jobs, compute.retries, bar)


class _Stopped(Exception):
    """Ends a job between two tasks once the run is stopping."""


class _JobHooks(Callback):
    """Per-task hooks of one job on a local scheduler.

    Advances ``bar`` as each write task of the job finishes (not only when the
    whole job, possibly a slab of thousands of blocks, is done), and raises
    :class:`_Stopped` before the next task once ``stop`` is set, so that a job
    running on a pool thread ends promptly on Ctrl-C or on another job's error.
    Passed to ``dask.compute`` as ``callbacks=[hooks._callback]`` (a tuple:
    Dask's global callback registry is not meant for concurrent computes).
    """

    def __init__(self, job: list, bar, stop: threading.Event | None = None, lock=None) -> None:
        super().__init__()
        self.write_keys = {task.key for task in job}
        self.bar = bar
        self.stop = stop
        self.lock = lock or threading.Lock()

    def _pretask(self, key, dsk, state) -> None:
        if self.stop is not None and self.stop.is_set():
            raise _Stopped(key)

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        if key in self.write_keys:
            with self.lock:
                self.bar.update(1)


def _run_one_job_at_a_time(jobs: Iterable[list], scheduler, bar) -> None:
    """Each job on Dask's local ``scheduler`` (synchronous, threads over all threads, or processes).

    Schedulers are passed as functions, not names: Dask looks for a
    distributed client behind a name, which imports ``distributed``.
    """
    trimmer = _HeapTrimmer()
    for job in jobs:
        dask.compute(*job, scheduler=scheduler, callbacks=[_JobHooks(job, bar)._callback])
        trimmer.job_done()


def _run_on_threads(jobs: Iterable[list], threads: int, bar) -> None:
    """Each job runs whole on one thread (synchronous scheduler); the core releases the GIL."""
    stop, lock = threading.Event(), threading.Lock()
    trimmer = _HeapTrimmer()
    with ThreadPoolExecutor(threads, thread_name_prefix="convpipe") as pool:
        pending: set = set()
        try:
            for job in jobs:
                hooks = _JobHooks(job, bar, stop, lock)
                pending.add(pool.submit(dask.compute, *job, scheduler=get_sync, callbacks=[hooks._callback]))
                if len(pending) >= JOBS_PER_THREAD * threads:
                    _drain(pending, FIRST_COMPLETED, trimmer)
            _drain(pending, ALL_COMPLETED, trimmer)
        except BaseException:
            stop.set()  # Ctrl-C or a failed job: running jobs end after their current task
            raise
        finally:
            for future in pending:
                future.cancel()


def _drain(pending: set, return_when, trimmer: _HeapTrimmer) -> None:
    finished, _ = wait(pending, return_when=return_when)
    pending -= finished
    for future in finished:
        future.result()  # raises the job's error, if any
        trimmer.job_done()


def _ignore_ctrl_c() -> None:
    """In worker processes: a terminal's Ctrl-C reaches them too, but the parent stops the run (one line)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_on_cluster(client, jobs: Iterable[list], retries: int, bar) -> None:
    """Submit jobs to the cluster, keeping about two tasks per worker thread in flight.

    Losing the scheduler mid-run is a :class:`ClusterError` (one line), not
    the comm layer's traceback.
    """
    from distributed import as_completed
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError

    threads = max(1, sum(client.nthreads().values()))
    window = as_completed()
    submitted: list = []
    in_flight = 0
    try:
        for job in jobs:
            futures = client.compute(job, retries=retries)
            submitted.extend(futures)
            window.update(futures)
            in_flight += len(futures)
            while in_flight >= JOBS_PER_THREAD * threads:
                _finish_one(window, bar)
                in_flight -= 1
        for _ in range(in_flight):
            _finish_one(window, bar)
    except (CommClosedError, FutureCancelledError) as exc:  # the scheduler went away
        lost = f"the connection to the Dask scheduler at {client.scheduler.address} was lost"
        raise ClusterError.about("compute.scheduler", f"{lost} ({type(exc).__name__})") from None
    finally:
        with contextlib.suppress(OSError, TimeoutError):  # nothing to cancel on a scheduler that is gone
            client.cancel(submitted)


def _finish_one(window, bar) -> None:
    future = next(window)
    future.result()  # raises the task's error, if any
    future.release()
    bar.update(1)


def check_scheduler(address: str, timeout: float) -> dict:
    """The Dask scheduler's identity at ``address`` (its workers too); ConfigError unless it answers in time.

    ``distributed.Client`` waits forever on a port that accepts connections
    but never answers (dask/distributed#8071), so the scheduler is asked for
    its identity here first, under a deadline of convpipe's own, in an event
    loop of its own thread (the caller may be running one, as a notebook does).
    """
    import asyncio
    import socket

    from distributed.comm import connect
    from distributed.comm.addressing import parse_address, parse_host_port

    async def identity() -> object:
        scheme, location = parse_address(address)
        if scheme in ("tcp", "tls"):  # a refused connection fails now, not after Dask's retries
            host, port = parse_host_port(location)
            socket.create_connection((host, port), timeout=timeout).close()
        comm = await connect(address, timeout=timeout)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    with ThreadPoolExecutor(1) as pool:
        try:
            answer = pool.submit(asyncio.run, asyncio.wait_for(identity(), timeout)).result()
        except (asyncio.TimeoutError, TimeoutError):
            silent = f"the Dask scheduler at {address} did not answer within {timeout:g} s"
            raise ConfigError.about("compute.scheduler", f"{silent} (compute.connect_timeout)") from None
        except (OSError, ValueError) as exc:
            raise _cannot_connect(address, exc) from None
    if not isinstance(answer, dict) or answer.get("type") != "Scheduler":
        raise ConfigError.about("compute.scheduler", f"{address} answered, but is not a Dask scheduler")
    return answer


def _cannot_connect(address: str, exc: Exception) -> ConvpipeError:
    message = f"cannot connect to the Dask scheduler at {address} ({exc})"
    return ConfigError.about("compute.scheduler", message)


WORKERS_IGNORE_CTRL_C = (
    "import logging, signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "logging.getLogger('distributed').setLevel(logging.CRITICAL)\n"
)
"""Preloaded into LocalCluster workers: a terminal's Ctrl-C reaches the whole process group, and convpipe
itself stops the run (one line, exit 130) and closes the cluster. The workers ignore it, and keep quiet about
the scheduler going away as they shut down; task errors still reach convpipe through their futures."""


@contextlib.contextmanager
def distributed_client(compute: ComputeSpec) -> Iterator:
    """A ``distributed.Client``: to a running scheduler, or to a new LocalCluster."""
    from distributed import Client, LocalCluster

    if compute.scheduler == "local":
        nanny_log = logging.getLogger("distributed.nanny")
        with (
            _log_level(nanny_log.name, nanny_log.level),  # its level as it is now, back once all is closed
            LocalCluster(
                n_workers=compute.workers,
                threads_per_worker=compute.threads_per_worker,
                processes=True,
                dashboard_address=None,
                # Without a dashboard the scheduler still serves HTTP, by default on 8787: with another
                # Dask cluster running, that gave a "Port 8787 is already in use" warning. Any free port.
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                preload=[WORKERS_IGNORE_CTRL_C],
            ) as cluster,
            Client(cluster) as client,
        ):
            try:
                yield client
            finally:  # tearing down our own cluster: a busy worker "still alive after 4.0 seconds, killing"
                nanny_log.setLevel(logging.ERROR)
        return
    check_scheduler(compute.scheduler, compute.connect_timeout)
    try:
        client = Client(compute.scheduler, timeout=f"{compute.connect_timeout}s")
    except (OSError, TimeoutError) as exc:
        raise _cannot_connect(compute.scheduler, exc) from None
    # A lost scheduler is reported by convpipe in one line (see _run_on_cluster); the client's own
    # reconnection log, and its batched comm's "Batched Comm Closed" (logged at INFO with the
    # traceback when a send was under way), would add tracebacks to it.
    with (
        _log_level("distributed.client", logging.CRITICAL),
        _log_level("distributed.batched", logging.CRITICAL),
        client,
    ):
        yield client


@contextlib.contextmanager
def _log_level(name: str, level: int) -> Iterator[None]:
    """Logger ``name`` at ``level`` for the duration."""
    log = logging.getLogger(name)
    previous = log.level
    log.setLevel(level)
    try:
        yield
    finally:
        log.setLevel(previous)
