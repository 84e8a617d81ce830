"""Running the write tasks on a scheduler, with a progress bar on stderr.

Local schedulers (threads, processes, synchronous) report progress through a
Dask callback; distributed clusters (``local`` or ``tcp://...``) through the
futures of the write tasks, since Dask's local diagnostics do not see them.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import dask
import dask.array as da
from dask.callbacks import Callback

from convpipe.config import ComputeSpec


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


class _WriteCounter(Callback):
    """Advances a progress bar each time one of the ``keys`` (write tasks) finishes."""

    def __init__(self, bar, keys: set) -> None:
        super().__init__()
        self.bar = bar
        self.keys = keys

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        if key in self.keys:
            self.bar.update(1)


def compute_tokens(
    tokens: da.Array, blocks: list[tuple[int, ...]], compute: ComputeSpec, progress: bool = True
) -> None:
    """Compute the write tasks of ``tokens`` at the block indices ``blocks``.

    Runs on the scheduler named in ``compute`` with a progress bar on stderr.
    """
    scheduler = compute.scheduler
    per_block = tokens.to_delayed()
    selected = [per_block[index] for index in blocks]
    with _progress_bar(len(selected), progress) as bar:
        if scheduler in ("threads", "processes", "synchronous"):
            with _WriteCounter(bar, {block.key for block in selected}):
                dask.compute(*selected, scheduler=scheduler)
            return
        with distributed_client(compute) as client:
            _compute_on_cluster(client, selected, compute.retries, bar)


@contextlib.contextmanager
def distributed_client(compute: ComputeSpec) -> Iterator:
    """A ``distributed.Client``: to a running scheduler, or to a new LocalCluster."""
    from distributed import Client, LocalCluster

    from convpipe.errors import ConfigError

    if compute.scheduler == "local":
        with LocalCluster(
            n_workers=compute.workers,
            threads_per_worker=compute.threads_per_worker,
            processes=True,
            dashboard_address=None,
        ) as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(compute.scheduler, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise ConfigError(
            f"compute.scheduler: cannot connect to the Dask scheduler at {compute.scheduler} ({exc})"
        ) from None
    with client:
        yield client


def _compute_on_cluster(client, blocks: list, retries: int, bar) -> None:
    from distributed import as_completed

    futures = client.compute(blocks, retries=retries)
    try:
        for future in as_completed(futures):
            future.result()  # raises the task's error, if any
            bar.update(1)
    finally:
        client.cancel(futures)
