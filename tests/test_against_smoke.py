"""Smoke test of ``benchmarks/against.py``: this tree against an old commit, end to end, answers checked.

Not a timed test: nothing here looks at the speed. REV is 91dac41, a commit
with the old library API (``runner.execute``), so both of the script's
adapters run; ``git archive`` needs the repository's history (a full clone).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import benchmark_script

AGAINST = Path(__file__).resolve().parent.parent / "benchmarks" / "against.py"
REV = "91dac41"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict]:
    folder = tmp_path_factory.mktemp("against")
    json_path = folder / "against.json"
    command = [sys.executable, str(AGAINST), "--quick", REV, "--data-dir", str(folder / "bench-data"),
               "--json", str(json_path)]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600, cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads(json_path.read_text())


def test_both_trees_are_timed_at_both_strides(quick_run) -> None:
    result, saved = quick_run
    rows = {(row["tree"], row["stride"], row["kind"]): row for row in saved["rows"]}
    assert set(rows) == {(tree, stride, kind) for tree in ("current", "rev") for stride in (1, 2)
                         for kind in ("whole process", "warm in-process")}
    assert all(row["seconds"] and min(row["seconds"]) > 0 for row in rows.values())
    assert all(min(row["peak_rss_bytes"]) > 0 for key, row in rows.items() if key[2] == "whole process")
    assert len(saved["ratios"]) == 2 * 3  # per stride: two times and one peak RSS
    assert saved["apis"] == {"current": "convpipe.run",
                             "rev": "convpipe.runner.execute(make_plan(load_config(path)))"}
    assert saved["rev"].startswith(REV) and f"current / {saved['rev']}" in result.stdout


def test_both_trees_are_checked(quick_run) -> None:
    result, saved = quick_run
    agreed = [line for line in result.stdout.splitlines() if line.startswith("agree: ")]
    assert len(agreed) == len(saved["checks"]) == 2
    assert all("both trees agree with the float64 reference" in line for line in agreed)


@pytest.fixture
def against(monkeypatch: pytest.MonkeyPatch):
    """``benchmarks/against.py`` loaded by path (see ``helpers.benchmark_script``)."""
    with benchmark_script(AGAINST, monkeypatch) as module:
        yield module


def test_a_wrong_answer_aborts_the_run(against, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import checks  # the benchmark's reference, imported by against.py from its folder

    monkeypatch.setattr(checks, "reference_magnitude", lambda frame: np.ones((510, 510)))  # a wrong reference
    code = against.main([REV, "--quick", "--strides", "1", "--data-dir", str(tmp_path / "bench-data")])
    assert code == 1
    assert "pixels differ from the reference" in capsys.readouterr().err


def test_the_trees_outputs_are_compared(against, tmp_path: Path) -> None:
    import zarr
    from checks import BenchmarkError

    values = np.random.default_rng(0).random((2, 8, 8), dtype=np.float32) + 1
    paths = [tmp_path / f"{name}.zarr" for name in ("a", "b", "c", "d")]
    for path, change in zip(paths, (0, 0, 1e-7, 1e-3)):
        zarr.create_array(str(path / "0"), data=values * np.float32(1 + change))
    assert against.compare_trees("same", paths[0], paths[1]) == "bit-identical"
    assert against.compare_trees("rounding", paths[0], paths[2]).startswith("NOT bit-identical, within tolerance")
    with pytest.raises(BenchmarkError, match="pixels differ from the reference"):
        against.compare_trees("wrong", paths[0], paths[3])
