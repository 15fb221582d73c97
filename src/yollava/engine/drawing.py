"""Drawing with concepts (Yo'Chameleon) on a unified model (:class:`~yollava.models.base.ImageWriter`: Janus).

A picture is ``num_image_tokens`` codes of the model's image tokenizer, predicted one at a time after the prompt and
``<begin_of_image>``. A concept enters exactly as it does for text: its rows are spliced into the prompt
(``<bo> is <g-tokens><u-tokens>. A photo of <bo> on a beach``), and, when it self-prompts, the model first emits its
generation tokens after the assistant's turn begins and the picture follows them.

- :func:`draw_prompt` — the prompt ids of a drawing request (optionally with the self-prompted tokens as answer tokens).
- :func:`image_loss` — cross-entropy of a photo's codes as the answer to a prompt (reconstruction; the codes of the
  photo come from :meth:`ImageWriter.image_codes`), plus that of the self-prompted tokens.
- :func:`generate_codes` — the codes of ``n`` new pictures, with classifier-free guidance as the family's own
  ``generate(generation_mode="image")`` does it (the unconditional prompt keeps only BOS and ``<begin_of_image>``;
  concept tokens are masked there like every other token), from the same modules.
- :func:`self_prompt` — the latent tokens the model emits before answering.
- :func:`generate_image` — all of it for an :class:`~yollava.engine.Engine`: concepts named in the prompt, refusals
  with a reason (a model that cannot draw, a concept without generation tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from ..concepts import ConceptBank, can_draw
from ..errors import CannotGenerateImagesError
from ..models.base import ImageWriter
from .model import ConceptModel, Encoded

#: the reconstruction prompt of the paper ("A photo of <sks>.")
DRAW_PROMPT = "A photo of {identifier}."


def drawing_models_text() -> str:
    """The families that can draw, for messages: ``Janus / Janus-Pro (reads and draws) (janus)``."""
    from ..models.catalog import drawing_families

    return ", ".join(f"{f.name} (model type {f.model_type}, e.g. {f.example})" for f in drawing_families()) or "none"


def require_writer(adapter) -> ImageWriter:
    """``adapter`` as an :class:`ImageWriter`, or :class:`CannotGenerateImagesError` naming the families that draw."""
    if not getattr(adapter, "can_generate_images", False) or not isinstance(adapter, ImageWriter):
        raise CannotGenerateImagesError(
            f"the model {adapter.model_id!r} ({adapter.family or type(adapter).__name__}) reads photos but cannot draw them. "
            f"Generating images needs a unified model that also writes images: {drawing_models_text()}, loaded from a local "
            "folder or the Hugging Face cache with --model (Python: YoLLaVA.from_pretrained(PATH)); none is bundled"
        )
    return adapter


def require_drawing_concepts(bank: ConceptBank, names: Sequence[str]) -> None:
    """Every concept in ``names`` has generation tokens, else a :class:`CannotGenerateImagesError` saying how to get them."""
    for name in names:
        if not can_draw(bank[name]):
            recipe = bank[name].meta.get("recipe")
            recipe = recipe.get("name") if isinstance(recipe, dict) else None
            raise CannotGenerateImagesError(
                f"<{name}> cannot be drawn: it has no generation tokens (it was trained for understanding only"
                + (f", recipe {recipe!r}" if recipe else "") + "). Train it again with generation tokens on a model that "
                f"draws: yollava personalize {name} PHOTOS... --recipe yochameleon --model PATH --overwrite"
            )


@dataclass
class DrawItem:
    """A reconstruction sample: ``enc`` is the prompt (its answer tokens, if any, are the self-prompted latent
    tokens; no end of turn) and ``codes`` the photo's image codes, drawn after ``<begin_of_image>``."""

    enc: Encoded
    codes: torch.Tensor
    weight: float = 1.0


def draw_prompt(model: ConceptModel, bank: ConceptBank, user_text: str, answer_prefix: str = "") -> Encoded:
    """The ids of a drawing prompt (``user_text`` already holds the concepts' introductions) rendered as the user's
    turn, then ``answer_prefix`` (latent tokens, marked as answer) — the picture's ``<begin_of_image>`` follows."""
    from ..models import Message

    rendered = model.adapter.render([Message("user", user_text)])
    ids = model.prompt_ids(bank, rendered, [])
    answer = model.text_ids(bank, answer_prefix) if answer_prefix else []
    return Encoded(ids + answer, [False] * len(ids) + [True] * len(answer), [])


def _sequence_embeddings(model: ConceptModel, bank: ConceptBank, items: Sequence[DrawItem]):
    writer = require_writer(model.adapter)
    dev = model.adapter.device
    rows, lengths = [], []
    for it in items:
        ids = torch.tensor([it.enc.input_ids + writer.image_prefix_ids], device=dev)
        text = model.embed(bank, ids, [[]])[0]
        codes = writer.image_code_embeddings(it.codes[:-1].to(dev)).to(text.dtype)
        rows.append(torch.cat([text, codes]))
        lengths.append(ids.shape[1])
    width = max(r.shape[0] for r in rows)
    embeds = torch.zeros(len(rows), width, rows[0].shape[1], dtype=rows[0].dtype, device=dev)
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=dev)
    for i, r in enumerate(rows):
        embeds[i, : r.shape[0]] = r
        mask[i, : r.shape[0]] = 1
    return embeds, mask, lengths


def image_loss(model: ConceptModel, bank: ConceptBank, items: Sequence[DrawItem]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(image loss, self-prompt loss or None)``: the mean cross-entropy of each photo's codes (weighted per item)
    read by the model's image head, and of the answer tokens before ``<begin_of_image>`` read by the output layer
    with the bank's concept columns. Right-padded batch; the frozen model is run as it is."""
    writer = require_writer(model.adapter)
    embeds, mask, lengths = _sequence_embeddings(model, bank, items)
    hidden, _ = model.adapter.decoder(embeds, attention_mask=mask)
    image_terms, weights = [], []
    text_hidden, text_targets = [], []
    for i, it in enumerate(items):
        n = it.codes.shape[0]
        start = lengths[i] - 1  # the hidden state at the last prefix token (<begin_of_image>) predicts the first code
        logits = writer.image_logits(hidden[i, start : start + n]).float()
        image_terms.append(F.cross_entropy(logits, it.codes.to(logits.device), reduction="sum"))
        weights.append(it.weight * n)
        answer = [t for t in range(1, len(it.enc.input_ids)) if it.enc.answer_mask[t]]
        if answer:
            text_hidden.append(hidden[i, [t - 1 for t in answer]])
            text_targets += [it.enc.input_ids[t] for t in answer]
    w = torch.tensor([it.weight for it in items], device=hidden.device)
    image = (torch.stack(image_terms) * w).sum() / torch.tensor(weights, device=hidden.device).sum()
    text = None
    if text_targets:
        logits = model.logits(bank, torch.cat(text_hidden)).float()
        text = F.cross_entropy(logits, torch.tensor(text_targets, device=logits.device))
    return image, text


@torch.no_grad()
def self_prompt(model: ConceptModel, bank: ConceptBank, enc: Encoded, max_tokens: int) -> list[int]:
    """The latent tokens the model emits (greedily) right after ``enc``, up to the first token that is not a concept's
    latent token or ``max_tokens`` of them: what a self-prompting concept says it needs before it answers."""
    emitted = []
    for token in model.generate_ids(bank, enc, max_tokens, exact=True):
        if not bank.is_latent(token):
            break
        emitted.append(token)
    return emitted


@torch.no_grad()
def generate_codes(model: ConceptModel, bank: ConceptBank, enc: Encoded, n: int = 1, guidance: float | None = None,
                   temperature: float = 1.0, seed: int | None = 0) -> torch.Tensor:
    """``(n, num_image_tokens)`` codes of ``n`` pictures drawn after ``enc`` + the picture's prefix (``<begin_of_image>``):
    the family's own loop (Janus: ``generate(generation_mode="image")``; Emu3: ``generate`` with its allowed tokens per
    position and guidance on log-probabilities) with the bank's rows in the prompt.
    ``guidance`` (classifier-free, > 1 to use it; None: the family's default); ``temperature`` 0 is greedy."""
    from transformers import ClassifierFreeGuidanceLogitsProcessor

    writer = require_writer(model.adapter)
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    guidance = writer.default_guidance if guidance is None else guidance
    dev = model.adapter.device
    cond = torch.tensor([enc.input_ids + writer.image_prefix_ids] * n, device=dev)
    cfg = ClassifierFreeGuidanceLogitsProcessor(guidance) if guidance and guidance > 1 else None
    ids = torch.cat([cond, writer.unconditional_ids(cond)]) if cfg else cond
    hidden, past = model.adapter.decoder(model.embed(bank, ids, [[] for _ in range(ids.shape[0])]), use_cache=True)
    gen = torch.Generator(device=dev).manual_seed(seed) if seed is not None else None
    codes = torch.zeros(n, writer.num_image_tokens, dtype=torch.long, device=dev)
    for i in range(writer.num_image_tokens):
        scores = writer.image_logits(hidden[:, -1]).float()
        if cfg and writer.guidance_on_log_probs:
            scores = scores.log_softmax(-1)
        scores = cfg(cond, scores) if cfg else scores
        allowed = writer.code_mask(i)
        if allowed is not None:
            scores = scores.masked_fill(~allowed.to(scores.device), float("-inf"))
        if temperature <= 0:
            nxt = scores.argmax(-1)
        else:
            nxt = torch.multinomial((scores / temperature).softmax(-1), 1, generator=gen)[:, 0]
        codes[:, i] = nxt
        step = torch.cat([nxt, nxt]) if cfg else nxt
        hidden, past = model.adapter.decoder(writer.image_code_embeddings(step[:, None]), past_key_values=past, use_cache=True)
    return codes


@dataclass
class Drawing:
    """What :func:`generate_image` made: the pictures, their codes, the prompt as the model saw it (concept tokens
    included) and the latent tokens each self-prompting concept emitted first."""

    images: list[Image.Image]
    codes: torch.Tensor
    prompt: str
    self_prompted: list[str]


def generate_image(engine, prompt: str, *, n: int = 1, seed: int | None = 0, guidance: float | None = None,
                   temperature: float = 1.0, concepts: Sequence[str] = ()) -> Drawing:
    """``n`` pictures for ``prompt`` (which may name concepts: ``"A photo of <bo> on a beach"``) on ``engine``'s model.
    Every concept named must have generation tokens (:class:`~yollava.concepts.UnifiedConcept`); a self-prompting one
    first emits its generation tokens, and the picture follows them."""
    writer = require_writer(engine.adapter)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("the prompt is empty: say what to draw, e.g. 'A photo of <bo> on a beach'")
    names = list(dict.fromkeys([*concepts, *engine.mentioned_concepts(prompt)]))
    message = engine.user_message(prompt, names)  # loads the concepts and introduces them
    require_drawing_concepts(engine.bank, names)
    enc = draw_prompt(engine.model, engine.bank, message.content)
    engine._checked(enc)
    emitted: list[int] = []
    prompting = [engine.bank[nm] for nm in names if engine.bank[nm].self_prompting]
    if prompting:
        emitted = self_prompt(engine.model, engine.bank, enc, sum(len(c.task_tokens("generation")) for c in prompting))
        enc = Encoded(enc.input_ids + emitted, enc.answer_mask + [True] * len(emitted), [])
    codes = generate_codes(engine.model, engine.bank, enc, n=n, guidance=guidance, temperature=temperature, seed=seed)
    from .user_text import unmark

    return Drawing(writer.decode_image_codes(codes), codes.cpu(), unmark(message.content),
                   [engine.bank.id_token(t) for t in emitted])
