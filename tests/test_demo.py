"""The main job (``yollava demo``) end to end, on a tiny model and a synthetic copy of the data layout."""

from __future__ import annotations

from rich.console import Console

from yollava.demo import run_demo
from yollava.recipes import get_recipe

from .conftest import make_photos, other_colour, reddish


def test_demo_runs_end_to_end(llava_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("YOLLAVA_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    make_photos(root / "yollava" / "bo" / "train", 4, reddish, seed=1)
    make_photos(root / "yollava" / "bo" / "test", 3, reddish, seed=2)
    for i, p in enumerate(make_photos(tmp_path / "others", 3, other_colour, seed=3)):
        (root / "yollava" / "one_image_per_concept").mkdir(parents=True, exist_ok=True)
        p.rename(root / "yollava" / "one_image_per_concept" / f"subject{i}.jpg")
    make_photos(root / "pool" / "misc", 12, other_colour, seed=4)
    recipe = get_recipe("fast").override(k=2, n_easy_negatives=4, n_hard_negatives=4, conversation_tokens=4, calibration_negatives=4)
    console = Console(record=True, width=120)
    out = run_demo(llava_engine, root, recipe, console)
    text = console.export_text()
    assert "Can you see if <bo> is in this photo?" in text and "text-only" in text
    assert "training in fp32" in " ".join(text.split())
    assert out["metrics"]["n_positive"] == 3 and out["metrics"]["n_negative"] == 3
    assert (llava_engine.concepts_dir / "bo.json").exists()
