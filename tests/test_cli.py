"""The ``yollava`` command on a tiny model: the whole concept life cycle, and clear errors."""

from __future__ import annotations

import json

import pytest

from typer.testing import CliRunner

from yollava.cli import app

from .conftest import make_photos, reddish

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.slow  # personalises with the fast recipe: the shared photo pool and EfficientNet
def test_concept_life_cycle(tiny_model_dirs, tmp_path):
    model, cdir = tiny_model_dirs["llava"], tmp_path / "concepts"
    photos = make_photos(tmp_path / "bo", 3, reddish)
    common = ["--model", model, "--concepts-dir", cdir]
    r = run("personalize", "bo", tmp_path / "bo", *common, "--epochs", 1, "--k", 2, "--n-easy", 0, "--no-hard-negatives", "--no-conversations")
    assert r.exit_code == 0, r.output
    assert (cdir / "bo.safetensors").exists() and (cdir / "bo.json").exists()
    assert "training in fp32" in " ".join(r.output.split())  # an fp32 HF model: "auto" is its own precision, and it says so

    r = run("concepts", "list", "--concepts-dir", cdir)
    assert r.exit_code == 0 and "<bo>" in r.output
    r = run("concepts", "show", "bo", "--concepts-dir", cdir)
    assert r.exit_code == 0 and json.loads(r.output)["k"] == 2
    r = run("recognize", "bo", photos[0], *common)
    assert r.exit_code == 0 and ("Yes" in r.output or "No" in r.output)
    r = run("chat", "What is <bo>?", *common, "--max-new-tokens", 3)
    assert r.exit_code == 0
    r = run("chat", "Is <bo> here?", "--image", photos[1], *common, "--max-new-tokens", 3)
    assert r.exit_code == 0

    r = run("personalize", "bo", tmp_path / "bo", *common, "--epochs", 1, "--n-easy", 0, "--no-hard-negatives", "--no-conversations")
    assert r.exit_code == 1 and "already exists" in r.output  # nothing overwritten by accident

    r = run("concepts", "rm", "bo", "--concepts-dir", cdir)
    assert r.exit_code == 0 and not list(cdir.glob("bo.*"))
    r = run("concepts", "rm", "bo", "--concepts-dir", cdir)
    assert r.exit_code == 1 and "no concept <bo>" in r.output


def test_clear_errors(tiny_model_dirs, tmp_path):
    model, cdir = tiny_model_dirs["llava"], tmp_path / "concepts"
    common = ["--model", model, "--concepts-dir", cdir]
    bad = tmp_path / "photo.jpg"
    bad.write_text("this is not a photo")
    r = run("personalize", "bo", bad, *common, "--no-conversations", "--n-easy", 0, "--no-hard-negatives")
    assert r.exit_code == 1 and "photo.jpg" in r.output and "not a readable image" in r.output
    r = run("personalize", "my dog", bad, *common)
    assert r.exit_code == 1 and "invalid concept name" in r.output
    photos = make_photos(tmp_path / "bo", 3, reddish)
    r = run("personalize", "bo", tmp_path / "bo", *common, "--negatives", photos[0], "--no-conversations", "--n-easy", 0, "--no-hard-negatives")
    assert r.exit_code == 1 and "both as a photo of the subject and as a photo without it" in " ".join(r.output.split())
    r = run("personalize", "bo", tmp_path / "bo", *common, "--negatives", bad, "--no-conversations", "--n-easy", 0, "--no-hard-negatives")
    assert r.exit_code == 1 and "photo.jpg" in r.output and "not a readable image" in r.output
    assert not list(cdir.glob("bo.*"))  # nothing saved
    r = run("chat", "Is <rex> here?", *common)
    assert r.exit_code == 1 and "unknown concept <rex>" in r.output
    r = run("recognize", "rex", bad, *common)
    assert r.exit_code == 1 and "rex" in r.output
    r = run("chat", "hi", "--model", tmp_path / "nowhere")
    assert r.exit_code == 1 and "cannot load model" in r.output
