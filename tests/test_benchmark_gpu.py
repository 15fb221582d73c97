"""benchmarks/train_speed_gpu.py runs end to end at the tiny size on the CPU and writes its table."""

from __future__ import annotations

import importlib.util
import itertools
import types
from pathlib import Path

import pytest
import torch


@pytest.mark.slow  # runs the benchmark script end to end (~15 s)
def test_train_speed_gpu_tiny(tmp_path, monkeypatch):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed_gpu.py"
    spec = importlib.util.spec_from_file_location("train_speed_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # the benchmark's clock advances one second per reading, so its timed loop lasts exactly one second
    clock = itertools.count()
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    optimiser_steps = []
    real_step = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: (optimiser_steps.append(1), real_step(self, *a, **k))[1])
    out = tmp_path / "speed.md"
    rows = bench.main(["--device", "cpu", "--size", "tiny", "--photos", "8", "--steps", "3", "--checkpointing", "off,on",
                       "--peak-tflops", "1", "--out", str(out)])
    assert [r["checkpointing"] for r in rows] == [False, True]
    assert len(optimiser_steps) == 2 * (2 + 3)  # per setting: 2 warm-up steps, then the 3 timed ones, each a training step
    table = out.read_text()
    for r in rows:
        # 8 photos + 4 conversations in batches of 8: the 3 timed steps train on 8 + 4 + 8 = 20 samples in that second
        assert r["samples_per_s"] == 20.0, r
        floor = 4 * r["decoder_params_b"] * 1e9 * r["tokens_per_sample"] / 1e12  # seconds per sample at 1 TFLOP/s
        assert r["flop_floor_ratio"] == pytest.approx((1 / 20) / floor)
        assert f"| tiny | cpu | float32 | {'on' if r['checkpointing'] else 'off'} | 20.00 |" in table
    assert out.with_suffix(".json").exists()


@pytest.mark.slow  # builds a tokenizer and runs the script end to end (~7 s)
def test_generate_image_gpu_tiny_and_refusal(tmp_path):
    """benchmarks/generate_image_gpu.py: a tiny smoke run on the CPU writes its table; the Janus-Pro shapes refuse to run
    without CUDA."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "generate_image_gpu.py"
    spec = importlib.util.spec_from_file_location("generate_image_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = bench.main(["--size", "tiny", "--device", "cpu", "--dtype", "fp32", "--n", "1,2", "--repeats", "1", "--batch", "2",
                           "--steps", "1", "--out", str(tmp_path / "draw.md")])
    finally:
        torch.set_num_threads(before)
    assert [(r["what"], r["n"]) for r in rows] == [("draw", 1), ("draw", 2), ("train step", 2)]
    assert all(r["codes_per_image"] == 16 and r["seconds_per_image"] > 0 for r in rows)
    assert "| draw | tiny | cpu | float32 | 2 | 16 |" in (tmp_path / "draw.md").read_text()
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as e:
            bench.main(["--size", "1b", "--device", "cpu"])
        assert e.value.code == 2
