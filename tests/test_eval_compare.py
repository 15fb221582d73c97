"""``yollava eval compare``: two recognition runs subject by subject."""

import json

import pytest
from typer.testing import CliRunner

from yollava.cli import app
from yollava.eval.compare import compare_runs

runner = CliRunner()


def run(per_subject: dict, task: str = "recognition") -> dict:
    return {"task": task, "per_subject": {m: {s: {"weighted_accuracy": w, "auc": a} for s, (w, a) in subj.items()} for m, subj in per_subject.items()}}


ONE_EPOCH = run({"yollava": {"doll": (0.5, 0.6), "dog": (0.7, 0.9), "cup": (0.6, 0.7)}, "head": {"doll": (0.7, 0.8), "dog": (1.0, 1.0)}})
THREE_EPOCHS = run({"yollava": {"doll": (0.5, 0.7), "dog": (0.85, 0.98)}, "head": {"doll": (0.7, 0.8), "dog": (1.0, 1.0)}, "vanilla": {"doll": (0.5, 0.5)}})


def test_compares_only_what_both_runs_have():
    c = compare_runs(ONE_EPOCH, THREE_EPOCHS)
    assert c["methods"] == ["yollava", "head"]  # vanilla is only in the second run
    assert list(c["per_subject"]["yollava"]) == ["doll", "dog"]  # cup is not done in the second run yet
    mean = c["mean"]["yollava"]
    assert mean["subjects"] == 2
    assert mean["weighted_accuracy_a"] == pytest.approx(0.6) and mean["weighted_accuracy_b"] == pytest.approx(0.675)
    assert mean["auc_a"] == pytest.approx(0.75) and mean["auc_b"] == pytest.approx(0.84)


def test_cli_writes_the_table_and_the_plot(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(ONE_EPOCH))
    b.write_text(json.dumps(THREE_EPOCHS))
    out = tmp_path / "cmp" / "epochs.md"
    result = runner.invoke(app, ["eval", "compare", str(a), str(b), "--out", str(out), "--labels", "1 epoch,3 epochs", "--methods", "yollava"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "| yollava (mean of subjects) | 2 | 0.600 | 0.675 | +0.075 | 0.750 | 0.840 | +0.090 |" in text
    assert "| dog | 0.700 | 0.850 | +0.150 | 0.900 | 0.980 | +0.080 |" in text and "head" not in text
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("second, args, message", [
    (run({"yollava": {"doll": (0.5, 0.5)}}, task="qa"), [], "not a recognition run"),
    (THREE_EPOCHS, ["--methods", "yollava,vanilla"], "vanilla"),
    (THREE_EPOCHS, ["--labels", "only-one"], "two names"),
    (run({"text-human": {"doll": (0.5, 0.5)}}), [], "no method in common"),
])
def test_wrong_inputs_fail_with_a_clear_message(tmp_path, second, args, message):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(ONE_EPOCH))
    b.write_text(json.dumps(second))
    result = runner.invoke(app, ["eval", "compare", str(a), str(b), "--out", str(tmp_path / "x.md"), *args])
    assert result.exit_code == 1 and message in result.output
    assert not (tmp_path / "x.md").exists()


def test_a_run_folder_in_progress_compares_on_its_finished_records(tmp_path):
    folder = tmp_path / "three_epochs.run"
    folder.mkdir()
    records = [{"task": "recognition", "method": "yollava", "subject": s, "metrics": {"weighted_accuracy": w, "auc": a}}
               for s, (w, a) in {"doll": (0.5, 0.7), "dog": (0.85, 0.98)}.items()]
    records.append({"task": "recognition", "method": "head", "subject": "doll", "unavailable": "no features"})
    (folder / "records.jsonl").write_text("\n".join(json.dumps(r) for r in records) + '\n{"task": "recogn')  # a cut last line
    first = tmp_path / "a.json"
    first.write_text(json.dumps(ONE_EPOCH))
    out = tmp_path / "cmp.md"
    result = runner.invoke(app, ["eval", "compare", str(first), str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "| yollava (mean of subjects) | 2 | 0.600 | 0.675 |" in out.read_text() and "## head" not in out.read_text()
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["eval", "compare", str(first), str(tmp_path / "empty"), "--out", str(out)])
    assert result.exit_code == 1 and "not an eval run folder" in result.output


def test_missing_or_broken_files_fail_with_a_clear_message(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for first in (tmp_path / "missing.json", broken):
        result = runner.invoke(app, ["eval", "compare", str(first), str(first), "--out", str(tmp_path / "x.md")])
        assert result.exit_code == 1 and "error:" in result.output
