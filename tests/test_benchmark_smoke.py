"""Smoke test of ``benchmarks/bench.py``: it runs end to end and checks its answers.

Not a timed test: nothing here looks at the speed. The script runs on a tiny
stack in a subprocess, as a user would run it; it must exit 0 after its
correctness checks ("agree" lines), with or without the optional peers
(dask-image and OpenCV are in the ``bench`` extra, not in ``test``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import benchmark_script

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"
TINY = ["--frames", "2", "--size", "64", "--chunk", "32", "--repeats", "1"]
TINY_STACK = "stack-2x64x64-chunk32-seed0.zarr"

# Makes `import cv2` and `import dask_image` fail in the child, as if they were not installed, then
# runs the script as Python would (its folder first on sys.path, for the modules beside it).
WITHOUT_PEERS = (
    "import os, runpy, sys; sys.modules['cv2'] = None; sys.modules['dask_image'] = None; "
    "sys.argv = sys.argv[1:]; sys.path.insert(0, os.path.dirname(sys.argv[0])); "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def run_bench(args: list[str], data_dir: Path, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    command = [sys.executable, *prefix, str(BENCH), *args, "--data-dir", str(data_dir)]
    return subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=600, cwd=data_dir.parent
    )


def agree_lines(stdout: str) -> list[str]:
    return [line.strip() for line in stdout.splitlines() if line.strip().startswith("agree:")]


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench") / "bench-data"


@pytest.fixture(scope="module")
def full_run(data_dir: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """Every section on the tiny stack, results saved as JSON."""
    json_path = data_dir.parent / "results.json"
    result = run_bench([*TINY, "--json", str(json_path)], data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads(json_path.read_text())


def test_every_pipeline_is_checked_against_the_reference(full_run) -> None:
    result, _ = full_run
    agreed = " ".join(agree_lines(result.stdout))
    expected = [
        "I/O floor",
        "convpipe's bytes",
        "convpipe stride 1",
        "convpipe stride 2",
        "convpipe stride 1, shards auto",
        "tiled TIFF input",
        "convpipe core stride 1",
        "core stride 2",
    ]
    expected += ["dask-image"] if installed("dask_image") else []
    expected += ["OpenCV"] if installed("cv2") else []
    expected += ["scipy.ndimage"] if installed("scipy") else []
    for pipeline in expected:
        assert pipeline in agreed, result.stdout


def test_results_are_printed_and_saved(full_run) -> None:
    result, saved = full_run
    names = {t["name"] for t in saved["timings"]}
    assert {"I/O floor (read, cast, write)", "convpipe stride 1", "convpipe core stride 2"} <= names
    assert all(len(t["seconds"]) == 1 for t in saved["timings"])  # --repeats 1
    ratios = {r["name"]: r for r in saved["ratios"]}
    assert ratios["convpipe / I/O floor (time)"]["verdict"] in ("PASS", "MISS")
    assert ratios["core stride 2 / stride 1 (time)"]["target"] == "<= 0.35"
    assert [f"agree: {check}" for check in saved["checks"]] == agree_lines(result.stdout)
    assert "convpipe / I/O floor (time)" in result.stdout
    assert saved["machine"]["versions"]["zarr"]


def test_the_stack_is_cached_and_outputs_are_removed(full_run, data_dir: Path) -> None:
    result, _ = full_run
    assert "generated" in result.stdout
    again = run_bench([*TINY, "--only", "floor"], data_dir)
    assert again.returncode == 0, again.stderr
    assert "using cached" in again.stdout
    names = [p.name for p in data_dir.iterdir()]
    assert TINY_STACK in names
    assert not [name for name in names if not name.startswith("stack-")]  # no output left behind


def test_missing_peers_are_skipped_with_a_note(data_dir: Path) -> None:
    result = run_bench([*TINY, "--only", "daskimage,core"], data_dir, prefix=("-c", WITHOUT_PEERS))
    assert result.returncode == 0, result.stderr
    assert "dask-image is not installed" in result.stdout
    assert "OpenCV is not installed" in result.stdout
    assert "convpipe core stride 1" in " ".join(agree_lines(result.stdout))
    assert "n/a" in result.stdout  # core / OpenCV cannot be computed


def test_memory_mode(data_dir: Path) -> None:
    result = run_bench(
        ["--memory", "--memory-frames", "2,3", "--memory-size", "64", "--chunk", "32"], data_dir
    )
    assert result.returncode == 0, result.stderr
    assert "convpipe run on 3 frames" in " ".join(agree_lines(result.stdout))
    assert "peak RSS, large / small stack" in result.stdout


def test_an_unknown_section_is_a_usage_error(data_dir: Path) -> None:
    result = run_bench(["--only", "floor,warp"], data_dir)
    assert result.returncode == 2
    assert "--only" in result.stderr


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch):
    """``benchmarks/bench.py`` loaded by path (see ``helpers.benchmark_script``)."""
    with benchmark_script(BENCH, monkeypatch) as module:
        yield module


def test_a_wrong_answer_aborts_the_run(
    bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import checks  # the benchmark's reference, imported by bench.py from its folder

    monkeypatch.setattr(checks, "reference_magnitude", lambda frame: np.ones((62, 62)))  # a wrong reference
    code = bench.main([*TINY, "--only", "floor,core", "--data-dir", str(tmp_path / "bench-data")])
    err = capsys.readouterr().err
    assert code == 1
    assert "MISMATCH, benchmark aborted:" in err and "pixels differ from the reference" in err


KERNELS = BENCH.parent / "kernels.py"


def test_kernel_benchmark_compares_the_cores() -> None:
    """``benchmarks/kernels.py`` runs every bank, dtype and stride on both cores; it exits 1 if their bits differ."""
    command = [sys.executable, str(KERNELS), "--size", "40", "--rounds", "1", "--old", "none"]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith(("Sobel", "3 channels", "5x5"))]
    assert len(rows) == 3 * 2 * 2, result.stdout  # banks x pixel dtypes x strides
    assert "opencv/new time" in result.stdout


@pytest.fixture(scope="module")
def geometry_run(data_dir: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """``--quick --geometry`` on the tiny stand-ins of the tiled stack and of the wide 2-D image."""
    json_path = data_dir.parent / "geometry.json"
    result = run_bench(["--quick", "--geometry", "4x8192,wide", "--json", str(json_path)], data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads(json_path.read_text())


def test_geometry_rows_are_checked_and_measured(geometry_run) -> None:
    result, saved = geometry_run
    agreed = agree_lines(result.stdout)
    for name in ("4x8192", "wide"):
        assert any(f"[{name}] convpipe run (fresh process)" in line for line in agreed), result.stdout
        assert saved["geometry_peaks"][name]["peak_bytes"] > 0
        rows = {t["name"] for t in saved["timings"] if t["section"] == f"geometry {name}"}
        assert {f"[{name}] I/O floor (read, cast, write)", f"[{name}] convpipe stride 1"} <= rows
        assert f"[{name}] I/O floor, convpipe's bytes (read input, write its output)" in rows
        assert f"[{name}] I/O floor, convpipe's bytes, zarr-python's pipeline" in rows
        ratios = {r["name"]: r for r in saved["ratios"]}
        assert ratios[f"[{name}] peak RSS of convpipe run (GiB)"]["target"] == "<= 1.5"
        assert ratios[f"[{name}] convpipe / same-bytes floor, zarrs (time)"]["value"] > 0
        assert ratios[f"[{name}] convpipe / same-bytes floor, zarr-python (time)"]["value"] > 0
    assert sum("stored chunk files identical to convpipe's" in line for line in agreed) == 4
    assert any("regions of 64x64 outputs" in line and "of the image" in line for line in agreed)
    # the stand-ins take the code paths of the full sizes: several tiles per frame, column bands
    assert "[4x8192] convpipe plan: 4 tasks" in result.stdout
    assert "[wide] convpipe plan: 22 tasks in 2 slabs" in result.stdout


def test_an_unknown_geometry_is_a_usage_error(data_dir: Path) -> None:
    result = run_bench(["--geometry", "32x2048,square"], data_dir)
    assert result.returncode == 2
    assert "--geometry" in result.stderr


def test_the_same_bytes_floor_must_store_convpipes_bytes(
    bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import convpipe_rows  # imported by bench.py from its folder

    real = convpipe_rows.stride_1_output

    def off_by_one(*args, **kwargs):
        stored = real(*args, **kwargs)
        stored.values[0, 0, 0] += 1  # the floor would write other bytes than convpipe did
        return stored

    monkeypatch.setattr(bench, "stride_1_output", off_by_one)
    code = bench.main([*TINY, "--only", "floor", "--data-dir", str(tmp_path / "bench-data")])
    assert code == 1
    assert "its stored chunks differ from convpipe's" in capsys.readouterr().err


def test_sampled_regions_catch_an_error_at_a_chunk_edge(bench, tmp_path: Path) -> None:
    from benchdata import ensure_wide
    from checks import BenchmarkError, SampledReference, reference_magnitude

    path = ensure_wide(tmp_path, 40, 300, 16, seed=0)
    reference = SampledReference(path, 16)
    output = reference_magnitude(reference.array[...]).astype(np.float32)
    assert reference.check("exact", output) < 1e-6
    output[5, 16] += 100  # the first output column of the second stored chunk
    with pytest.raises(BenchmarkError, match="pixels differ from the reference"):
        reference.check("wrong at an edge", output)


def test_the_benchmark_times_the_convpipe_of_its_own_checkout(data_dir: Path, tmp_path: Path) -> None:
    """Another convpipe first on PYTHONPATH (another checkout, an installed release) is not the one timed."""
    decoy = tmp_path / "decoy"
    (decoy / "convpipe").mkdir(parents=True)
    (decoy / "convpipe" / "__init__.py").write_text("raise ImportError('the decoy convpipe was imported')\n")
    json_path = tmp_path / "core.json"
    command = [sys.executable, str(BENCH), *TINY, "--only", "core", "--data-dir", str(data_dir), "--json", str(json_path)]
    result = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(decoy)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    machine = json.loads(json_path.read_text())["machine"]
    assert machine["convpipe_package"] == str(BENCH.parent.parent / "convpipe")
