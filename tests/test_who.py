"""Who is in this photo: visual signatures in concept files, the prototype index, retrieve-then-verify,
multi-label answers on synthetic subjects, instant concepts, and chat that introduces what it found."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from yollava import who as W
from yollava.concepts import Concept, load_concept, save_concept
from yollava.data.pool import ImagePool
from yollava import YoLLaVA
from yollava.errors import ConceptNotReadyError, CorruptConceptError
from yollava.models import load_model
from yollava.personalize import DataConfig, personalize
from yollava.train import TrainConfig

PALETTE = {
    "red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 210), "yellow": (230, 220, 30),
    "cyan": (30, 210, 210), "magenta": (210, 30, 200), "white": (240, 240, 240), "black": (15, 15, 15),
}
SUBJECTS = ("red", "green", "blue")


class PaletteEmbedder:
    """Stand-in for EfficientNet: the share of the photo's pixels nearest each palette colour (a bag of colours),
    so a photo with two subjects has both subjects' features, as pooled CNN features roughly do."""

    fingerprint = "test-palette-v1"

    def __init__(self):
        self.colours = np.array(list(PALETTE.values()), dtype=np.float32)

    def embed(self, images):
        out = []
        for img in images:
            a = np.asarray(img.convert("RGB").resize((16, 16)), dtype=np.float32).reshape(-1, 3)
            nearest = ((a[:, None, :] - self.colours[None]) ** 2).sum(-1).argmin(1)
            v = np.bincount(nearest, minlength=len(self.colours)).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)


def photo(path, colours, seed=0, size=32):
    """A photo split into vertical bands of the given palette colours, with pixel noise."""
    rng = np.random.default_rng(seed)
    a = np.zeros((size, size, 3), np.float32)
    for i, c in enumerate(colours):
        a[:, i * size // len(colours):(i + 1) * size // len(colours)] = PALETTE[c]
    a = np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, quality=95)
    return path


pytestmark = pytest.mark.usefixtures("one_thread", "private_dirs")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three subjects (4 training + 2 test photos each), and a pool of photos of the other colours."""
    root = tmp_path_factory.mktemp("who-world")
    subjects = {s: [photo(root / s / f"{i}.jpg", [s], seed=i + 10 * k) for i in range(6)] for k, s in enumerate(SUBJECTS)}
    others = [c for c in PALETTE if c not in SUBJECTS]
    rng = random.Random(0)
    for i in range(40):
        cols = [rng.choice(others)] if i % 2 else rng.sample(others, 2)
        photo(root / "pool" / f"p{i:02d}.jpg", cols, seed=100 + i)
    pool = ImagePool.build_or_update([root / "pool"], root / "index", PaletteEmbedder(), progress=False)
    return {"root": root, "subjects": subjects, "pool": pool}


@pytest.fixture
def engine(tiny_model_dirs, tmp_path) -> YoLLaVA:
    e = YoLLaVA(load_model(str(tiny_model_dirs["llava"])), concepts_dir=tmp_path / "concepts")
    W.set_embedder(e, PaletteEmbedder())
    return e


def store_subjects(engine, world, names=SUBJECTS, k=2):
    """Trained-looking concepts (initial rows) with signatures fitted on each subject's first 4 photos."""
    for i, s in enumerate(names):
        sig = W.fit_signature(world["subjects"][s][:4], W.embedder_for(engine), world["pool"], seed=i)
        c = Concept.initialise(s, engine.adapter.embed_tokens.weight, engine.adapter.lm_head.weight, k=k, seed=i)
        c.meta["stage"] = "trained"
        save_concept(W.attach_signature(c, sig), engine.concepts_dir, engine.fingerprint())


# ---- the signature in the concept file ------------------------------------------------------
def test_signature_round_trips_and_is_validated(engine, world, tmp_path):
    sig = W.fit_signature(world["subjects"]["red"][:4], PaletteEmbedder(), world["pool"])
    assert sig.head is not None and sig.head.info["kind"] == "logistic" and sig.head.info["n_negative"] > 0
    assert np.linalg.norm(sig.prototype) == pytest.approx(1.0, abs=1e-5)
    c = Concept.initialise("red", engine.adapter.embed_tokens.weight, engine.adapter.lm_head.weight, k=2)
    save_concept(W.attach_signature(c, sig), tmp_path, engine.fingerprint())
    meta = json.loads((tmp_path / "red.json").read_text())
    assert meta["visual"]["embedder"] == "test-palette-v1" and meta["visual"]["dim"] == len(PALETTE)
    back = W.VisualSignature.from_concept(load_concept(tmp_path, "red", engine.fingerprint()))
    assert np.allclose(back.prototype, sig.prototype) and np.allclose(back.head.weight, sig.head.weight)
    assert back.head.bias == pytest.approx(sig.head.bias)

    # a concept file from before signatures (rows only) still loads, with no signature
    old = Concept.initialise("old", engine.adapter.embed_tokens.weight, engine.adapter.lm_head.weight, k=2)
    save_concept(old, tmp_path, engine.fingerprint())
    assert W.VisualSignature.from_concept(load_concept(tmp_path, "old", engine.fingerprint())) is None

    # every broken signature is refused when saving (and so never written)
    def broken(**tensors):
        bad = Concept.initialise("bad", engine.adapter.embed_tokens.weight, engine.adapter.lm_head.weight, k=2)
        W.attach_signature(bad, sig)
        bad.extra_tensors.update(tensors)
        return bad

    d = len(PALETTE)
    for tensors, message in (
        ({"prototype": torch.full((d,), float("nan"))}, "NaN"),
        ({"head.weight": torch.ones(d + 1)}, "head.weight must have shape"),
        ({"head.bias": torch.ones(2)}, "head.bias must have shape"),
        ({"prototype": torch.zeros(d)}, "all zeros"),
        ({"colour_lut": torch.ones(3)}, "found unexpected"),
    ):
        with pytest.raises(CorruptConceptError, match=message):
            save_concept(broken(**tensors), tmp_path / "bad", engine.fingerprint())
        assert not (tmp_path / "bad" / "bad.json").exists()
    nometa = broken()
    nometa.meta.pop("visual")
    with pytest.raises(CorruptConceptError, match="visual.embedder"):
        save_concept(nometa, tmp_path / "bad", engine.fingerprint())
    wrongdim = broken()
    wrongdim.meta["visual"]["dim"] = d + 3
    with pytest.raises(CorruptConceptError, match="visual.dim"):
        save_concept(wrongdim, tmp_path / "bad", engine.fingerprint())


def test_prototype_head_without_a_pool(world):
    sig = W.fit_signature(world["subjects"]["blue"][:4], PaletteEmbedder(), pool=None)
    assert sig.head.info["kind"] == "prototype" and sig.head.info["n_negative"] == 0
    x = W.embed_images(PaletteEmbedder(), [world["subjects"]["blue"][5], world["subjects"]["red"][5]])
    p_blue, p_red = sig.head.probability(x)
    assert p_blue > 0.5 > p_red


# ---- the index --------------------------------------------------------------------------------
def test_prototype_index_stays_consistent_under_adds_and_removes():
    rng = np.random.default_rng(0)
    index, truth = W.PrototypeIndex(8), {}
    for step in range(300):
        name = f"c{rng.integers(0, 40)}"
        if rng.random() < 0.6:
            v = rng.normal(size=8).astype(np.float32)
            index.add(name, v)
            truth[name] = v / np.linalg.norm(v)
        else:
            assert index.remove(name) == (name in truth)
            truth.pop(name, None)
        assert len(index) == index.ntotal == len(truth) and set(index.names()) == set(truth)
        if step % 25 == 0 and truth:
            q = rng.normal(size=8).astype(np.float32)
            got = index.search(q, 5)
            names = sorted(truth, key=lambda n: -float(truth[n] @ (q / np.linalg.norm(q))))[:5]
            assert [n for n, _ in got] == names
            assert all(s == pytest.approx(float(truth[n] @ (q / np.linalg.norm(q))), abs=1e-5) for n, s in got)


def test_who_index_follows_the_files(engine, world):
    blue = world["subjects"]["blue"][5]
    empty = engine.who(blue)
    assert empty.found == [] and empty.checked == [] and empty.n_concepts == 0
    store_subjects(engine, world)
    assert engine.who(blue, mode="head").names == ["blue"]
    index = W.index_for(engine)
    assert sorted(index.names()) == sorted(SUBJECTS) and index.index.ntotal == index.heads.ntotal == 3
    # removed on disk -> gone from the index and the answers
    for suffix in (".json", ".safetensors"):
        (engine.concepts_dir / f"blue{suffix}").unlink()
    assert engine.who(blue, mode="head").names == []
    assert sorted(index.names()) == ["green", "red"] and index.index.ntotal == index.heads.ntotal == 2
    # added back under another name, and a loaded concept joins without being saved
    store_subjects(engine, {**world, "subjects": {"navy": world["subjects"]["blue"]}}, names=["navy"])
    assert engine.who(blue, mode="head").names == ["navy"]
    c = Concept.initialise("bleu", engine.adapter.embed_tokens.weight, engine.adapter.lm_head.weight, k=2, seed=5)
    c.meta["stage"] = "trained"
    engine.add_concept(W.attach_signature(c, W.fit_signature(world["subjects"]["blue"][:4], PaletteEmbedder(), world["pool"])))
    assert sorted(engine.who(blue, mode="head").names) == ["bleu", "navy"]
    engine.unload_concept("bleu")
    assert engine.who(blue, mode="head").names == ["navy"] and index.index.ntotal == index.heads.ntotal == 3
    # a concept replaced in place (new file, other photos) gets its new prototype
    store_subjects(engine, {**world, "subjects": {"navy": world["subjects"]["green"]}}, names=["navy"])
    assert sorted(engine.who(world["subjects"]["green"][5], mode="head").names) == ["green", "navy"]
    assert engine.who(blue, mode="head").names == []


# ---- who is here ------------------------------------------------------------------------------
def test_multi_label_on_synthetic_subjects(engine, world, tmp_path):
    store_subjects(engine, world)
    for s in SUBJECTS:  # each subject's held-out photo: that subject only, found first
        r = engine.who(world["subjects"][s][5], mode="head")
        assert r.names == [s] and r.found[0].mode == "head" and r.found[0].p_yes >= r.found[0].threshold
    two = photo(tmp_path / "red_blue.jpg", ["red", "blue"], seed=7)
    for strategy in ("retrieve", "all"):
        r = engine.who(two, mode="head", strategy=strategy)
        assert sorted(r.names) == ["blue", "red"], [f.as_dict() for f in r.checked]
    assert engine.who(photo(tmp_path / "yellow.jpg", ["yellow"], seed=8), mode="head").names == []
    # with top_k=1 only the nearest prototype and the best head are verified: at most two concepts
    r = engine.who(two, mode="head", top_k=1)
    assert 1 <= len(r.checked) <= 2 and set(r.names) <= {"red", "blue"}


def test_retrieve_equals_verify_all_when_every_concept_is_retrieved(engine, world):
    store_subjects(engine, world)
    q = world["subjects"]["green"][4]
    for mode in ("head", "yollava", "fused"):
        a = engine.who(q, mode=mode, strategy="all")
        b = engine.who(q, mode=mode, strategy="retrieve", top_k=len(SUBJECTS))
        assert [(f.concept, f.mode) for f in a.checked] == [(f.concept, f.mode) for f in b.checked]
        assert [f.p_yes for f in a.checked] == pytest.approx([f.p_yes for f in b.checked], abs=1e-5)
        assert all(f.mode == mode for f in a.checked)


def test_llm_verification_is_each_concepts_own_yes_probability(engine, world):
    """The batched, prefix-cached P(yes) of many concepts on one photo equals ``yes_probabilities`` one by one."""
    store_subjects(engine, world)
    q = world["subjects"]["red"][5]
    r = engine.who(q, mode="yollava", strategy="all")
    direct = {s: engine.yes_probabilities(s, [q])[0] for s in SUBJECTS}
    assert {f.concept: f.p_yes for f in r.checked} == pytest.approx(direct, abs=1e-5)
    # the who call left the bank as it found it (concepts it loaded to verify are unloaded)
    engine2 = YoLLaVA(engine.adapter, concepts_dir=engine.concepts_dir)
    W.set_embedder(engine2, PaletteEmbedder())
    engine2.who(q, mode="yollava")
    assert engine2.bank.names() == []


def test_concepts_without_a_signature_are_always_verified(engine, world):
    store_subjects(engine, world, names=["red"])
    old = Concept.initialise("old", engine.adapter.embed_tokens.weight, engine.adapter.lm_head.weight, k=2, seed=3)
    save_concept(old, engine.concepts_dir, engine.fingerprint())
    r = engine.who(world["subjects"]["green"][5], top_k=1)
    modes = {f.concept: f.mode for f in r.checked}
    assert modes == {"red": "head", "old": "yollava"}
    assert W.recognize(engine, "old", world["subjects"]["red"][5]).mode == "yollava"


def test_modes_resolve_and_fuse():
    sig = W.VisualSignature("e", np.ones(3, np.float32) / np.sqrt(3), W.ConceptHead(np.ones(3, np.float32), 0.0))
    assert W.resolve_mode("auto", "recognition", sig) == "head"
    assert W.resolve_mode("yollava", "recognition", sig) == "head"  # untrained tokens never answer
    assert W.resolve_mode("auto", "trained", sig) == W.DEFAULT_TRAINED_MODE
    assert W.resolve_mode("fused", "trained", None) == "yollava"  # no head: the LLM alone
    with pytest.raises(ConceptNotReadyError):
        W.resolve_mode("auto", "recognition", None)
    with pytest.raises(ValueError):
        W.resolve_mode("best", "trained", sig)
    assert W.margin(0.9, 0.9) == pytest.approx(0.0) and W.margin(0.95, 0.9) > 0 > W.margin(0.8, 0.9)


# ---- instant concepts and chat ------------------------------------------------------------------
def test_personalize_recognises_before_training_ends(engine, world):
    seen = {}

    def ready(sig):
        pending = engine.concepts_dir / W.PENDING_DIR / "red.json"
        seen["pending"] = pending.is_file() and json.loads(pending.read_text())["stage"] == "recognition"
        r = W.recognize(engine, "red", world["subjects"]["red"][5])
        seen["answer"] = (r.answer, r.mode, r.stage)
        assert W.recognize(engine, "red", world["subjects"]["blue"][5]).answer == "No"
        assert engine.who(world["subjects"]["red"][5]).names == ["red"]
        engine.load_concept(pending)  # its rows are placeholders: it must not talk
        try:
            with pytest.raises(ConceptNotReadyError):
                engine.chat("What is <red>?", max_new_tokens=2)
        finally:
            engine.unload_concept("red")

    result = personalize(engine, "red", world["subjects"]["red"][:4], train=TrainConfig(k=2, epochs=1, lr=1e-2),
                         data=DataConfig(conversations=False, n_easy_negatives=4, n_hard_negatives=4), pool=world["pool"],
                         on_recognition_ready=ready)
    assert seen == {"pending": True, "answer": ("Yes", "head", "recognition")}
    assert not (engine.concepts_dir / W.PENDING_DIR / "red.json").exists()
    meta = json.loads((engine.concepts_dir / "red.json").read_text())
    assert meta["stage"] == "trained" and meta["visual"]["head"]["kind"] == "logistic"
    assert result.concept.meta["visual"]["embedder"] == "test-palette-v1"
    r = W.recognize(engine, "red", world["subjects"]["red"][5])
    assert r.mode == W.DEFAULT_TRAINED_MODE and r.stage == "trained"


def test_chat_introduces_the_concepts_found(engine, world, monkeypatch):
    store_subjects(engine, world)
    prompts = []
    real = YoLLaVA.encode

    def spy(self, question, image=None, answer=None, concepts=()):
        prompts.append((question, list(concepts)))
        return real(self, question, image=image, answer=answer, concepts=concepts)

    monkeypatch.setattr(YoLLaVA, "encode", spy)
    out = W.chat(engine, "Who is in this photo?", world["subjects"]["red"][5], max_new_tokens=3)
    assert [f.concept for f in out.found] == ["red"]
    question, concepts = prompts[-1]
    assert question == "In this photo: <red>. Who is in this photo?" and concepts == ["red"]
    assert engine.bank.names() == []  # introduced for this answer only
    # a photo without any of them is left alone
    yellow = photo(engine.concepts_dir.parent / "y.jpg", ["yellow"])
    out = W.chat(engine, "What is this?", yellow, max_new_tokens=2)
    assert out.found == [] and prompts[-1] == ("What is this?", [])


def test_a_question_that_names_concepts_hears_what_their_heads_see(engine, world, monkeypatch):
    store_subjects(engine, world)
    prompts = []
    real = YoLLaVA.encode

    def spy(self, question, image=None, answer=None, concepts=()):
        prompts.append(question)
        return real(self, question, image=image, answer=answer, concepts=concepts)

    monkeypatch.setattr(YoLLaVA, "encode", spy)
    red_photo = world["subjects"]["red"][5]
    assert [W.recognize(engine, n, red_photo, mode="head").present for n in ("red", "green")] == [True, False]
    out = W.chat(engine, "Is <green> here? And <red>?", red_photo, max_new_tokens=2)
    assert prompts[-1] == "In this photo: <red>. Is <green> here? And <red>?"  # the heads' "yes" only (chosen on dev)
    assert [f.concept for f in out.found] == ["red"] and [(f.concept, f.mode, f.present) for f in out.checked] == [
        ("green", "head", False), ("red", "head", True)]
    # concepts= asks too; follow_heads=False leaves the question to the language model alone
    W.chat(engine, "What colour is it?", red_photo, concepts=["red"], max_new_tokens=2)
    assert prompts[-1] == "In this photo: <red>. What colour is it?"
    out = W.chat(engine, "Is <red> here?", red_photo, follow_heads=False, max_new_tokens=2)
    assert prompts[-1] == "Is <red> here?" and out.checked == []
    # a concept without a head (made before signatures) gets no sentence: its yes/no would be the model's own
    plain = Concept.initialise("plain", engine.adapter.embed_tokens.weight, engine.adapter.lm_head.weight, k=2, seed=9)
    save_concept(plain, engine.concepts_dir, engine.fingerprint())
    out = W.chat(engine, "Is <plain> here?", red_photo, max_new_tokens=2)
    assert prompts[-1] == "Is <plain> here?" and out.checked == []
    # a head that does not find its subject adds nothing
    out = W.chat(engine, "Is <green> here?", red_photo, max_new_tokens=2)
    assert prompts[-1] == "Is <green> here?" and [f.present for f in out.checked] == [False] and out.found == []
    assert W.presence_hint([]) == ""


def test_query_views_cover_wide_photos_edge_to_edge():
    wide = Image.new("RGB", (100, 40))
    views = W.query_views(wide)
    assert len(views) == 1 + 3 + 4  # the photo, three squares side by side, four corners
    assert [v.size for v in views[1:4]] == [(40, 40)] * 3
    assert views[0].size == (100, 40) and views[4].size == (60, 24)
    tall = W.query_views(Image.new("RGB", (30, 70)))
    assert len(tall) == 1 + 3 + 4 and tall[1].size == (30, 30)
    assert len(W.query_views(Image.new("RGB", (50, 50)))) == 5
