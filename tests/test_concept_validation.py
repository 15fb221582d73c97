"""Concept files from untrusted hands: names, metadata and rows are checked before anything uses them
(issue #18, library side: the server's import and ``load_concept`` share these checks)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from yollava.concepts import Concept, concept_from_bytes, list_concepts, load_concept, read_meta, save_concept, validate_name
from yollava.errors import CorruptConceptError, InvalidConceptNameError
from yollava.safejson import UnsafeJSONError, loads

FP = {"family": "x", "model_id": "m", "config_sha256": "c", "weights_sha256": "w", "vocab_size": 10, "hidden_size": 8}


def _concept(name="bo", k=2):
    return Concept(name, torch.randn(k + 1, 8), torch.randn(8))


def _rewrite_meta(folder, concept, changes):
    path = folder / f"{concept}.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))  # json.dumps writes NaN / Infinity as the bare words


@pytest.mark.parametrize("suffix", ["\n", "\r", "\t", "\r\n", " "])
def test_names_are_matched_in_full(tmp_path, suffix):
    """``re.match(r"...$")`` accepted "bo\\n" (``$`` matches before a final newline): a second, invisible <bo>."""
    with pytest.raises(InvalidConceptNameError):
        validate_name("bo" + suffix)
    with pytest.raises(InvalidConceptNameError):
        validate_name("bo_1" + suffix)  # the latent-token shape is checked in full too
    with pytest.raises(InvalidConceptNameError):
        Concept("bo" + suffix, torch.zeros(3, 8), torch.zeros(8))
    with pytest.raises(InvalidConceptNameError):
        load_concept(tmp_path, "bo" + suffix)
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_names_with_control_characters(tmp_path):
    from yollava.cli import app

    save_concept(_concept(), tmp_path, FP)
    for name in ("bo\n", "bo\r", "bo\t"):
        for command in ("show", "rm"):
            r = CliRunner().invoke(app, ["concepts", command, name, "--concepts-dir", str(tmp_path)])
            assert r.exit_code == 1 and "invalid concept name" in r.output, (command, repr(name), r.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bo.json", "bo.safetensors"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_rows_are_refused_at_load_and_save(tmp_path, value):
    c = _concept()
    save_concept(c, tmp_path, FP)
    rows = c.input_rows.detach().clone()
    rows[1, 3] = value
    save_file({"input_rows": rows, "output_row": c.output_row.detach()}, str(tmp_path / "bo.safetensors"))
    meta = json.loads((tmp_path / "bo.json").read_text())
    del meta["tensors_sha256"]  # so the hash check does not catch it first
    (tmp_path / "bo.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptConceptError, match="NaN or infinite"):
        load_concept(tmp_path, "bo", FP)
    with torch.no_grad():
        c.output_row[0] = value
    with pytest.raises(CorruptConceptError, match="output_row holds NaN"):
        save_concept(c, tmp_path / "other", FP)
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize(
    "tensors, words",
    [
        ({"input_rows": torch.zeros(8), "output_row": torch.zeros(8)}, "(k+1, hidden) matrix"),
        ({"input_rows": torch.zeros(2, 3, 8), "output_row": torch.zeros(8)}, "(k+1, hidden) matrix"),
        ({"input_rows": torch.zeros(0, 8), "output_row": torch.zeros(8)}, "(k+1, hidden) matrix"),
        ({"input_rows": torch.zeros(3, 8), "output_row": torch.zeros(7)}, "output_row must have shape (8,)"),
        ({"input_rows": torch.zeros(3, 8, dtype=torch.int32), "output_row": torch.zeros(8)}, "dtype int32"),
        ({"input_rows": torch.zeros(3, 8, dtype=torch.bool), "output_row": torch.zeros(8)}, "dtype bool"),
        ({"input_rows": torch.zeros(3, 7), "output_row": torch.zeros(7)}, "hidden size is 8"),
        ({"input_rows": torch.zeros(3, 8)}, "expected the tensors"),
        ({"input_rows": torch.zeros(6, 8), "output_row": torch.zeros(8)}, "metadata says k = 2, the rows hold 5"),
    ],
)
def test_bad_rows_are_clear_errors(tensors, words):
    from safetensors.torch import save

    with pytest.raises(CorruptConceptError) as e:
        concept_from_bytes("bo", {"name": "bo", "k": 2, "base_model": FP}, save(tensors), FP)
    assert words in str(e.value) and "<bo>" in str(e.value)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"metrics": [1]}, "metrics must be an object"),
        ({"source_photos": 5}, "source_photos must be a list"),
        ({"source_photos": [1, 2]}, "source_photos must be a list of"),
        ({"recognition_threshold": float("nan")}, "NaN is not a number"),
        ({"recognition_threshold": float("inf")}, "Infinity is not a number"),
        ({"recognition_threshold": "abc"}, "recognition_threshold must be a finite number"),
        ({"recognition_threshold": 1.5}, "recognition_threshold must be a finite number"),
        ({"recognition_threshold": True}, "recognition_threshold must be a finite number"),
        ({"base_model": "llava"}, "base_model must be an object"),
        ({"base_model": ["llava"]}, "base_model must be an object"),
        ({"k": -1}, "k must be a whole number"),
        ({"counts": {"positive": -3}}, "counts must map"),
        ({"name": 7}, "name must be a string"),
        ({"extra": "hi \ud800"}, "unpaired surrogate"),
    ],
)
def test_bad_metadata_is_refused_and_listing_survives(tmp_path, changes, words):
    save_concept(_concept(), tmp_path, FP)
    save_concept(_concept("anna"), tmp_path, FP)
    _rewrite_meta(tmp_path, "bo", changes)
    with pytest.raises(CorruptConceptError) as e:
        load_concept(tmp_path, "bo", FP)
    assert words in str(e.value) and str(tmp_path) not in str(e.value)
    listed = {m["name"]: m for m in list_concepts(tmp_path)}  # one bad file never breaks the listing
    assert "error" in listed["bo"] and "error" not in listed["anna"]
    load_concept(tmp_path, "anna", FP)


def test_deep_or_huge_metadata_is_refused_without_recursion(tmp_path):
    save_concept(_concept(), tmp_path, FP)
    meta = json.loads((tmp_path / "bo.json").read_text())
    text = json.dumps(meta)[:-1] + ', "deep": ' + "[" * 5000 + "]" * 5000 + "}"
    (tmp_path / "bo.json").write_text(text)
    with pytest.raises(CorruptConceptError, match="nested 5001 levels deep"):
        read_meta(tmp_path, "bo")
    (tmp_path / "bo.json").write_text(json.dumps({**meta, "pad": "x" * (1024 * 1024)}))
    with pytest.raises(CorruptConceptError, match="at most 1,048,576"):
        read_meta(tmp_path, "bo")


def test_non_finite_numbers_in_training_metrics_are_saved_as_null(tmp_path):
    c = _concept()
    c.meta["metrics"] = {"history": [{"epoch": 0, "loss": float("nan")}], "best_epoch": 0}
    save_concept(c, tmp_path, FP)
    assert load_concept(tmp_path, "bo", FP).meta["metrics"]["history"][0]["loss"] is None


def test_safe_json():
    assert loads(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
    assert loads('{"s": "[[[[ not nesting ]]]] \\" {{{"}', max_depth=1)["s"].startswith("[[[[")
    for bad, words in ((b"[" * 40 + b"]" * 40, "nested 40"), (b"[NaN]", "NaN"), (b"[1e400]", "out of range"),
                       (b'["\\udc00"]', "surrogate"), (b"\xff", "UTF-8"), (b"[1,", "not valid JSON")):
        with pytest.raises(UnsafeJSONError, match=words):
            loads(bad)
