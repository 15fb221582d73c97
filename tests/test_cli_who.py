"""``yollava recognize --all``, the mode column, chat that finds who is in the photo, and pending concepts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from yollava import who as W
from yollava.cli import app
from yollava import YoLLaVA
from yollava.models import load_model

from .test_who import PaletteEmbedder, photo, store_subjects, world  # noqa: F401  (world: photos and a pool)

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def setup(tiny_model_dirs, world, tmp_path, monkeypatch):  # noqa: F811
    embedder = PaletteEmbedder()
    monkeypatch.setattr(W.embedding, "default_embedder", lambda: embedder)  # where embedder_for looks it up
    model, cdir = tiny_model_dirs["llava"], tmp_path / "concepts"
    engine = YoLLaVA(load_model(str(model)), concepts_dir=cdir)
    store_subjects(engine, world)
    return engine, ["--model", model, "--concepts-dir", cdir]


def test_recognize_all_and_modes(setup, world, tmp_path):  # noqa: F811
    engine, common = setup
    two = photo(tmp_path / "q" / "red_blue.jpg", ["red", "blue"], seed=3)
    red = world["subjects"]["red"][5]
    r = run("recognize", "--all", red, two, *common, "--mode", "head")
    assert r.exit_code == 0, r.output
    rows = [ln for ln in r.output.splitlines() if "<" in ln]
    assert len(rows) == 2, r.output  # one row per photo: <red> alone, then both subjects of the collage
    assert "<red>" in rows[0] and "<blue>" not in rows[0] and "<red>" in rows[1] and "<blue>" in rows[1], r.output
    r = run("recognize", "red", red, *common)
    assert r.exit_code == 0 and "Yes" in r.output and W.DEFAULT_TRAINED_MODE in r.output
    r = run("recognize", "red", red, *common, "--mode", "yollava")
    assert r.exit_code == 0 and "yollava" in r.output
    r = run("recognize", "red", *common)
    assert r.exit_code == 1 and "give photos" in r.output

    r = run("chat", "Who is in this photo?", "--image", red, *common, "--max-new-tokens", 2)
    assert r.exit_code == 0 and "found: <red>" in r.output
    r = run("chat", "Who is in this photo?", "--image", red, *common, "--max-new-tokens", 2, "--no-who")
    assert r.exit_code == 0 and "found:" not in r.output
    # a question that names concepts: what their heads see is said first, and shown
    r = run("chat", "Is <blue> here?", "--image", red, *common, "--max-new-tokens", 2, "--concept", "red")
    assert r.exit_code == 0 and "heads: <blue> not in the photo" in r.output and "<red> in the photo" in r.output, r.output
    assert "found:" not in r.output
    r = run("chat", "Is <blue> here?", "--image", red, *common, "--max-new-tokens", 2, "--no-who")
    assert r.exit_code == 0 and "heads:" not in r.output


def test_pending_concept_is_listed_recognised_and_removed(setup, world):  # noqa: F811
    engine, common = setup
    sig = W.fit_signature(world["subjects"]["green"][:4], PaletteEmbedder(), world["pool"])
    W.save_pending(engine, "newbie", sig, k=2)
    r = run("concepts", "list", "--concepts-dir", engine.concepts_dir)
    assert r.exit_code == 0 and "<newbie>" in r.output and "concept head only" in r.output
    r = run("recognize", "newbie", world["subjects"]["green"][5], *common)
    assert r.exit_code == 0 and "Yes" in r.output and "head" in r.output
    r = run("chat", "What is <newbie>?", *common)
    assert r.exit_code == 1 and "unknown concept <newbie>" in r.output  # not ready to talk: not in the concepts folder
    r = run("concepts", "rm", "newbie", "--concepts-dir", engine.concepts_dir)
    assert r.exit_code == 0 and not list((engine.concepts_dir / W.PENDING_DIR).glob("newbie.*"))
    r = run("concepts", "rm", "newbie", "--concepts-dir", engine.concepts_dir)
    assert r.exit_code == 1 and "no concept <newbie>" in r.output
