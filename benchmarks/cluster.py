"""Cluster overhead: ``convpipe run`` on a real Dask scheduler + workers against the threaded scheduler.

    python benchmarks/cluster.py [--frames 32] [--size 2048] [--workers 2] [--repeats 3]

Starts ``dask scheduler`` and ``--workers`` single-threaded ``dask worker``
processes on 127.0.0.1 (so both schedulers use the same cores), then times
whole ``convpipe run`` processes on the benchmark stack of ``--frames``
frames and on one 4x longer, with the threaded scheduler and with the
cluster, interleaved, median of ``--repeats``. From the two lengths it
separates, for each scheduler, the fixed cost of a run (start-up, imports,
the first contact with the workers) from the steady-state time per frame,
and prints their ratios. Every output is checked against the reference on
its first and last frame. The cluster's first run (workers that have not
yet loaded the kernel) is timed on its own.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from benchdata import ensure_stack  # noqa: E402
from checks import Reference, check_stack_output  # noqa: E402
from convpipe_rows import config_text, open_output, run_command  # noqa: E402

STARTUP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """A ``dask scheduler`` and single-threaded ``dask worker`` processes on 127.0.0.1, logs in ``folder``."""

    def __init__(self, folder: Path, workers: int) -> None:
        self.folder, self.port, self.processes = folder, free_port(), []
        self.address = f"tcp://127.0.0.1:{self.port}"
        dask = [str(Path(sys.executable).parent / "dask")]
        self._start(dask + ["scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"],
                    "scheduler", "Scheduler at:")
        for index in range(workers):
            self._start(dask + ["worker", self.address, "--host", "127.0.0.1", "--nthreads", "1",
                                "--no-dashboard", "--no-nanny", "--name", f"worker-{index}"],
                        f"worker-{index}", "Registered to:")

    def _start(self, command: list[str], name: str, ready: str) -> None:
        log = self.folder / f"{name}.log"
        with log.open("wb") as sink:
            self.processes.append(subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while ready not in log.read_text(errors="replace"):
            if time.monotonic() > deadline or self.processes[-1].poll() is not None:
                self.stop()
                sys.exit(f"{name} did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def timed_run(stack: Path, scratch: Path, scheduler: str | None, reference: Reference | None = None) -> float:
    """Wall seconds of one whole ``convpipe run`` process (output checked when ``reference`` is given)."""
    output = scratch / "out.zarr"
    shutil.rmtree(output, ignore_errors=True)
    config = scratch / "run.yaml"
    config.write_text(config_text(stack, output, 1))
    command = run_command(config) + (["--scheduler", scheduler] if scheduler else [])
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    if reference is not None:
        check_stack_output(f"convpipe on {scheduler or 'threads'}", open_output(output), reference)
    shutil.rmtree(output, ignore_errors=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=REPO / "bench-data")
    args = parser.parse_args()
    lengths = (args.frames, 4 * args.frames)
    stacks = {n: ensure_stack(args.data_dir, n, args.size, 1024, 0) for n in lengths}
    with tempfile.TemporaryDirectory(dir=args.data_dir) as folder:
        scratch = Path(folder)
        cluster = Cluster(scratch, args.workers)
        try:
            first = timed_run(stacks[lengths[0]], scratch, cluster.address, Reference(stacks[lengths[0]]))
            for n in lengths:  # warm-ups, checked
                timed_run(stacks[n], scratch, None, Reference(stacks[n]))
                timed_run(stacks[n], scratch, cluster.address, Reference(stacks[n]))
            times: dict[tuple[str, int], list[float]] = {}
            for _ in range(args.repeats):
                for n in lengths:
                    for name, scheduler in (("threads", None), ("cluster", cluster.address)):
                        times.setdefault((name, n), []).append(timed_run(stacks[n], scratch, scheduler))
        finally:
            cluster.stop()
    small, large = lengths
    print(f"convpipe run, Sobel magnitude, {args.size}^2 uint16 frames, whole processes, median of {args.repeats}")
    print(f"cluster: dask scheduler + {args.workers} single-threaded workers on 127.0.0.1; threads: the local pool")
    print(f"  {'scheduler':<10} {f'{small} frames s':>14} {f'{large} frames s':>14} {'fixed s':>9} {'ms/frame':>9}")
    steady = {}
    for name in ("threads", "cluster"):
        t_small, t_large = (statistics.median(times[(name, n)]) for n in lengths)
        per_frame = (t_large - t_small) / (large - small)
        steady[name] = per_frame
        print(f"  {name:<10} {t_small:14.2f} {t_large:14.2f} {t_small - small * per_frame:9.2f} {per_frame * 1e3:9.1f}")
    print(f"  first cluster run (workers new to the kernel): {first:.2f} s for {small} frames")
    print(f"steady-state throughput, cluster / threads: {steady['threads'] / steady['cluster']:.2f} (target >= 0.90)")


if __name__ == "__main__":
    main()
