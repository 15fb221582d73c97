"""`yollava models`, `yollava doctor`, --device/--dtype, and a quiet console."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from yollava.cli import app
from yollava.runtime import resolve

runner = CliRunner()


def test_models_lists_every_family():
    from yollava.models import hf_families

    r = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for family in hf_families():
        assert f"({family})" in r.output


def test_doctor_reports_device_and_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    r = runner.invoke(app, ["doctor"])
    assert r.exit_code == 0, r.output
    assert "default: --device" in r.output and str(tmp_path) in r.output
    from yollava.runtime import native_bf16

    assert ("CPU bf16 matmuls: native" if native_bf16(torch.device("cpu")) else "CPU bf16 matmuls: emulated") in r.output


def test_device_and_dtype_resolution(monkeypatch):
    monkeypatch.delenv("YOLLAVA_DEVICE", raising=False)
    monkeypatch.delenv("YOLLAVA_DTYPE", raising=False)
    dev, dt = resolve()
    assert (dev.type, dt) == (("cuda", dt) if torch.cuda.is_available() else ("cpu", torch.float32))
    assert resolve("cpu", "bf16") == (torch.device("cpu"), torch.bfloat16)
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve("cpu", "int3")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve("cuda")


def test_global_dtype_option_reaches_the_model(tiny_model_dirs, tmp_path, monkeypatch):
    monkeypatch.setenv("YOLLAVA_DTYPE", "")  # restored after the test: the option sets it for this process
    r = runner.invoke(app, ["--device", "cpu", "--dtype", "bf16", "chat", "hi", "--model", str(tiny_model_dirs["llava"]),
                            "--concepts-dir", str(tmp_path), "--max-new-tokens", "2"])
    assert r.exit_code == 0, r.output
    from yollava.models import load_model

    assert load_model(str(tiny_model_dirs["llava"])).model_dtype == torch.bfloat16


@pytest.mark.slow
def test_chat_prints_only_the_answer(tiny_model_dirs, tmp_path):
    """No deprecation warnings or 'Loading weights' bars unless --verbose; stdout is the answer."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "NO_COLOR": "1"}
    for var in ("YOLLAVA_VERBOSE", "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_NO_ADVISORY_WARNINGS"):
        env.pop(var, None)
    args = ["chat", "hi", "--model", str(tiny_model_dirs["qwen2_vl"]), "--concepts-dir", str(tmp_path), "--max-new-tokens", "3"]
    quiet = subprocess.run([sys.executable, "-m", "yollava.cli", *args], capture_output=True, text=True, env=env, timeout=120)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert len(quiet.stdout.strip("\n").splitlines()) <= 1 and "\x1b[" not in quiet.stdout
    loud = subprocess.run([sys.executable, "-m", "yollava.cli", "--verbose", *args], capture_output=True, text=True, env=env, timeout=120)
    assert loud.returncode == 0 and "Loading weights" in loud.stderr


@pytest.mark.slow
def test_the_python_api_loads_pocket_quietly(tmp_path):
    """A user's own script (no CLI) sees no transformers 'Loading weights' bar or warning when pocket loads."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    for var in ("YOLLAVA_VERBOSE", "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_NO_ADVISORY_WARNINGS"):
        env.pop(var, None)
    script = "import torch; torch.set_num_threads(1); from yollava import YoLLaVA; YoLLaVA.from_pretrained('pocket', concepts_dir=%r)" % str(tmp_path)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "Loading weights" not in run.stderr and "Warning" not in run.stderr, run.stderr
