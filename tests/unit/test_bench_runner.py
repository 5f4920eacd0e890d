"""The benchmark harness's one command (`benchmarks/run_all.py`): what the README documents.

Benchmarks are not tests; these only check the harness: a named benchmark's smoke run prints
figures in the documented form, and a name that matches no benchmark is refused (it used to
run nothing and exit 0).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RUN_ALL = Path(__file__).resolve().parents[2] / "benchmarks" / "run_all.py"


def _run_all(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUN_ALL), *args], capture_output=True, text=True, timeout=90
    )


def test_unknown_benchmark_name_is_refused_with_the_known_names() -> None:
    proc = _run_all("--smoke", "--only", "ring", "rng")
    assert proc.returncode == 2
    assert proc.stdout == ""  # nothing ran, not even the known name
    assert "no benchmark named rng" in proc.stderr
    assert "ring" in proc.stderr.split("known:")[1]


def test_smoke_run_prints_one_json_figure_per_line_with_its_baseline() -> None:
    # "bench_ring.py" and "ring" name the same benchmark: it runs once
    proc = _run_all("--smoke", "--only", "bench_ring.py", "ring")
    assert proc.returncode == 0, proc.stderr
    figures = [json.loads(line) for line in proc.stdout.splitlines()]
    assert figures
    for fig in figures:
        assert fig["benchmark"] == "bench_ring"
        assert isinstance(fig["name"], str)
        assert fig["name"]
        assert isinstance(fig["value"], int | float)
        assert fig["value"] > 0
        assert isinstance(fig["unit"], str)
        assert fig["unit"]
        base = fig["baseline"]
        assert isinstance(base["name"], str)
        assert base["value"] > 0
    assert proc.stderr.count("# bench_ring.py:") == 1
