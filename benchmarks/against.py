"""End to end against another commit: is today's convpipe slower or faster than commit REV?

    python benchmarks/against.py REV [--frames 32] [--size 2048] [--rounds 5] [--repeats 1]
        [--strides 1,2] [--data-dir DIR] [--scratch DIR] [--json out.json] [--quick]

The two trees are this checkout's working tree (the "current" side, the
repository root on ``PYTHONPATH``) and REV's ``convpipe/`` package, taken with
``git archive`` into the scratch folder; both run with the same interpreter
and installed dependencies, each from a fresh process with its own tree on
``PYTHONPATH``. The input is the standard benchmark stack (``benchdata.py``:
32 x 2048² uint16, chunks (1, 1024, 1024)) copied into the scratch folder
(default under /dev/shm) so that the disk's noise does not swamp a
difference between the trees. Per stride, one YAML config (Sobel,
``combine: magnitude``, float32, threads scheduler, each tree's default
codec) is read by both trees. Two kinds of rows per tree and stride:

* **whole process**: ``python -c "from convpipe.cli import app; app()" run
  CFG --overwrite -q``, wall time from start to exit and the child's peak
  RSS (its ``VmHWM``: ``peak_memory.peak_rss_of``, as ``bench.py --memory``);
* **warm in-process**: one long-lived process per tree that imports it and
  times ``--repeats`` calls of the library per round (``convpipe.run``, or
  ``runner.execute(make_plan(load_config(path)))`` in trees before it).

Correctness first: after the warm-ups (a library run per stride, one whole
process at the first stride), each tree's outputs are checked on the first
and last frames against the float64 reference of ``checks.py``, and the two
trees' outputs against each other, frame by frame (bit-identical, or within
the reference's tolerance: reported). A mismatch or a failed run exits with
code 1. The timed rows then go round-robin over rounds (the order of the
trees alternating) so that background load hits both alike; the table gives
medians, minima and the ratios current / REV, with the load average before
and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import this_tree  # noqa: F401  (the current tree, not whatever is installed)
from benchdata import ensure_stack
from checks import BenchmarkError, Reference, compare
from peak_memory import peak_rss_of
from report import load_average, machine_info
from timing import settle

KINDS = ("whole process", "warm in-process")
CLI = "from convpipe.cli import app; app()"

# Imports one tree, then runs each config path read from stdin and answers its seconds (or a traceback).
WORKER = r"""
import json, os, sys, time, traceback
answer = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)  # anything the library prints goes to stderr, away from the answers
import convpipe
try:
    from convpipe import run
    api = "convpipe.run"
    def call(path): run(path, overwrite=True, progress=False)
except ImportError:
    from convpipe.config import load_config
    from convpipe.runner import execute, make_plan
    api = "convpipe.runner.execute(make_plan(load_config(path)))"
    def call(path): execute(make_plan(load_config(path)), overwrite=True, progress=False)
print(json.dumps({"module": convpipe.__file__, "api": api}), file=answer, flush=True)
for line in sys.stdin:
    try:
        start = time.perf_counter()
        call(line.strip())
        reply = time.perf_counter() - start
    except Exception:
        reply = traceback.format_exc()
    print(json.dumps(reply), file=answer, flush=True)
"""


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()


def materialise(rev: str, folder: Path) -> Path:
    """REV's ``convpipe/`` package under ``folder`` (``git archive``); the folder to put on PYTHONPATH."""
    folder.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "convpipe"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def write_config(scratch: Path, input_path: Path, stride: int) -> tuple[Path, Path]:
    """The YAML config of one stride (read by both trees) and its output path."""
    output = scratch / f"out-stride{stride}.zarr"
    text = (f"input:\n  path: {json.dumps(str(input_path))}\nkernels: sobel\nstride: {stride}\n"
            f"combine: magnitude\noutput:\n  path: {json.dumps(str(output))}\n  dtype: float32\n"
            "compute:\n  scheduler: threads\n")  # JSON strings are YAML strings: any path reads back
    path = scratch / f"stride{stride}.yaml"
    path.write_text(text)
    return path, output


class Side:
    """One tree: its whole-process runs and its warm worker process."""

    def __init__(self, name: str, label: str, tree: Path, scratch: Path) -> None:
        self.name, self.label, self.tree, self.scratch = name, label, tree, scratch
        self.log = open(scratch / f"worker-{name}.log", "w+")  # noqa: SIM115 (closed by close())
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.worker = subprocess.Popen([sys.executable, "-c", WORKER], cwd=scratch, env=env, text=True,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        line = self.worker.stdout.readline()
        self.info = json.loads(line) if line else {"module": f"nothing, the worker died: {self.log_tail()}"}
        if not Path(self.info["module"]).resolve().is_relative_to(tree.resolve()):
            self.close()
            raise BenchmarkError(f"{label}: imported {self.info['module']}, not the tree {tree}")

    def log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read()[-3000:]

    def process(self, config: Path) -> tuple[float, int]:
        """One whole ``convpipe run`` process: wall seconds and peak RSS in bytes."""
        argv = [sys.executable, "-c", CLI, "run", str(config), "--overwrite", "-q"]
        result = peak_rss_of(argv, env={**os.environ, "PYTHONPATH": str(self.tree)}, cwd=self.scratch)
        if result["returncode"] != 0:
            raise BenchmarkError(
                f"{self.label}: convpipe run {config.name} exited with {result['returncode']}: "
                f"{result['stderr'][-3000:]}"
            )
        return result["seconds"], result["high_water_bytes"]

    def warm(self, config: Path) -> float:
        """One library call in the warm worker: seconds."""
        self.worker.stdin.write(f"{config}\n")
        self.worker.stdin.flush()
        line = self.worker.stdout.readline()
        reply = json.loads(line) if line else f"the worker died: {self.log_tail()}"
        if isinstance(reply, str):
            raise BenchmarkError(f"{self.label}: run of {config.name} in process failed: {reply}")
        return reply

    def close(self) -> None:
        self.worker.stdin.close()
        self.worker.wait()
        self.worker.stdout.close()
        self.log.close()


def check(label: str, output: Path, reference: Reference, stride: int) -> float:
    import zarr

    return reference.check(label, zarr.open_array(str(output / "0"), mode="r"), stride)


def compare_trees(label: str, first: Path, second: Path) -> str:
    """Compare two outputs frame by frame; 'bit-identical' or the worst relative difference."""
    import numpy as np
    import zarr

    a, b = (zarr.open_array(str(path / "0"), mode="r") for path in (first, second))
    if a.shape != b.shape or a.dtype != b.dtype:
        raise BenchmarkError(f"{label}: {a.shape} {a.dtype} against {b.shape} {b.dtype}")
    identical, worst = True, 0.0
    for t in range(a.shape[0]):
        x, y = a[t], b[t]
        if not np.array_equal(x, y):
            identical = False
            worst = max(worst, compare(f"{label}, frame {t}", x, y.astype(np.float64)))
    return "bit-identical" if identical else f"NOT bit-identical, within tolerance (worst relative {worst:.1e})"


def measure(sides: list[Side], configs: dict, rounds: int, repeats: int) -> tuple[dict, dict]:
    """Seconds of every (tree, stride, kind) and peak RSS of the whole processes, round-robin over rounds."""
    seconds: dict[tuple, list[float]] = {}
    rss: dict[tuple, list[int]] = {}
    for r in range(rounds):
        order = sides if r % 2 == 0 else sides[::-1]
        for stride, (config, _) in configs.items():
            for side in order:
                settle()
                wall, peak = side.process(config)
                seconds.setdefault((side.name, stride, KINDS[0]), []).append(wall)
                rss.setdefault((side.name, stride, KINDS[0]), []).append(peak)
            for side in order:
                for _ in range(repeats):
                    settle()
                    seconds.setdefault((side.name, stride, KINDS[1]), []).append(side.warm(config))
    return seconds, rss


def table(seconds: dict, rss: dict, strides: list[int], rev: str) -> list[dict]:
    """Print the table (medians, minima, ratios current / REV); the ratios."""
    print(f"\n| stride | kind | current s | {rev} s | current / {rev} | peak RSS GiB, current / {rev} | ratio |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    ratios = []
    for stride in strides:
        for kind in KINDS:
            cur, old = seconds[("current", stride, kind)], seconds[("rev", stride, kind)]
            ratio = median(cur) / median(old)
            ratios.append({"stride": stride, "kind": kind, "measure": "time", "current_over_rev": ratio})
            line = f"| {stride} | {kind} | {median(cur):.3f} ({min(cur):.3f}) | {median(old):.3f} ({min(old):.3f})"
            line += f" | **{ratio:.2f}** |"
            if kind == KINDS[0]:
                a, b = (median(rss[(name, stride, kind)]) / 2**30 for name in ("current", "rev"))
                ratios.append({"stride": stride, "kind": kind, "measure": "peak RSS", "current_over_rev": a / b})
                line += f" {a:.3f} / {b:.3f} | {a / b:.2f} |"
            print(line + ("" if kind == KINDS[0] else " | |"))
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the commit to compare with (anything git understands)")
    parser.add_argument("--frames", type=int, help="frames of the stack (default 32; --quick 4)")
    parser.add_argument("--size", type=int, help="frame side (default 2048; --quick 512)")
    parser.add_argument("--rounds", type=int, help="timed rounds over every row (default 5; --quick 1)")
    parser.add_argument("--repeats", type=int, default=1, help="in-process runs per row and round (default 1)")
    parser.add_argument("--strides", default="1,2", help="comma-separated strides (default 1,2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=REPO / "bench-data", help="cache of generated stacks")
    parser.add_argument("--scratch", type=Path, help="where the runs happen (default: /dev/shm, else --data-dir)")
    parser.add_argument("--json", type=Path, help="also write everything to this JSON file")
    parser.add_argument("--quick", action="store_true", help="4 x 512², one round: checks that all works")
    args = parser.parse_args(argv)
    frames = args.frames or (4 if args.quick else 32)
    size = args.size or (512 if args.quick else 2048)
    rounds = args.rounds or (1 if args.quick else 5)
    strides = [int(s) for s in args.strides.split(",")]
    rev = git("rev-parse", "--short", f"{args.rev}^{{commit}}")
    head = git("rev-parse", "--short", "HEAD") + (" + uncommitted" if git("status", "--porcelain", "convpipe") else "")
    parent = args.scratch or (Path("/dev/shm") if Path("/dev/shm").is_dir() else args.data_dir)
    parent.mkdir(parents=True, exist_ok=True)
    load_before = load_average()
    sides: list[Side] = []
    with tempfile.TemporaryDirectory(prefix="convpipe-against-", dir=parent) as folder:
        scratch = Path(folder)
        try:
            stack = ensure_stack(args.data_dir, frames, size, 1024, args.seed)
            input_path = scratch / "input.zarr"
            shutil.copytree(stack, input_path)
            reference = Reference(input_path)
            configs = {stride: write_config(scratch, input_path, stride) for stride in strides}
            sides.append(Side("current", f"current ({head})", REPO, scratch))
            sides.append(Side("rev", rev, materialise(args.rev, scratch / "rev"), scratch))
            checks = []
            for stride, (config, output) in configs.items():  # warm-up and correctness first
                kept = []
                for side in sides:
                    side.warm(config)  # imports and compiles: what a whole process then finds cached
                    check(f"{side.label} stride {stride}, in process", output, reference, stride)
                    if stride == strides[0]:  # the CLI once per tree: its imports, and its answer checked
                        side.process(config)
                        check(f"{side.label} stride {stride}, whole process", output, reference, stride)
                    kept.append(output.rename(output.with_name(f"{output.stem}-{side.name}.zarr")))
                same = compare_trees(f"stride {stride}: {sides[0].label} against {rev}", *kept)
                checks.append(f"stride {stride}: both trees agree with the float64 reference on "
                              f"{reference.frames_text()}; their outputs are {same}")
                for path in kept:
                    shutil.rmtree(path)
            seconds, rss = measure(sides, configs, rounds, args.repeats)
        except BenchmarkError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            for side in sides:
                side.close()
    load_after = load_average()
    print(f"\nend to end: current tree {REPO} ({head}) against {rev} ({sides[1].info['api']}); "
          f"{frames} x {size}² uint16, chunks (1, {min(1024, size)}, {min(1024, size)}), copied to {parent}")
    print(f"medians (min) of {rounds} rounds; in process {args.repeats} run(s) per round after a warm-up; "
          f"load average {' '.join(f'{x:.2f}' for x in load_before)} before, "
          f"{' '.join(f'{x:.2f}' for x in load_after)} after")
    ratios = table(seconds, rss, strides, rev)
    for line in checks:
        print(f"agree: {line}")
    if args.json:
        rows = [{"tree": tree, "commit": head if tree == "current" else rev, "stride": stride, "kind": kind,
                 "seconds": values, "median": median(values), "min": min(values),
                 **({"peak_rss_bytes": rss[tree, stride, kind]} if kind == KINDS[0] else {})}
                for (tree, stride, kind), values in seconds.items()]
        record = {"rev": rev, "current": head, "frames": frames, "size": size, "rounds": rounds,
                  "repeats": args.repeats, "scratch": str(parent), "apis": {s.name: s.info["api"] for s in sides},
                  "load_before": load_before, "load_after": load_after, "machine": machine_info(),
                  "rows": rows, "ratios": ratios, "checks": checks}
        args.json.write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
