"""``--memory``: the peak resident memory of ``convpipe run``, a fresh process per stack length."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchdata import ensure_stack
from checks import BenchmarkError, Reference, check_stack_output
from convpipe_rows import config_text, open_output, run_command
from results import Ratio, Results
from timing import scratch_dir, settle

MEMORY_POLL_SECONDS = 0.05


def peak_rss_of(
    command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> dict[str, Any]:
    """Run ``command`` (in ``cwd``, with ``env``); its exit code, wall time and peak resident memory.

    Two measures, polled every ``MEMORY_POLL_SECONDS``: the process's own
    high-water mark (``VmHWM`` in ``/proc/PID/status``: exact, kept by the
    kernel, so polling late misses nothing but the last poll interval), and
    the largest sum of the RSS of the process and its children. Not
    ``ru_maxrss`` from ``wait4``: Python starts children with ``vfork``, and
    Linux then carries the parent's high-water mark (this benchmark's, after
    generating a stack) into the child's ``ru_maxrss``.
    """
    import psutil

    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:  # pipes could fill up
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env, cwd=cwd)
        sampled_peak = high_water = 0
        watched = psutil.Process(process.pid)
        status_file = Path(f"/proc/{process.pid}/status")
        while True:
            pid, status, _ = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            high_water = max(high_water, high_water_mark(status_file))
            with contextlib.suppress(psutil.Error):
                rss = watched.memory_info().rss
                for child in watched.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        rss += child.memory_info().rss
                sampled_peak = max(sampled_peak, rss)
            time.sleep(MEMORY_POLL_SECONDS)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4 above
        stdout.seek(0)
        stderr.seek(0)
        out_text, err_text = stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")
    return {
        "returncode": process.returncode,
        "seconds": seconds,
        "high_water_bytes": high_water,
        "sampled_peak_bytes": sampled_peak,
        "stdout": out_text,
        "stderr": err_text,
    }


def high_water_mark(status_file: Path) -> int:
    """``VmHWM`` of a live process in bytes (0 once it is gone or off Linux)."""
    try:
        for line in status_file.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError):
        pass
    return 0


def bench_memory(
    results: Results, data_dir: Path, frame_counts: list[int], size: int, chunk: int, seed: int
) -> None:
    """Peak RSS of ``convpipe run`` (a fresh process each) on stacks of each length in ``frame_counts``."""
    runs = []
    for frames in frame_counts:
        input_path = ensure_stack(data_dir, frames, size, chunk, seed)
        with scratch_dir(data_dir) as scratch:
            output = scratch / "out.zarr"
            config = scratch / "config.yaml"
            config.write_text(config_text(input_path, output, 1), encoding="utf-8")
            settle()
            measured = peak_rss_of(run_command(config))
            if measured["returncode"] != 0:
                raise BenchmarkError(
                    f"convpipe run on {frames} frames exited with {measured['returncode']}:\n{measured['stderr']}"
                )
            reference = Reference(input_path)
            worst = check_stack_output(f"convpipe run ({frames} frames)", open_output(output), reference)
            results.agree(
                f"convpipe run on {frames} frames: {reference.frames_text()} vs the reference"
                f" (max rel err {worst:.1e})"
            )
        peak = max(measured["high_water_bytes"], measured["sampled_peak_bytes"])
        megapixels = frames * size**2 / 1e6
        runs.append(
            {
                "frames": frames,
                "size": size,
                "seconds": measured["seconds"],
                "megapixels_per_second": megapixels / measured["seconds"],
                "high_water_bytes": measured["high_water_bytes"],
                "sampled_peak_bytes": measured["sampled_peak_bytes"],
                "peak_bytes": peak,
            }
        )
        print(
            f"  convpipe run, {frames} x {size}^2: peak RSS {peak / 2**30:.3f} GiB "
            f"(VmHWM {measured['high_water_bytes'] / 2**30:.3f}, sampled {measured['sampled_peak_bytes'] / 2**30:.3f})"
            f", {measured['seconds']:.1f} s",
            flush=True,
        )
    results.memory = runs


def convpipe_peak(input_path: Path, scratch: Path, task_mib: int | None = None) -> tuple[int, float, Path]:
    """``convpipe run`` at stride 1 on ``input_path`` in a fresh process: peak RSS (bytes), seconds, output path.

    The output is left in ``scratch`` for the caller to check.
    """
    output = scratch / "peak.zarr"
    config = scratch / "peak.yaml"
    config.write_text(config_text(input_path, output, 1, task_mib), encoding="utf-8")
    settle()
    measured = peak_rss_of(run_command(config))
    if measured["returncode"] != 0:
        code, stderr = measured["returncode"], measured["stderr"]
        raise BenchmarkError(f"convpipe run on {input_path.name} exited with {code}:\n{stderr}")
    return max(measured["high_water_bytes"], measured["sampled_peak_bytes"]), measured["seconds"], output


def paired_peaks(
    results: Results, ratio: str, rows: tuple[str, str], inputs: tuple[Path, Path], data_dir: Path
) -> None:
    """Peak RSS of ``convpipe run`` (a fresh process each) on two inputs of the same data, and their ratio.

    ``rows`` name the two runs (the ``tiff`` section: a tiled TIFF and the
    Zarr stack); the ratio ``ratio`` is the first's peak over the second's.
    """
    peaks = []
    for name, input_path in zip(rows, inputs):
        with scratch_dir(data_dir) as scratch:
            config = scratch / "config.yaml"
            config.write_text(config_text(input_path, scratch / "out.zarr", 1), encoding="utf-8")
            settle()
            measured = peak_rss_of(run_command(config))
        if measured["returncode"] != 0:
            raise BenchmarkError(f"convpipe run ({name}) exited with {measured['returncode']}:\n{measured['stderr']}")
        peaks.append(max(measured["high_water_bytes"], measured["sampled_peak_bytes"]))
        results.note(f"{name}: peak RSS of `convpipe run` {peaks[-1] / 2**30:.3f} GiB, {measured['seconds']:.1f} s")
    results.ratios.append(Ratio(ratio, peaks[0] / peaks[1], None, "peak(first) / peak(second)"))
