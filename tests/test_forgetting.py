"""The no-forgetting check can fail: on a model that loading a concept perturbs, and on a concept bank that leaks
into the base vocabulary's logits, it reports FAILED (and the CLI exits 2); on the intact engine it passes."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from yollava.concepts.bank import ConceptBank
from yollava import YoLLaVA
from yollava.cli import eval as commands
from yollava.eval.forgetting import forgetting_check, forgetting_markdown

from .conftest import make_photos, reddish

QUESTIONS = dict(questions=["What is a dog?", "Name a colour."], photo_questions=["Describe this photo."], max_new_tokens=4, k=2)


pytestmark = pytest.mark.usefixtures("one_thread", "private_dirs")


@pytest.fixture
def photo(tmp_path):
    return make_photos(tmp_path / "photos", 1, reddish, size=32)[0]


def _perturbing_add(engine: YoLLaVA, scale: float):
    """A faulty bank: adding a concept also writes into the frozen output layer (as a bug that merged the
    concept's output row into the base model would)."""
    add = ConceptBank.add.__get__(engine.bank)  # the real one, even when a faulty one is installed
    gen = torch.Generator().manual_seed(0)

    def faulty(concept, replace=False):
        add(concept, replace)
        w = engine.adapter.lm_head.weight
        with torch.no_grad():
            w.add_(scale * w.std() * torch.randn(w.shape, generator=gen).to(w.dtype))

    return faulty


def test_passes_on_the_intact_engine_and_fails_on_a_perturbed_model(llava_engine: YoLLaVA, photo, monkeypatch):
    intact = forgetting_check(llava_engine, n_random=2, images=[photo], **QUESTIONS)
    assert intact["passed"] and intact["identical"] == intact["cases"] == 3 and intact["max_logit_diff"] == 0.0
    assert "**PASSED**" in forgetting_markdown(intact)

    original = llava_engine.adapter.lm_head.weight.detach().clone()
    monkeypatch.setattr(llava_engine.bank, "add", _perturbing_add(llava_engine, scale=1.0))
    try:
        broken = forgetting_check(llava_engine, n_random=2, images=[photo], **QUESTIONS)
    finally:
        with torch.no_grad():
            llava_engine.adapter.lm_head.weight.copy_(original)
    assert not broken["passed"] and broken["identical"] < broken["cases"], broken
    assert broken["max_logit_diff"] > 0.1
    md = forgetting_markdown(broken)
    assert "**FAILED**" in md and "| **no** |" in md
    # a perturbation too small to change a greedy answer still moves the first-token logits (measured 0.0014;
    # 0 on the intact engine), and that fails the check: the promise is bit-for-bit
    monkeypatch.setattr(llava_engine.bank, "add", _perturbing_add(llava_engine, scale=1e-4))
    try:
        subtle = forgetting_check(llava_engine, n_random=1, images=[photo], **QUESTIONS)
    finally:
        with torch.no_grad():
            llava_engine.adapter.lm_head.weight.copy_(original)
    assert subtle["max_logit_diff"] > 0.0 and subtle["identical"] == subtle["cases"] and not subtle["passed"]


def test_cli_exits_2_when_the_bank_leaks_into_base_logits(tiny_model_dirs, photo, tmp_path, monkeypatch):
    args = ["forgetting", "--model", str(tiny_model_dirs["llava"]), "--random", "2", "--photo", str(photo),
            "--max-new-tokens", "3", "--concepts-dir", str(tmp_path / "c")]
    ok = CliRunner().invoke(commands.eval_app, args, catch_exceptions=False)
    assert ok.exit_code == 0 and "PASSED" in ok.output, ok.output
    logits = ConceptBank.logits
    shift = {}

    def leaky(self, hidden, lm_head):  # with concepts loaded, every base token's logit moves a little
        out = logits(self, hidden, lm_head)
        if self.concepts:
            n = lm_head.weight.shape[0]
            shift.setdefault(n, 3.0 * torch.randn(n, generator=torch.Generator().manual_seed(0)))
            out = torch.cat([out[..., :n] + shift[n].to(out.dtype), out[..., n:]], dim=-1)
        return out

    monkeypatch.setattr(ConceptBank, "logits", leaky)
    bad = CliRunner().invoke(commands.eval_app, args, catch_exceptions=False)
    assert bad.exit_code == 2 and "FAILED" in bad.output, bad.output
