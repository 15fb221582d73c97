"""The seams between layers: trainer callbacks, the model / pipeline split with per-request banks,
the server's job progress coming from one callback, and no private names imported across packages."""

from __future__ import annotations

import ast
import contextlib
import math
import threading
import time
from pathlib import Path

import pytest
import torch

import yollava
from yollava import YoLLaVA
from yollava.engine import ConceptModel
from yollava.errors import UnknownConceptError
from yollava.models import VLMAdapter
from yollava.train import ConceptTrainer, Sample, TrainConfig, TrainerCallback, TrainerState
from yollava.train import trainer as trainer_module

from .conftest import make_photos, other_colour, reddish

QUESTION = "Is <bo> in this photo?"


def samples(tmp_path, n_pos=4, n_neg=8):
    pos = make_photos(tmp_path / "pos", n_pos, reddish, seed=1)
    neg = make_photos(tmp_path / "neg", n_neg, other_colour, seed=2)
    return [Sample(QUESTION, "Yes", p, "positive") for p in pos] + [Sample(QUESTION, "No", p, "negative") for p in neg]


class Recorder(TrainerCallback):
    """Every event, in order, with the state's counters at that moment; contexts entered per kind."""

    def __init__(self):
        self.events: list[tuple] = []
        self.contexts: dict[str, int] = {"encode": 0, "train": 0, "evaluate": 0}
        self.inside: str | None = None

    def on_train_begin(self, s: TrainerState):
        self.events.append(("train_begin", s.start_epoch, s.global_step, s.steps_per_epoch, s.max_steps))

    def on_epoch_begin(self, s):
        self.events.append(("epoch_begin", s.epoch))

    def on_step_begin(self, s):
        self.events.append(("step_begin", s.epoch, s.step_in_epoch))

    def on_step_end(self, s):
        assert s.loss is not None and math.isfinite(s.loss)
        self.events.append(("step_end", s.epoch, s.step_in_epoch, s.global_step))

    def on_epoch_end(self, s):
        self.events.append(("epoch_end", s.epoch, s.epochs_done, s.history[-1]["epoch"]))

    def on_train_end(self, s):
        self.events.append(("train_end", s.global_step))

    @contextlib.contextmanager
    def step_context(self, s, kind):
        self.contexts[kind] += 1
        assert self.inside is None  # never nested
        self.inside = kind
        try:
            yield
        finally:
            self.inside = None

    def names(self, kind):
        return [e for e in self.events if e[0] == kind]


# ---- trainer callbacks -----------------------------------------------------------------------
def test_callback_sees_every_epoch_and_step(llava_engine: YoLLaVA, tmp_path):
    data = samples(tmp_path)
    cfg = TrainConfig(k=2, epochs=3, lr=1e-2, batch_size=4, seed=0)
    rec = Recorder()
    trainer = ConceptTrainer(llava_engine, "bo", cfg, progress=False, callbacks=[rec])
    losses_seen_by_loss = []
    real_loss = llava_engine.loss

    def loss(items, cache=None, weights=None, precision=None):  # the train context must be held around every forward of a step
        assert rec.inside == "train"
        out = real_loss(items, cache, weights, precision)
        losses_seen_by_loss.append(out.item())
        return out

    llava_engine.loss = loss
    result = trainer.fit(data)

    # the trainer's own numbers: train samples (held-back photos out, positives repeated) in batches of 4
    train, held = trainer_module.split_holdout(data, cfg.holdout_fraction, cfg.seed)
    n_train = len(trainer_module.balanced_samples(train))
    spe = math.ceil(n_train / cfg.batch_size)  # one prefix length here: plain batches
    assert rec.events[0] == ("train_begin", 0, 0, spe, 3 * spe)
    assert [e[1] for e in rec.names("epoch_begin")] == [0, 1, 2]
    assert [e[1:] for e in rec.names("epoch_end")] == [(0, 1, 0), (1, 2, 1), (2, 3, 2)]
    ends = rec.names("step_end")
    assert len(ends) == len(rec.names("step_begin")) == 3 * spe == len(losses_seen_by_loss)
    assert [e[3] for e in ends] == list(range(1, 3 * spe + 1))  # global_step counts every step once
    assert [e[2] for e in ends] == list(range(1, spe + 1)) * 3
    assert rec.events[-1] == ("train_end", 3 * spe)
    # every sample encoded once under the context, every step and every held-back scoring too
    assert rec.contexts == {"encode": n_train, "train": 3 * spe, "evaluate": 3}
    assert result.samples_seen == 3 * n_train and trainer.state.global_step == 3 * spe and held


def test_resumed_run_reports_only_the_remaining_epochs(llava_engine: YoLLaVA, tmp_path, monkeypatch):
    data = samples(tmp_path)
    cfg = TrainConfig(k=2, epochs=3, lr=1e-2, batch_size=4, seed=0)
    ckpt = tmp_path / "ckpt"

    class StopAfterFirstEpoch(TrainerCallback):
        def on_epoch_end(self, s):
            raise KeyboardInterrupt  # a callback may stop training; the epoch checkpoint stays

    with pytest.raises(KeyboardInterrupt):
        ConceptTrainer(llava_engine, "bo", cfg, checkpoint_dir=ckpt, progress=False, callbacks=[StopAfterFirstEpoch()]).fit(data)
    assert (ckpt / "bo.ckpt.json").exists()
    rec = Recorder()
    result = ConceptTrainer(llava_engine, "bo", cfg, checkpoint_dir=ckpt, progress=False, callbacks=[rec]).fit(data)
    _, start, global_step, spe, max_steps = rec.events[0]
    assert (start, global_step, max_steps) == (1, spe, 3 * spe)
    assert [e[1] for e in rec.names("epoch_begin")] == [1, 2]
    assert len(rec.names("step_end")) == 2 * spe and rec.names("step_end")[-1][3] == 3 * spe
    assert len(result.history) == 3


def test_a_cancelling_step_context_stops_before_the_model_runs(llava_engine: YoLLaVA, tmp_path):
    class Cancel(TrainerCallback):
        def step_context(self, s, kind):
            if kind == "train":
                raise RuntimeError("cancelled")
            return contextlib.nullcontext()

    trainer = ConceptTrainer(llava_engine, "bo", TrainConfig(k=2, epochs=1, batch_size=4), progress=False, callbacks=[Cancel()])
    with pytest.raises(RuntimeError, match="cancelled"):
        trainer.fit(samples(tmp_path))
    assert trainer.state.global_step == 0 and trainer.state.steps_per_epoch > 0


def test_callbacks_must_be_trainer_callbacks(llava_engine: YoLLaVA):
    with pytest.raises(TypeError):
        ConceptTrainer(llava_engine, "bo", callbacks=[object()])


# ---- the model / pipeline split --------------------------------------------------------------
def test_banks_are_per_pipeline_and_do_not_leak(llava_engine: YoLLaVA, tmp_path):
    alice = llava_engine.with_bank(tmp_path / "alice")
    bob = llava_engine.with_bank(tmp_path / "bob")
    assert alice.model is bob.model is llava_engine.model and isinstance(alice.model, ConceptModel)
    alice.new_concept("bo", k=2, seed=1)
    alice.save_concept("bo")
    assert "bo" in alice.bank and "bo" not in bob.bank and "bo" not in llava_engine.bank
    with pytest.raises(UnknownConceptError):  # bob's folder has no <bo>, and alice's bank is not his
        bob.chat("What is <bo>?", max_new_tokens=2)
    # a prompt without concepts gives the same distribution through any bank, and the bank's columns follow it
    enc_a, enc_b = alice.encode("Hello there"), bob.encode("Hello there")
    pa, pb = alice.first_token_probabilities([enc_a]), bob.first_token_probabilities([enc_b])
    vocab = pb.shape[-1]
    assert pa.shape[-1] == vocab + 3  # <bo> and its two latent tokens
    assert torch.allclose(pa[0, :vocab] / pa[0, :vocab].sum(), pb[0], atol=1e-6)  # same base logits
    assert pa[0, vocab] > 0 and torch.all(pa[0, vocab + 1 :] == 0)  # <bo> can be said, its latents never
    # a recognition answer reads the asking pipeline's own <bo>: P(yes) / (P(yes) + P(no)) of the first answer token
    photo = make_photos(tmp_path / "p", 1, reddish)[0]
    bob.new_concept("bo", k=2, seed=2)  # another <bo> of the same name
    tok = llava_engine.adapter.tokenizer
    first = lambda ws: sorted({tok(w, add_special_tokens=False)["input_ids"][0] for w in ws})  # noqa: E731
    answers = []
    for pipe in (alice, bob):
        answers.append(pipe.yes_probabilities("bo", [photo])[0])
        with torch.no_grad():
            hidden, _, _ = pipe.hidden_states([pipe.encode("Can you see if <bo> is in this photo? Answer with a single word or phrase.",
                                                           image=photo, concepts=["bo"])])
            probs = llava_engine.adapter.lm_head(hidden[0, -1]).float().softmax(-1)
        p_yes, p_no = probs[first(["Yes", "yes", " Yes"])].sum(), probs[first(["No", "no", " No"])].sum()
        assert answers[-1] == pytest.approx(float(p_yes / (p_yes + p_no)), abs=1e-5)
    assert answers[0] != pytest.approx(answers[1], abs=1e-4)  # each read its own rows
    assert alice.yes_probabilities("bo", [photo])[0] == pytest.approx(answers[0], abs=1e-6)  # bob's <bo> changed nothing of alice's


def test_server_request_engines_hold_only_their_users_concepts(llava_engine: YoLLaVA, tmp_path):
    pytest.importorskip("fastapi")
    from yollava.serve.host import ChatSession, ModelHost

    host = ModelHost(llava_engine)
    a = llava_engine.with_bank(tmp_path / "alice")
    a.new_concept("bo", k=2, seed=5)
    a.save_concept("bo")
    req_a = host.request_engine(tmp_path / "alice", ["bo"])
    req_b = host.request_engine(tmp_path / "bob", [])
    assert req_a.bank.names() == ["bo"] and req_b.bank.names() == [] and llava_engine.bank.names() == []
    with pytest.raises(UnknownConceptError):
        "".join(ChatSession(req_b, [("user", "Who is <bo>?", None)]).stream(2))
    session = ChatSession(req_a, [("user", "Who is <bo>?", None)], ["bo"])
    text = "".join(session.stream(3))
    assert session.prompt_tokens == len(req_a.encode_conversation([("user", "Who is <bo>?", None)]).input_ids)
    assert 0 < session.completion_tokens <= 3 and isinstance(text, str)
    assert req_b.bank.names() == [] and llava_engine.bank.names() == []


def test_prefix_cache_support_is_declared_by_every_family_that_needs_it():
    import importlib
    import pkgutil

    import yollava.models as models

    for info in pkgutil.iter_modules(models.__path__):
        with contextlib.suppress(ImportError):
            importlib.import_module(f"yollava.models.{info.name}")

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    custom = [c for c in subclasses(VLMAdapter) if c.position_ids is not VLMAdapter.position_ids]
    assert custom, "no family with its own positions found"
    assert all(not c.supports_prefix_cache for c in custom), [c.__name__ for c in custom if c.supports_prefix_cache]


# ---- the server's job progress is one callback -----------------------------------------------
def test_job_progress_comes_from_the_trainer_callback(llava_engine: YoLLaVA, tmp_path, monkeypatch):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from yollava.personalize import ConceptPipeline
    from yollava.serve import ServerConfig, create_app
    from yollava.serve.job_progress import JobProgress
    from yollava.serve.testing import jpeg_bytes, tiny_recipe

    seen: dict = {}
    real = ConceptPipeline.train

    class Spy(TrainerCallback):
        def on_train_begin(self, s):
            seen["max_steps"] = s.max_steps
            seen["steps"] = []

        def on_step_end(self, s):
            seen["steps"].append(s.global_step)

        @contextlib.contextmanager
        def step_context(self, s, kind):  # entered inside the job's context: the model lock is held
            seen.setdefault("locked", set()).add(host.lock._owner == threading.get_ident())
            yield

    def spied(*args, callbacks=(), **kwargs):
        assert [type(c) for c in callbacks] == [JobProgress]
        return real(*args, callbacks=[*callbacks, Spy()], **kwargs)

    monkeypatch.setattr(ConceptPipeline, "train", spied)
    train, data = tiny_recipe(epochs=2)
    app = create_app(ServerConfig(model="tiny", home=tmp_path / "home", train=train, data=data), llava_engine)
    host = app.state.server.host
    db = app.state.server.db
    headers = {"Authorization": f"Bearer {db.new_key(db.add_user('alice'))}"}
    with TestClient(app) as c:
        files = [("photos", (f"{i}.jpg", jpeg_bytes((200 + 10 * i, 10 * i, 20)), "image/jpeg")) for i in range(3)]
        job = c.post("/v1/concepts", headers=headers, data={"name": "bo"}, files=files).json()
        deadline = time.monotonic() + 120
        while (job := c.get(f"/v1/jobs/{job['id']}", headers=headers).json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
    assert job["status"] == "succeeded", job
    p = job["progress"]
    assert p["total_steps"] == seen["max_steps"] == p["step"] > 0
    assert seen["steps"] == list(range(1, seen["max_steps"] + 1))
    assert p["epoch"] == p["epochs"] == 2 and p["fraction"] == 1.0
    assert seen["locked"] == {True}
    assert llava_engine.bank.names() == []  # the job trained in its own bank


# ---- no private names across packages --------------------------------------------------------
def test_no_private_names_are_imported_across_packages():
    root = Path(yollava.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            module = node.module or ""
            same_package = node.level == 1  # ``from .x import _y``: a sibling module of the same package
            if same_package or not (node.level > 1 or module.startswith("yollava")):
                continue
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            if private:
                offenders.append(f"{path.relative_to(root)}:{node.lineno}: from {'.' * node.level}{module} import {', '.join(private)}")
    assert not offenders, "\n".join(offenders)
