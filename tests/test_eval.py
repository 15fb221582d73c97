"""The evaluation harness on tiny random models and synthetic photos: metrics, the seeded split, the DIR
loader, every method's scores, resume, the report files, QA/caption runners, and the no-forgetting check."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from yollava.data.pool import ImagePool
from yollava import YoLLaVA
from yollava.prompts import RECOGNITION_QUERY
from yollava.cli import eval as commands
from yollava.eval.datasets import hold_out_pool_negatives, load_folder, seeded_split
from yollava.eval.forgetting import forgetting_check
from yollava.eval.methods import METHODS, plain_text
from yollava.eval.driver import run_benchmark
from yollava.eval.registry import get_task
from yollava.eval.report import write_report
from yollava.eval.scoring import option_probabilities, yes_probabilities
from yollava.eval.store import ProtocolMismatch
from yollava.personalize import DataConfig
from yollava.train import TrainConfig

from .conftest import ColourEmbedder, make_photos

COLOURS = {"red_mug": (220, 30, 30), "green-toy": (30, 200, 40), "blue_cat": (30, 40, 210)}


def tinted(rgb, spread=25):
    return lambda rng: tuple(max(0, min(255, c + rng.randint(-spread, spread))) for c in rgb)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A DIR dataset (3 subjects x 5 photos, one with a description and hard negatives) and a 30-photo pool."""
    root = tmp_path_factory.mktemp("eval-world")
    ds = root / "subjects"
    for i, (name, rgb) in enumerate(COLOURS.items()):
        make_photos(ds / name, 5, tinted(rgb), seed=10 + i, size=32)
    (ds / "red_mug" / "description.txt").write_text("<red_mug> is a shiny red mug with a white handle.")
    make_photos(ds / "hard_negatives" / "red_mug", 2, tinted((180, 60, 60)), seed=40, size=32)
    make_photos(ds / "annotations", 1, tinted((0, 0, 0)), seed=41, size=32)  # skipped: not a subject
    rng = np.random.default_rng(0)
    pool_dir = root / "pool"
    make_photos(pool_dir / "random", 24, lambda r: tuple(int(x) for x in rng.integers(0, 256, 3)), seed=50, size=32)
    make_photos(pool_dir / "reddish", 6, tinted((200, 50, 50)), seed=51, size=32)
    pool = ImagePool.build_or_update([pool_dir], root / "index", ColourEmbedder(), progress=False)
    return {"root": root, "ds": ds, "pool": pool, "pool_dir": pool_dir}


pytestmark = pytest.mark.usefixtures("one_thread", "private_dirs")


def small_recipe():
    return (TrainConfig(k=2, epochs=1, batch_size=8, lr=1e-2),
            DataConfig(n_easy_negatives=4, n_hard_negatives=4, conversation_tokens=3, short_answers=True))


def test_an_ablation_that_leaves_no_recognition_answer_is_unavailable(llava_engine: YoLLaVA, tmp_path):
    from yollava.eval.datasets import Subject
    from yollava.eval.methods import EvalContext, Unavailable, make_method

    paper = EvalContext(llava_engine, tmp_path, data=DataConfig())  # sentence answers only
    with pytest.raises(Unavailable, match="does not apply to this recipe"):
        make_method("yollava-no-sentence").data_config(paper, Subject("s", [], []))
    assert not make_method("yollava-no-short").data_config(EvalContext(llava_engine, tmp_path, data=DataConfig(short_answers=True)),
                                                           Subject("s", [], [])).short_answers


# ---- metrics ------------------------------------------------------------------------------------
def _record(method, subject, labels, scores, threshold=0.5):
    from yollava.train import recognition_metrics

    return {"task": "recognition", "method": method, "subject": subject, "threshold": threshold, "prepare_seconds": 1.0,
            "score_seconds": 2.0, "labels": labels, "scores": scores, "info": {},
            "metrics": recognition_metrics(labels, scores, threshold), "metrics_at_0.5": recognition_metrics(labels, scores, 0.5)}


def test_metrics_pool_subjects_like_the_paper():
    # subject a: 2 positives (1 right), 4 negatives (all right), perfect ranking except one tie
    a = _record("m", "a", [True, True, False, False, False, False], [0.9, 0.4, 0.1, 0.2, 0.3, 0.4])
    # subject b: 1 positive (right), 2 negatives (1 right)
    b = _record("m", "b", [True, False, False], [0.8, 0.7, 0.1])
    aggregate = get_task("recognition").aggregate
    res = aggregate([a, b], ["m"], ["a", "b"])
    o = res["overall"]["m"]
    assert o["n_positive"] == 3 and o["n_negative"] == 6
    assert math.isclose(o["positive_accuracy"], 2 / 3) and math.isclose(o["negative_accuracy"], 5 / 6)
    assert math.isclose(o["weighted_accuracy"], 0.5 * (2 / 3 + 5 / 6))
    auc_a = (4 + 0.5 * 0 + 3 + 0.5) / 8  # 0.9 beats all; 0.4 beats 0.1, 0.2, 0.3 and ties 0.4
    assert math.isclose(res["per_subject"]["m"]["a"]["auc"], auc_a)
    assert math.isclose(o["auc"], (auc_a + 1.0) / 2)
    a_m = res["per_subject"]["m"]["a"]
    assert math.isclose(a_m["weighted_accuracy"], 0.5 * 0.5 + 0.5 * 1.0)
    # an unavailable pair is listed, not counted
    res = aggregate([a, {"task": "recognition", "method": "m", "subject": "c", "unavailable": "no description"}], ["m"], ["a", "c"])
    assert res["overall"]["m"]["subjects"] == 1 and "unavailable" in res["per_subject"]["m"]["c"]


# ---- datasets -----------------------------------------------------------------------------------
def test_split_is_seeded_disjoint_and_independent_of_other_subjects(world, tmp_path):
    photos = [Path(f"/x/{i}.jpg") for i in range(9)]
    tr, te = seeded_split(photos, 4, seed=0, key="s")
    assert len(tr) == 4 and len(te) == 5 and not set(tr) & set(te) and set(tr) | set(te) == set(photos)
    assert seeded_split(list(reversed(photos)), 4, seed=0, key="s") == (tr, te)
    assert any(seeded_split(photos, 4, seed=s, key="s")[0] != tr for s in range(1, 6))
    assert seeded_split(photos[:2], 4, 0, "s")[1]  # always at least one test photo

    ds = load_folder(world["ds"], train_per_subject=2, seed=0)
    assert [s.name for s in ds.subjects] == ["blue_cat", "green-toy", "red_mug"]
    for s in ds.subjects:
        assert len(s.train) == 2 and len(s.test) == 3 and not set(s.train) & set(s.test)
    assert load_folder(world["ds"], 2, seed=0).split() == ds.split()
    # the same subject alone in another folder gets the same split (the seed is per subject)
    import shutil

    shutil.copytree(world["ds"] / "red_mug", tmp_path / "only" / "red_mug")
    shutil.copytree(world["ds"] / "blue_cat", tmp_path / "only" / "blue_cat")
    alone = load_folder(tmp_path / "only", 2, seed=0)
    assert [p.name for p in alone.subject("red_mug").train] == [p.name for p in ds.subject("red_mug").train]


def test_dir_loader_test_sets_descriptions_and_names(world, tmp_path):
    ds = load_folder(world["ds"], train_per_subject=2, seed=0)
    red = ds.subject("red_mug")
    assert red.description == "red mug is a shiny red mug with a white handle."  # plain name, no <identifier>
    assert len(red.negatives) == 2 and red.concept == "red_mug" and red.plain == "red mug"
    assert ds.subject("green-toy").description is None
    paths, labels = ds.test_set(red)
    assert sum(labels) == 3 and labels[:3] == [True] * 3
    negatives = [p for p, y in zip(paths, labels) if not y]
    assert set(red.negatives) <= set(negatives)
    assert set(ds.subject("blue_cat").test) <= set(negatives) and not set(ds.subject("blue_cat").train) & set(negatives)
    assert not set(red.train) & set(paths) and len(paths) == len(set(paths))
    few, few_labels = ds.test_set(red, max_negatives=4, seed=0)
    assert few[:3] == paths[:3] and sum(few_labels) == 3 and len(few) == 7 and set(few) <= set(paths)
    assert ds.test_set(red, max_negatives=4, seed=0) == (few, few_labels) and ds.test_set(red, max_negatives=100) == (paths, labels)
    # folder problems are clear errors
    make_photos(tmp_path / "one" / "a", 3, tinted((1, 2, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        load_folder(tmp_path / "one")
    with pytest.raises(FileNotFoundError):
        load_folder(tmp_path / "missing")


def test_pool_negatives_are_held_out_of_the_training_pool(world):
    ds = load_folder(world["ds"], 2, seed=0)
    pool = world["pool"]
    # (the colour embedder finds every reddish photo a near-duplicate of a red one: disable that filter here)
    train_pool = hold_out_pool_negatives(pool, ds, ds.subjects, n_random=5, n_hard=3, seed=0, near_duplicate=1.01)
    held = {str(p) for v in ds.pool_negatives.values() for p in v}
    assert len(train_pool) == len(pool) - len(held) and len(held) >= 5 + 3
    assert not held & {e["path"] for e in train_pool.entries}
    shared, red_hard = ds.pool_negatives["red_mug"][:5], ds.pool_negatives["red_mug"][5:]
    assert shared == ds.pool_negatives["blue_cat"][:5] and len(red_hard) == 3
    vecs, _, _ = pool.embed(ds.subject("red_mug").test)
    score = (pool.vectors() @ vecs.T).max(axis=1)
    ranked = [pool.entries[i]["path"] for i in np.argsort(-score) if pool.entries[i]["path"] not in map(str, shared)]
    assert [str(p) for p in red_hard] == ranked[:3]  # the pool photos nearest its test photos
    assert sum("reddish" in str(p) for p in red_hard) >= 2
    from yollava.data.builder import build_training_set

    ts = build_training_set("red_mug", ds.subject("red_mug").train, train_pool, conversations=False, n_easy_negatives=50, n_hard_negatives=10)
    assert not {str(p) for p in ts.easy_negatives} & held and not {str(h.path) for h in ts.hard_negatives} & held


# ---- scoring ------------------------------------------------------------------------------------
def test_prompt_scoring_is_p_yes_of_the_first_answer_token(llava_engine: YoLLaVA, world):
    """P(yes) / (P(yes) + P(no)) of the first answer token, computed here from the decoder's last hidden state
    and the output layer, for a concept prompt and a plain one, batched or not, with or without a photo."""
    photos = load_folder(world["ds"], 2, 0).subjects[0].test
    llava_engine.new_concept("bo", k=2)
    tok = llava_engine.adapter.tokenizer
    first = lambda ws: sorted({tok(w, add_special_tokens=False)["input_ids"][0] for w in ws})  # noqa: E731
    yes, no = first(["Yes", "yes", " Yes"]), first(["No", "no", " No"])
    cases = [(RECOGNITION_QUERY.format(identifier="<bo>"), ["bo"], photos[:3]),
             ("Is there a mug? Answer with a single word or phrase.", [], [None, photos[0], photos[1]])]
    for prompt, concepts, images in cases:
        ours = yes_probabilities(llava_engine, prompt, images, concepts=concepts, batch_size=2)  # a full batch and a padded one
        for p, img in zip(ours, images):
            hidden, _, _ = llava_engine.hidden_states([llava_engine.encode(prompt, image=img, concepts=concepts)])
            probs = llava_engine.adapter.lm_head(hidden[0, -1]).detach().float().softmax(-1)  # (the concept's own column changes no ratio)
            py, pn = probs[yes].sum(), probs[no].sum()
            assert math.isclose(p, float(py / (py + pn)), abs_tol=1e-5), (prompt, img)
        assert len(set(ours)) > 1  # the photo is seen
    plain = yes_probabilities(llava_engine, "Is there a mug? Answer with a single word or phrase.", [photos[0]])
    with_concept = yes_probabilities(llava_engine, "Is there a mug? Answer with a single word or phrase.", [photos[0]], concepts=["bo"])
    assert plain != with_concept  # the concept's sentence is introduced before the question
    probs = option_probabilities(llava_engine, ["Dog or cat?\nA. Dog\nB. Cat", "Red?\nA. Yes\nB. No"], [None, photos[0]])
    assert all(len(p) == 2 and math.isclose(sum(p), 1.0, rel_tol=1e-5) for p in probs)
    assert plain_text("<bo> is a dog; <sks>?") == "bo is a dog; sks?"


# ---- recognition runs ---------------------------------------------------------------------------
def test_every_method_scores_in_unit_interval_and_resume_skips_done_pairs(llava_engine: YoLLaVA, world, tmp_path, monkeypatch):
    import yollava.data.builder as builder

    monkeypatch.setattr(builder, "conversation_questions", lambda category: ["What colour is this subject?"])  # speed
    ds = load_folder(world["ds"], train_per_subject=2, seed=0)
    train, data = small_recipe()
    run_dir = tmp_path / "run"
    log: list[str] = []
    recognition = get_task("recognition")
    kw = dict(train=train, data=data, pool_fn=lambda: world["pool"], caption_tokens=4, summary_tokens=4, progress=False, echo=log.append)
    task = dict(subjects=["red_mug"], pool_negatives=3, pool_hard_negatives=2)
    res = run_benchmark(recognition(ds, **task), llava_engine, list(METHODS), run_dir, **kw)
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    assert {r["method"] for r in records} == set(METHODS) and all(r["subject"] == "red_mug" for r in records)
    for r in records:
        assert "unavailable" not in r, r
        assert len(r["scores"]) == len(r["labels"]) == 3 + 6 + 2 + 5  # positives, other subjects' test, hard, pool
        assert all(0.0 <= s <= 1.0 for s in r["scores"]), r["method"]
        from yollava.train import recognition_metrics

        assert r["metrics"] == recognition_metrics(r["labels"], r["scores"], r["threshold"]), r["method"]  # from these scores
    assert set(res["overall"]) == set(METHODS) and all(res["overall"][m]["subjects"] == 1 for m in METHODS)
    for m in ("yollava", "yollava-no-hard", "yollava-no-conv"):
        assert (run_dir / "concepts" / m / "red_mug.json").exists()
    ts = json.loads((run_dir / "training_sets" / "yollava-no-hard" / "red_mug.json").read_text())
    assert ts["counts"]["hard_negative"] == 0 and ts["counts"]["conversation"] > 0
    assert json.loads((run_dir / "training_sets" / "yollava-no-conv" / "red_mug.json").read_text())["counts"]["conversation"] == 0
    assert json.loads((run_dir / "training_sets" / "yollava" / "red_mug.json").read_text())["counts"]["conversation"] > 0
    desc = json.loads((run_dir / "descriptions" / "red_mug.json").read_text())
    assert len(desc["captions"]) == 2 and "description" in desc
    assert res["per_subject"]["text-human"]["red_mug"]["description"].startswith("red mug is")

    # fused: who's fused mode from the run's own yollava and head records, no model run; without them, unavailable
    from yollava.who.verify import fuse

    fused = run_benchmark(recognition(ds, **task), llava_engine, ["fused"], run_dir, **kw)
    by = {r["method"]: r for r in (json.loads(x) for x in (run_dir / "records.jsonl").read_text().splitlines())}
    expected = [fuse(h, by["head"]["threshold"], y, by["yollava"]["threshold"])[0] for h, y in zip(by["head"]["scores"], by["yollava"]["scores"])]
    assert np.allclose(by["fused"]["scores"], expected, atol=1e-6) and by["fused"]["threshold"] == 0.5
    assert fused["overall"]["fused"]["subjects"] == 1
    alone = run_benchmark(recognition(ds, **task), llava_engine, ["fused"], tmp_path / "fused-alone", **kw)
    assert "run --methods head,yollava,fused" in alone["per_subject"]["fused"]["red_mug"]["unavailable"]

    # resume: finished pairs are skipped (no training, no scoring), a new subject is added
    import yollava.eval.methods as methods_mod

    def boom(*a, **k):
        raise AssertionError("a finished pair was redone")

    log.clear()
    orig = methods_mod.YollavaMethod.prepare
    methods_mod.YollavaMethod.prepare = boom
    try:
        again = run_benchmark(recognition(ds, **task), llava_engine, list(METHODS), run_dir, **kw)
    finally:
        methods_mod.YollavaMethod.prepare = orig
    assert sum("done earlier, skipped" in line for line in log) == len(METHODS)
    assert again["overall"] == res["overall"]
    task2 = dict(task, subjects=["red_mug", "green-toy"])
    both = run_benchmark(recognition(ds, **task2), llava_engine, ["vanilla", "text-human"], run_dir, **kw)
    assert both["overall"]["vanilla"]["subjects"] == 2
    assert both["per_subject"]["text-human"]["green-toy"] == {"unavailable": "no human-written description of this subject"}

    # a different protocol in the same folder is refused
    with pytest.raises(ProtocolMismatch, match="seed"):
        run_benchmark(recognition(load_folder(world["ds"], 2, seed=1), **task, seed=1), llava_engine, ["vanilla"], run_dir, **kw)

    # another run folder under the same protocol reuses the finished records (and computes nothing); under another
    # protocol it does not
    import yollava.eval.methods as methods_module

    def no_scoring(*a, **k):
        raise AssertionError("scored again")

    real_scores = methods_module.yes_probabilities
    methods_module.yes_probabilities = no_scoring
    try:
        reused = run_benchmark(recognition(ds, **task2), llava_engine, ["vanilla"], tmp_path / "again", reuse_from=[run_dir], **kw)
        with pytest.raises(AssertionError, match="scored again"):
            run_benchmark(recognition(load_folder(world["ds"], 2, seed=1), **task2, seed=1), llava_engine, ["vanilla"], tmp_path / "other",
                          reuse_from=[run_dir], **kw)
    finally:
        methods_module.yes_probabilities = real_scores
    assert reused["per_subject"]["vanilla"] == both["per_subject"]["vanilla"]
    copied = [json.loads(x) for x in (tmp_path / "again" / "records.jsonl").read_text().splitlines()]
    assert copied and all(r["reused_from"] == str(run_dir) for r in copied)

    # the report files
    paths = write_report(both, tmp_path / "out" / "results.json", "test")
    assert [p.name for p in paths] == ["results.json", "results.md", "results.png"] and all(p.stat().st_size > 0 for p in paths)
    md = paths[1].read_text()
    assert "| vanilla | 2 |" in md and "green-toy" in md and "Not run" in md
    assert Image.open(paths[2]).size[0] > 100


def test_a_subject_blind_prompt_reads_each_photo_once_per_run(llava_engine: YoLLaVA, world, tmp_path, monkeypatch):
    """``vanilla-sks`` asks every subject the same question: a photo scored for one subject (as its own test photo)
    is not scored again for the next (as another subject's), and the kept score is the one a fresh pass gives."""
    import yollava.eval.methods as methods_module

    ds = load_folder(world["ds"], train_per_subject=2, seed=0)
    seen: list[str] = []
    real = methods_module.yes_probabilities

    def counting(engine, prompt, images, **kw):
        seen.extend(str(x) for x in images)
        return real(engine, prompt, images, **kw)

    monkeypatch.setattr(methods_module, "yes_probabilities", counting)
    train, data = small_recipe()
    task = get_task("recognition")(ds, subjects=["red_mug", "green-toy"])
    res = run_benchmark(task, llava_engine, ["vanilla-sks"], tmp_path / "run", train=train, data=data,
                        pool_fn=lambda: world["pool"], caption_tokens=4, summary_tokens=4, progress=False, echo=lambda _: None)
    tested = {str(p) for s in ds.subjects for p in ds.test_set(s, None, 0)[0]}
    assert len(seen) == len(set(seen)) and set(seen) <= tested  # every photo read once in all
    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert sum(len(r["scores"]) for r in records) > len(seen)  # the second subject reused the first one's reads
    fresh = real(llava_engine, RECOGNITION_QUERY.format(identifier="sks"), [world["root"] / p for p in records[1]["photos"]])
    assert np.allclose(records[1]["scores"], fresh, atol=1e-5)
    assert res["overall"]["vanilla-sks"]["subjects"] == 2


def test_cli_recognition_report_and_resume(tiny_model_dirs, world, tmp_path, monkeypatch):
    monkeypatch.setattr("yollava.data.pool.default_embedder", ColourEmbedder)
    runner = CliRunner()
    out = tmp_path / "res" / "results.json"
    args = ["recognition", "--dataset", str(world["ds"]), "--methods", "vanilla,head", "--out", str(out),
            "--model", str(tiny_model_dirs["llava"]), "--train-per-subject", "2", "--max-subjects", "2",
            "--pool", str(world["pool_dir"]), "--index-dir", str(tmp_path / "idx"), "--n-easy", "5", "--n-hard", "5", "--quiet"]
    r = runner.invoke(commands.eval_app, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["methods"] == ["vanilla", "head"] and res["subjects"] == ["blue_cat", "green-toy"]
    assert out.with_suffix(".md").exists() and out.with_suffix(".png").exists()
    assert (tmp_path / "res" / "results.run" / "records.jsonl").exists()
    r = runner.invoke(commands.eval_app, args, catch_exceptions=False)
    assert r.exit_code == 0 and r.output.count("done earlier, skipped") == 4
    r = runner.invoke(commands.eval_app, ["recognition", "--methods", "magic", "--out", str(out)])
    assert r.exit_code == 1 and "unknown method" in r.output
    r = runner.invoke(commands.eval_app, ["report", str(out)])
    assert r.exit_code == 0 and "results.png" in r.output
    photo = load_folder(world["ds"], 2, 0).subjects[0].test[0]
    fout = tmp_path / "forgetting" / "forgetting.json"
    r = runner.invoke(commands.eval_app, ["forgetting", "--model", str(tiny_model_dirs["llava"]), "--random", "2", "--photo", str(photo),
                                          "--max-new-tokens", "3", "--out", str(fout), "--concepts-dir", str(tmp_path / "c")])
    assert r.exit_code == 0 and "PASSED" in r.output, r.output
    assert json.loads(fout.read_text())["passed"] and "PASSED" in fout.with_suffix(".md").read_text()


# ---- QA, captions ---------------------------------------------------------------------------------
def _fake_yollava_data(root: Path) -> Path:
    """A minimal copy of the Yo'LLaVA layout: two subjects, text and visual QA files, descriptions."""
    y = root / "yollava"
    make_photos(y / "bo" / "train", 2, tinted((200, 120, 40)), seed=1)
    make_photos(y / "bo" / "test", 2, tinted((200, 120, 40)), seed=2)
    make_photos(y / "one_image_per_concept", 1, tinted((20, 20, 200)), seed=3)
    (y / "one_image_per_concept" / "0.jpg").rename(y / "one_image_per_concept" / "cat-cup.jpg")
    ann = y / "annotations"
    ann.mkdir(parents=True)
    text_qa = {s: {str(i): {"question": f"Is sks a dog ({i})?", "option": {"A": "Yes", "B": "No"}, "correct_answer": "AB"[i % 2]}
                   for i in range(3)} for s in ("bo", "cat-cup", "shiba-black")}
    (ann / "yollava-text-only-qa.rap.json").write_text(json.dumps(text_qa))
    visual = {"bo": {"./yollava-data/test/bo/1.png": {"question": "What colour is <sks>?", "options": {"A": "Brown", "B": "Grey"}, "correct_answer": "A"},
                     "./yollava-data/test/bo/7.png": {"question": "Where is <sks>?", "options": {"A": "Sofa", "B": "Park"}, "correct_answer": "B"}}}
    (ann / "yollava-visual-qa.official.json").write_text(json.dumps(visual))
    info = {"concept_dict": {"<bo>": {"name": "bo", "info": "<bo> is an orange Shiba Inu.", "category": "dog"},
                             "<cat-cup>": {"name": "cat-cup", "info": "<cat-cup> is a blue cup.", "category": "cup"}}}
    (ann / "concept_info.rap_database.json").write_text(json.dumps(info))
    return root


def test_qa_text_and_visual(llava_engine: YoLLaVA, world, tmp_path):
    from yollava.eval.qa import QATask, load_qa

    root = _fake_yollava_data(tmp_path / "data")
    items, counts = load_qa("visual", root)
    assert counts == {"file": "yollava-visual-qa.official.json", "questions_in_file": 2, "asked": 1, "missing_photos": 1}
    assert items[0].image.name == "1.jpg" and items[0].prompt("<bo>").startswith("What colour is <bo>?\nA. Brown\nB. Grey")
    train, data = small_recipe()
    data = DataConfig(n_easy_negatives=3, n_hard_negatives=0, hard_negatives=False, conversations=False)
    res = run_benchmark(QATask("text", data_root=root), llava_engine, ["yollava", "vanilla", "vanilla-sks", "text-human"], tmp_path / "qa",
                        train=train, data=data, pool_fn=lambda: world["pool"], progress=False, echo=lambda s: None)
    assert res["subjects"] == ["bo", "cat-cup", "shiba-black"]
    assert res["per_subject"]["yollava"]["shiba-black"] == {"unavailable": "no training photo"}
    assert res["per_subject"]["yollava"]["cat-cup"]["n_training_photos"] == 1
    assert res["overall"]["vanilla"]["n"] == 9
    assert res["overall"]["vanilla-sks"]["n"] == 9
    assert res["per_subject"]["text-human"]["shiba-black"]["unavailable"].startswith("no human")
    records = [json.loads(x) for x in (tmp_path / "qa" / "records.jsonl").read_text().splitlines()]
    vanilla = [r for r in records if r["method"] == "vanilla"]
    for r in (r for r in records if "p_correct" in r):  # the letter answered is the right one exactly when P(right) >= 0.5
        for key in ("", "_swapped"):
            assert [a == c for a, c in zip(r[f"answers{key}"], r[f"correct{key}"])] == [p >= 0.5 for p in r[f"p_correct{key}"]], r
        per_mean = ["A" if a[0] / a[1] >= b[0] / b[1] else "B" for a, b in zip(r["loglik"][::2], r["loglik"][1::2])]
        assert r["answers_likelihood"] == per_mean  # option-likelihood scoring beside the letters
    right = sum(a == c for r in vanilla for k in ("", "_swapped") for a, c in zip(r[f"answers{k}"], r[f"correct{k}"]))
    assert math.isclose(res["overall"]["vanilla"]["accuracy"], right / 18)
    right = sum(a == c for r in vanilla for a, c in zip(r["answers_likelihood"], r["correct"]))
    assert math.isclose(res["overall"]["vanilla"]["accuracy_likelihood"], right / 9)
    res = run_benchmark(get_task("qa")("visual", data_root=root), llava_engine, ["vanilla"], tmp_path / "qav", progress=False, echo=lambda s: None)
    assert res["overall"]["vanilla"]["n"] == 1
    paths = write_report(res, tmp_path / "qav.json")
    assert "| vanilla | 1 | 1 |" in paths[1].read_text()
    assert items[0].prompt("bo", swapped=True).endswith("A. Grey\nB. Brown\nAnswer with the option's letter from the given choices directly.")
    assert items[0].correct_letter(True) == "B"


def test_qa_scores_are_not_fooled_by_a_skewed_answer_key():
    aggregate_qa = get_task("qa").aggregate

    # a model that always says "A", on a key where 9 of 10 answers are "A"
    r = {"task": "qa", "method": "m", "subject": "s", "answers": ["A"] * 10, "correct": ["A"] * 9 + ["B"],
         "answers_swapped": ["A"] * 10, "correct_swapped": ["B"] * 9 + ["A"], "p_correct": [0.6] * 10, "p_correct_swapped": [0.4] * 10}
    o = aggregate_qa([r], ["m"], ["s"])["overall"]["m"]
    assert o["accuracy_as_given"] == 0.9 and o["accuracy_swapped"] == 0.1 and o["accuracy"] == 0.5
    assert o["accuracy_both_orders"] == 0.0 and o["answered_A"] == 1.0 and math.isclose(o["mean_p_correct"], 0.5)


def test_caption_recall(llava_engine: YoLLaVA, world, tmp_path):
    from yollava.eval.caption import CaptionTask, names_subject

    assert names_subject("A photo of <red_mug> on a table", "<red_mug>") and not names_subject("a red_mug", "<red_mug>")
    assert names_subject("A Red Mug on a table", "red mug") and names_subject("the red_mug", "red mug")
    assert names_subject("Bo is asleep.", "bo") and not names_subject("A photo of a booby; its body is brown.", "bo")  # whole words
    # the prompt's concept definition repeated back does not name the subject (two v1 "hits" were this)
    assert not names_subject("<red_mug> is <red_mug_1><red_mug_2>. A cup.", "<red_mug>")
    assert names_subject("<red_mug> is <red_mug_1>. <red_mug> stands on a table.", "<red_mug>")
    ds = load_folder(world["ds"], 2, 0)
    train, _ = small_recipe()
    data = DataConfig(n_easy_negatives=3, n_hard_negatives=0, hard_negatives=False, conversations=False)
    res = run_benchmark(CaptionTask(ds, subjects=["red_mug"], max_photos=2, max_new_tokens=4), llava_engine, ["yollava", "vanilla"], tmp_path / "cap",
                        train=train, data=data, pool_fn=lambda: world["pool"], progress=False, echo=lambda s: None)
    assert res["overall"]["yollava"]["n"] == 2
    (rec,) = [json.loads(x) for x in (tmp_path / "cap" / "records.jsonl").read_text().splitlines() if '"yollava"' in x]
    assert rec["mention"] == "<red_mug>" and rec["hits"] == [names_subject(c, "<red_mug>") for c in rec["captions"]]
    assert res["overall"]["yollava"]["recall"] == sum(rec["hits"]) / 2
    assert res["overall"]["vanilla"]["n"] == 2
    paths = write_report(res, tmp_path / "cap.json")
    assert paths[2].exists()

    # another run folder reuses the concept trained with the same photos and settings, and only then
    from yollava.personalize import ConceptPipeline  # (what eval's yollava method trains with)

    def no_training(*a, **k):
        raise AssertionError("trained again")

    task = CaptionTask(ds, subjects=["red_mug"], max_photos=1, max_new_tokens=2)
    kw = dict(data=data, pool_fn=lambda: world["pool"], progress=False, echo=lambda s: None, reuse_from=[tmp_path / "cap"])
    real = ConceptPipeline.run
    ConceptPipeline.run = no_training
    try:
        again = run_benchmark(task, llava_engine, ["yollava"], tmp_path / "cap2", train=train, **kw)
        assert again["overall"]["yollava"]["n"] == 1 and (tmp_path / "cap2" / "concepts" / "yollava" / "red_mug.safetensors").exists()
        with pytest.raises(AssertionError, match="trained again"):
            run_benchmark(task, llava_engine, ["yollava"], tmp_path / "cap3", train=TrainConfig(k=2, epochs=2, lr=1e-2), **kw)
    finally:
        ConceptPipeline.run = real


# ---- no forgetting --------------------------------------------------------------------------------
def test_no_forgetting_with_several_concepts_loaded(llava_engine: YoLLaVA, world, tmp_path):
    photos = load_folder(world["ds"], 2, 0).subjects[0].test[:1]
    llava_engine.new_concept("kept", k=2)  # a concept loaded beforehand is put back afterwards
    result = forgetting_check(llava_engine, n_random=3, images=photos, questions=["What is a dog?", "Name a colour."],
                              photo_questions=["Describe this photo."], max_new_tokens=6, k=4)
    assert result["passed"], result
    assert result["cases"] == 3 and result["max_logit_diff"] == 0.0 and len(result["concepts_loaded"]) == 3
    assert llava_engine.bank.names() == ["kept"]
    # the check does notice a change: a question naming a loaded concept is not "general"
    from yollava.eval.forgetting import forgetting_markdown

    assert "PASSED" in forgetting_markdown(result)


def test_text_model_description_asks_again_after_a_refusal(llava_engine: YoLLaVA, world, tmp_path, monkeypatch):
    from yollava.eval.methods import CAPTION_PROMPT, EvalContext, TextModelMethod

    asked = []

    def chat(prompt, image=None, concepts=(), **kw):
        asked.append(prompt)
        if prompt.startswith("You are an AI visual assistant"):
            return "I'm sorry, but I can't assist with that."
        return "red mug is a shiny red <red_mug> mug." if image is None else "A red mug on a table."

    monkeypatch.setattr(llava_engine, "chat", chat)
    subject = load_folder(world["ds"], 2, 0).subject("red_mug")
    d = TextModelMethod().describe(EvalContext(llava_engine, tmp_path), subject)
    assert d["captions"] == ["A red mug on a table."] * 2 and d["caption_fallbacks"] == 2
    assert d["description"] == "red mug is a shiny red red_mug mug."  # no concept-like tokens left
    assert asked[0] == CAPTION_PROMPT.format(name="red mug") and "1. A red mug on a table." in asked[-1]


def test_option_likelihood_is_the_log_probability_of_the_option_text(llava_engine: YoLLaVA):
    import torch.nn.functional as F

    from yollava.eval.scoring import answer_loglikelihoods

    prompts, answers = ["What colour is the sky?", "What colour is the sky?"], ["Blue.", "A deep green colour."]
    scored = answer_loglikelihoods(llava_engine, prompts, answers, [None, None])
    for (logp, n), prompt, answer in zip(scored, prompts, answers):
        enc = llava_engine.encode(prompt, answer=answer)
        hidden, ids, mask = llava_engine.hidden_states([enc])
        logits = llava_engine.bank.logits(hidden[0, :-1], llava_engine.adapter.lm_head).float()
        token_logp = -F.cross_entropy(logits, ids[0, 1:], reduction="none")
        scored_positions = [t - 1 for t, a in enumerate(enc.answer_mask) if a][:-1]  # not the end-of-turn token
        assert n == len(scored_positions) and n > 0
        assert abs(logp - token_logp[scored_positions].sum().item()) < 1e-3


def test_likelihood_scoring_is_reported_beside_letter_scoring():
    qa = get_task("qa")

    # always "A" by letter, but the option text it finds likelier is the right one 8 times in 10
    r = {"task": "qa", "method": "m", "subject": "s", "answers": ["A"] * 10, "correct": ["A"] * 9 + ["B"],
         "answers_swapped": ["A"] * 10, "correct_swapped": ["B"] * 9 + ["A"], "p_correct": [0.6] * 10, "p_correct_swapped": [0.4] * 10,
         "answers_likelihood": ["A"] * 7 + ["B"] * 3, "answers_likelihood_sum": ["A"] * 10}
    res = qa.aggregate([r], ["m"], ["s"])
    o = res["overall"]["m"]
    assert o["accuracy"] == 0.5 and o["accuracy_likelihood"] == 0.8 and o["accuracy_likelihood_sum"] == 0.9
    assert "| m | 1 | 10 | **0.800** | 0.900 | **0.500** |" in qa.markdown({**res, "kind": "text"})


def test_a_setting_added_later_at_its_off_value_keeps_old_run_folders_valid(tmp_path):
    from yollava.eval.store import ProtocolMismatch, RunStore

    RunStore(tmp_path / "run", {"train": {"epochs": 1}})
    RunStore(tmp_path / "run", {"train": {"epochs": 1, "gradient_checkpointing": False}})  # added later, off: same run
    with pytest.raises(ProtocolMismatch, match="gradient_checkpointing"):
        RunStore(tmp_path / "run", {"train": {"epochs": 1, "gradient_checkpointing": True}})
    with pytest.raises(ProtocolMismatch, match="epochs"):
        RunStore(tmp_path / "run", {"train": {"epochs": 2}})


# ---- the one driver and its registries ------------------------------------------------------------
def test_a_new_baseline_is_one_registered_class(llava_engine: YoLLaVA, world, tmp_path, tiny_model_dirs):
    from yollava.eval.methods import Method
    from yollava.eval.registry import method_names, register_method, task_names, unregister_method

    assert set(task_names()) == {"recognition", "qa", "caption", "forgetting", "generation"}
    prepared: list[str] = []

    @register_method("oracle", tasks=("recognition",))
    class Oracle(Method):
        """Knows the answer: 1 for the subject's own test photos, 0 for everything else."""

        llm = False

        def prepare(self, ctx, subject):
            prepared.append(subject.name)
            return {"knows": True}

        def recognition_scores(self, ctx, subject, images):
            return [1.0 if p in subject.test else 0.0 for p in images]

    try:
        assert "oracle" in method_names("recognition") and "oracle" not in method_names("qa")
        ds = load_folder(world["ds"], 2, 0)
        log: list[str] = []
        kw = dict(progress=False, echo=log.append)
        res = run_benchmark(get_task("recognition")(ds, subjects=["red_mug", "blue_cat"]), llava_engine, ["oracle", "vanilla"], tmp_path / "run", **kw)
        o = res["overall"]["oracle"]
        assert o["subjects"] == 2 and o["weighted_accuracy"] == 1.0 and o["auc"] == 1.0 and o["n_positive"] == 6
        assert res["per_subject"]["oracle"]["red_mug"]["weighted_accuracy"] == 1.0 and res["overall"]["vanilla"]["subjects"] == 2
        assert sorted(prepared) == ["blue_cat", "red_mug"]
        records = [json.loads(x) for x in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
        assert [r["info"] for r in records if r["method"] == "oracle"] == [{"knows": True}] * 2
        md = write_report(res, tmp_path / "out" / "results.json", "oracle")[1].read_text()
        assert "| oracle | 2 | 1.000 | 1.000 | **1.000** | 1.000 |" in md

        # resume: the finished pairs are not prepared or scored again, and aggregate the same
        prepared.clear()
        log.clear()
        again = run_benchmark(get_task("recognition")(ds, subjects=["red_mug", "blue_cat"]), llava_engine, ["oracle", "vanilla"], tmp_path / "run", **kw)
        assert prepared == [] and sum("done earlier, skipped" in line for line in log) == 4 and again["overall"] == res["overall"]

        # the command line offers it where it is registered, and only there
        runner = CliRunner()
        out = tmp_path / "cli" / "results.json"
        r = runner.invoke(commands.eval_app, ["recognition", "--dataset", str(world["ds"]), "--methods", "oracle", "--out", str(out),
                                              "--model", str(tiny_model_dirs["llava"]), "--train-per-subject", "2", "--max-subjects", "1",
                                              "--quiet"], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        assert json.loads(out.read_text())["overall"]["oracle"]["weighted_accuracy"] == 1.0
        r = runner.invoke(commands.eval_app, ["qa", "--methods", "oracle", "--out", str(tmp_path / "qa.json")])
        assert r.exit_code == 1 and "unknown method(s) oracle" in r.output
    finally:
        unregister_method("oracle")
    assert "oracle" not in method_names()


def test_committed_run_folders_aggregate_to_their_committed_results():
    """Run folders written before the one driver (benchmarks/results/*/*.run) read back to the numbers
    their results.json report, for every task that has one."""
    from yollava.eval.registry import get_task
    from yollava.eval.store import RunStore

    root = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    checked: dict[str, int] = {}
    for res_path in sorted(root.glob("**/*.json")):
        run = res_path.with_suffix(".run")
        if not (run / "records.jsonl").is_file():
            continue
        results = json.loads(res_path.read_text(encoding="utf-8"))
        if not isinstance(results, dict) or "per_subject" not in results:
            continue
        store = RunStore.__new__(RunStore)  # read only: no config.json check, nothing written
        store.path = run / "records.jsonl"
        task = get_task(results.get("task", "recognition"))
        again = json.loads(json.dumps(task.aggregate(store.records(), results["methods"], results["subjects"])))
        assert again["overall"] == results["overall"] and again["per_subject"] == results["per_subject"], res_path
        checked[task.name] = checked.get(task.name, 0) + 1
    if not checked:
        pytest.skip("no committed run folders in this checkout")
    assert set(checked) >= {"recognition"}


def test_a_forgetting_result_has_a_report_like_every_task(tmp_path):
    result = {"task": "forgetting", "concepts_loaded": ["a"], "cases": 1, "identical": 0, "passed": False, "max_logit_diff": 0.5,
              "rows": [{"question": "Hi?", "photo": None, "answer_without": "Hello.", "answer_with": "Bye.", "identical": False,
                        "max_logit_diff": 0.5}]}
    paths = write_report(result, tmp_path / "forgetting.json")
    assert [p.name for p in paths] == ["forgetting.json", "forgetting.md"]
    assert "**FAILED**" in paths[1].read_text() and "Hello. / Bye." in paths[1].read_text()


def test_methods_help_and_default_come_from_the_registry():
    """``--methods`` lists every method a task accepts and its default, as registered (nothing typed by hand)."""
    import click
    import typer

    from yollava.eval.registry import default_methods, method_names

    assert default_methods("recognition") == ("yollava", "vanilla", "text-human", "text-model", "head")
    assert default_methods("qa") == default_methods("caption") == ("yollava", "vanilla", "text-human")
    assert len(method_names("recognition")) == 22  # 18 (myvlm and fused among them) + yochameleon and its 3 ablations (on a model that draws)
    group = typer.main.get_command(commands.eval_app)
    for task in ("recognition", "qa", "caption"):
        cmd = group.commands[task]
        with click.Context(cmd, info_name=task) as ctx:
            cmd.get_help(ctx)
        (help_text,) = [p.help for p in cmd.params if p.name == "methods"]
        assert help_text == f"Comma-separated, from: {', '.join(method_names(task))} (default: {','.join(default_methods(task))})."
        assert "probe-llm" in help_text if task == "recognition" else "probe-llm" not in help_text
