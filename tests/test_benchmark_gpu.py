"""benchmarks/train_speed_gpu.py runs end to end at the tiny size on the CPU and writes its table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.slow  # runs the benchmark script end to end (~15 s)
def test_train_speed_gpu_tiny(tmp_path):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed_gpu.py"
    spec = importlib.util.spec_from_file_location("train_speed_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "speed.md"
    rows = bench.main(["--device", "cpu", "--size", "tiny", "--photos", "8", "--steps", "2", "--checkpointing", "off,on", "--out", str(out)])
    assert [r["checkpointing"] for r in rows] == [False, True]
    assert all(r["samples_per_s"] > 0 and r["flop_floor_ratio"] > 0 for r in rows)
    assert "samples/s" in out.read_text() and out.with_suffix(".json").exists()
