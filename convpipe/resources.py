"""Plans that cannot run well, caught before they start: memory per task against what is there, task counts.

The estimate is the plan's own (:meth:`convpipe.planner.Plan.task_memory`:
one input block with its halo and a float copy, the responses, the output
block), times the tasks that run at once. Nothing is materialised to get it.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any

import psutil

MANY_TASKS = 20_000
SMALL_TASK_BYTES = 2**20
"""More tasks than this, each under this size, spend their time in Dask's per-task overhead (~1 ms each)."""

MEMORY_HEADROOM = 0.6
"""A worker pauses at 80 % of its memory limit (Dask's default) and spills from 70 %: stay below 60 %."""


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _size(n: int) -> str:
    return f"{n:,} bytes" if n < 2**10 else f"{n / 2**10:,.0f} KiB"


def task_count_warning(n_tasks: int, task_bytes: int) -> str | None:
    """One line when the plan cuts the work into very many very small tasks, else None."""
    if n_tasks <= MANY_TASKS or task_bytes >= SMALL_TASK_BYTES:
        return None
    return (
        f"compute.chunks: {n_tasks:,} tasks of ~{_size(task_bytes)} each; Dask's overhead per task "
        "will dominate the run: use larger compute.chunks, or null for the automatic choice"
    )


def local_cpus() -> int:
    """The CPUs this process may use, counted as Dask counts them (``dask.system.CPU_COUNT``).

    The affinity mask (psutil's where ``os`` has none), then a cgroup CPU
    quota rounded up: a container or batch job given 4 of a node's 64 cores
    gets 4. Counted here so that planning (``convpipe validate``) need not
    import Dask for this number alone; ``tests/test_startup.py`` checks
    that both counts agree.
    """
    if hasattr(os, "process_cpu_count"):  # Python 3.13: honours the affinity mask
        count = os.process_cpu_count() or 1
    elif hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:
        count = os.cpu_count() or 1
    process = psutil.Process()
    if hasattr(process, "cpu_affinity"):  # not on macOS
        count = min(count, len(process.cpu_affinity() or range(count)))
    quota, period = _cgroup_cpu_quota()
    if quota is not None and period and quota > 0:
        count = min(count, math.ceil(quota / period))
    return count


def _cgroup_cpu_quota() -> tuple[int | None, int | None]:
    """``(quota, period)`` of this process's cgroup (v1 or v2), or ``(None, None)`` without a quota."""
    for folder in ("cpuacct,cpu", "cpu,cpuacct"):  # cgroup v1: either name
        v1 = Path("/sys/fs/cgroup", folder)
        with contextlib.suppress(OSError, ValueError):
            return int((v1 / "cpu.cfs_quota_us").read_text()), int((v1 / "cpu.cfs_period_us").read_text())
    with contextlib.suppress(OSError, ValueError):  # cgroup v2
        group = Path("/proc/self/cgroup").read_text().strip().split(":")[-1].strip("/")
        quota, period = map(int, Path("/sys/fs/cgroup", group, "cpu.max").read_text().split(" "))
        return quota, period
    return None, None


def local_memory_problem(task_bytes: int, threads: int) -> str | None:
    """Why the tasks in flight on this machine cannot fit in the memory available now, or None."""
    need, available = task_bytes * threads, psutil.virtual_memory().available
    if need <= available:
        return None
    return (
        f"each task needs ~{_mib(task_bytes)} and {threads} run at once (~{_mib(need)}), more than the "
        f"{_mib(available)} available; use smaller compute.chunks"
    )


def worker_memory_problem(task_bytes: int, workers: dict[str, Any]) -> str | None:
    """Why a cluster's workers (as its scheduler describes them) cannot hold the tasks, or None."""
    for address, worker in sorted(workers.items()):
        limit, threads = worker.get("memory_limit") or 0, worker.get("nthreads") or 1
        need = task_bytes * threads
        if limit and need > MEMORY_HEADROOM * limit:
            return (
                f"the worker {address} has a memory limit of {_mib(limit)} for {threads} thread(s), but its "
                f"tasks need ~{_mib(need)} at once; give workers more memory or use smaller compute.chunks"
            )
    return None
