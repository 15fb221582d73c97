"""``YoLLaVA``: a frozen VLM plus a bank of concepts. Chat, recognise, compute the training loss.

The engine owns tokenisation (concept identifiers are split out of the text and given ids after
the base vocabulary), splices photos in, runs the frozen decoder and applies the output layer with
the concept columns appended. The base model is never modified.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from .concepts import Concept, ConceptBank, load_concept, save_concept
from .data.templates import RECOGNITION_QUERY
from .errors import ConceptNotReadyError, UnknownConceptError
from .images import load_image
from .models import DEFAULT_MODEL, EncodedImage, Message, VLMAdapter, load_model
from .paths import default_concepts_dir

_TOKEN_LIKE = re.compile(r"<[A-Za-z0-9][A-Za-z0-9_-]*>")

ImageLike = str | Path | Image.Image | EncodedImage


@dataclass
class Recognition:
    concept: str
    answer: str  # "Yes" or "No"
    p_yes: float
    threshold: float
    #: what produced the answer: "yollava" (the language model's P(yes)), "head" or "fused" (see yollava.who)
    mode: str = "yollava"

    @property
    def present(self) -> bool:
        return self.answer == "Yes"


@dataclass
class Encoded:
    """One tokenised conversation: prompt ids, answer mask, and the photo(s) it contains."""

    input_ids: list[int]
    answer_mask: list[bool]
    images: list[EncodedImage]
    #: tokens before the first concept or answer token: the same for every epoch, so cacheable
    prefix_len: int = 0


class YoLLaVA:
    def __init__(self, adapter: VLMAdapter, concepts_dir: str | Path | None = None):
        self.adapter = adapter
        self.concepts_dir = Path(concepts_dir) if concepts_dir else default_concepts_dir()
        self.bank = ConceptBank(adapter.vocab_size, adapter.hidden_size, adapter.reserved_tokens())
        self._image_cache: dict[tuple, EncodedImage] = {}
        self._yes_ids, self._no_ids = self._answer_token_ids()

    @classmethod
    def from_pretrained(cls, model: str = DEFAULT_MODEL, concepts_dir: str | Path | None = None, **kwargs) -> YoLLaVA:
        return cls(load_model(model, **kwargs), concepts_dir)

    # ---- concepts --------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        return self.adapter.fingerprint()

    def load_concept(self, name_or_path: str | Path, replace: bool = True) -> Concept:
        """Load ``NAME`` from the concepts folder, or a path to ``NAME.json``/``NAME.safetensors``."""
        p = Path(name_or_path)
        folder, name = (p.parent, p.stem) if p.suffix in (".json", ".safetensors") else (self.concepts_dir, str(name_or_path))
        concept = load_concept(folder, name, self.fingerprint())
        concept = concept.to(device=self.adapter.device, dtype=self.adapter.dtype)
        self.bank.add(concept, replace=replace)
        return concept

    def add_concept(self, concept: Concept, replace: bool = False) -> Concept:
        concept = concept.to(device=self.adapter.device, dtype=self.adapter.dtype)
        self.bank.add(concept, replace=replace)
        return concept

    def unload_concept(self, name: str) -> None:
        self.bank.remove(name)

    def save_concept(self, name: str, folder: str | Path | None = None) -> Path:
        return save_concept(self.bank[name], folder or self.concepts_dir, self.fingerprint())

    def new_concept(self, name: str, k: int, seed: int = 0) -> Concept:
        concept = Concept.initialise(name, self.adapter.embed_tokens.weight, self.adapter.lm_head.weight, k=k, seed=seed)
        return self.add_concept(concept)

    def _ensure_loaded(self, names: Sequence[str]) -> None:
        for name in names:
            if name not in self.bank:
                try:
                    self.load_concept(name)
                except UnknownConceptError:
                    raise UnknownConceptError(self.bank._unknown_message(name) + f"; not found in {self.concepts_dir} either") from None

    # ---- photos ----------------------------------------------------------------------------
    def encode_image(self, image: ImageLike) -> EncodedImage:
        """Visual tokens for a photo; cached per file (path, size, mtime) since the encoder is frozen.
        An already encoded photo is returned as it is."""
        if isinstance(image, EncodedImage):
            return image
        if isinstance(image, Image.Image):
            return self.adapter.encode_images([image.convert("RGB")])[0]
        path = Path(image)
        st = path.stat() if path.exists() else None
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns) if st else None
        if key is not None and key in self._image_cache:
            return self._image_cache[key]
        encoded = self.adapter.encode_images([load_image(path)])[0]
        if key is not None:
            self._image_cache[key] = encoded
        return encoded

    # ---- text -> ids -----------------------------------------------------------------------
    def _text_ids(self, text: str) -> list[int]:
        ids: list[int] = []
        reserved = self.bank.reserved_tokens
        pos = 0
        for m in _TOKEN_LIKE.finditer(text):
            tok = m.group(0)
            if tok in reserved:
                continue
            concept_id = self.bank.token_id(tok)
            if concept_id is None:
                raise UnknownConceptError(self.bank._unknown_message(tok[1:-1]))
            if m.start() > pos:
                ids += self.adapter.tokenizer(text[pos : m.start()], add_special_tokens=False)["input_ids"]
            ids.append(concept_id)
            pos = m.end()
        if pos < len(text):
            ids += self.adapter.tokenizer(text[pos:], add_special_tokens=False)["input_ids"]
        return ids

    def _prompt_ids(self, rendered: str, images: list[EncodedImage]) -> list[int]:
        parts = rendered.split(self.adapter.image_marker)
        if len(parts) - 1 != len(images):
            raise ValueError(f"prompt has {len(parts) - 1} photo marker(s) but {len(images)} photo(s) were given")
        ids = self._text_ids(parts[0])
        for img, part in zip(images, parts[1:]):
            ids += img.token_ids + self._text_ids(part)
        return ids

    def mentioned_concepts(self, text: str) -> list[str]:
        reserved = self.bank.reserved_tokens
        names = []
        for tok in _TOKEN_LIKE.findall(text):
            name = tok[1:-1]
            if tok not in reserved and name not in names:
                names.append(name)
        return names

    def user_message(self, question: str, concepts: Sequence[str] = (), has_image: bool = False) -> Message:
        """``<bo> is <bo_1>...<bo_k>.`` for each concept, then the question."""
        names = list(dict.fromkeys([*concepts, *self.mentioned_concepts(question)]))
        self._ensure_loaded(names)
        for n in names:  # a concept whose head is ready but whose tokens are still training (yollava.who)
            if self.bank[n].meta.get("stage") == "recognition":
                raise ConceptNotReadyError(f"<{n}> can recognise but not talk yet: its tokens are still training")
        prefix = " ".join(self.bank[n].system_prefix for n in names)
        return Message("user", f"{prefix} {question}" if prefix else question, has_image)

    def encode(
        self, question: str, image: ImageLike | None = None, answer: str | None = None, concepts: Sequence[str] = ()
    ) -> Encoded:
        images = [self.encode_image(image)] if image is not None else []
        rendered = self.adapter.render([self.user_message(question, concepts, bool(images))])
        prompt = self._prompt_ids(rendered, images)
        answer_ids = self._text_ids(answer + self.adapter.end_of_turn) if answer is not None else []
        ids = prompt + answer_ids
        vocab = self.adapter.vocab_size
        prefix_len = next((i for i, t in enumerate(ids) if t >= vocab or i >= len(prompt)), len(ids))
        return Encoded(ids, [False] * len(prompt) + [True] * len(answer_ids), images, prefix_len)

    # ---- forward ---------------------------------------------------------------------------
    def _collate(self, items: Sequence[Encoded]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        width = max(len(e.input_ids) for e in items)
        pad = self.adapter.tokenizer.pad_token_id or 0
        ids = torch.full((len(items), width), pad, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        answer = torch.zeros((len(items), width), dtype=torch.bool)
        for i, e in enumerate(items):  # right padding: real tokens keep positions 0..n-1
            n = len(e.input_ids)
            ids[i, :n] = torch.tensor(e.input_ids)
            mask[i, :n] = 1
            answer[i, :n] = torch.tensor(e.answer_mask)
        dev = self.adapter.device
        return ids.to(dev), mask.to(dev), answer.to(dev)

    def _embed(self, ids: torch.Tensor, images: list[list[EncodedImage]]) -> torch.Tensor:
        embeds = self.bank.embed(ids, self.adapter.embed_tokens)
        feats = [img.features for row in images for img in row]
        if feats:
            slots = (ids == self.adapter.image_token_id).unsqueeze(-1)
            embeds = embeds.masked_scatter(slots, torch.cat(feats).to(embeds.dtype))
        return embeds

    def hidden_states(self, items: Sequence[Encoded]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, mask, answer = self._collate(items)
        images = [e.images for e in items]
        embeds = self._embed(ids, images)
        positions = self.adapter.position_ids(ids, mask, images)
        hidden, _ = self.adapter.decoder(embeds, attention_mask=mask, position_ids=positions)
        return hidden, ids, answer

    def loss(self, items: Sequence[Encoded], prefix_cache: dict | None = None) -> torch.Tensor:
        """Next-token cross-entropy on answer tokens only; logits are computed only where needed.

        With ``prefix_cache`` (a dict the caller keeps across steps), the frozen part of each prompt
        before the first concept token (system prompt + photo) is run once without gradients and its
        keys/values are reused; this needs equal prefix lengths in the batch (the trainer buckets them)."""
        if prefix_cache is not None and self._can_cache_prefix(items):
            hidden, ids, answer = self._suffix_hidden_states(items, prefix_cache)
        else:
            hidden, ids, answer = self.hidden_states(items)
        predicts = answer[:, 1:]  # position t predicts token t+1
        logits = self.bank.logits(hidden[:, :-1][predicts], self.adapter.lm_head)
        return F.cross_entropy(logits.float(), ids[:, 1:][predicts])

    def _can_cache_prefix(self, items: Sequence[Encoded]) -> bool:
        custom_positions = type(self.adapter).position_ids is not VLMAdapter.position_ids
        p = items[0].prefix_len
        return (
            not custom_positions
            and p > 0
            and all(e.prefix_len == p and not e.answer_mask[p] for e in items)
            and all(self.adapter.image_token_id not in e.input_ids[p:] for e in items)
        )

    def _suffix_hidden_states(self, items: Sequence[Encoded], cache: dict):
        from transformers import DynamicCache

        p = items[0].prefix_len
        keys = [(tuple(e.input_ids[:p]), tuple(id(img) for img in e.images)) for e in items]
        missing = list({k: i for i, k in enumerate(keys) if k not in cache}.items())
        if missing:
            with torch.no_grad():
                ids = torch.tensor([items[i].input_ids[:p] for _, i in missing], device=self.adapter.device)
                _, past = self.adapter.decoder(self._embed(ids, [items[i].images for _, i in missing]), use_cache=True)
            for j, (key, _) in enumerate(missing):
                cache[key] = [(layer.keys[j : j + 1], layer.values[j : j + 1]) for layer in past.layers]
        per_layer = zip(*(cache[k] for k in keys))
        past = DynamicCache(ddp_cache_data=[(torch.cat([k for k, _ in kv]), torch.cat([v for _, v in kv])) for kv in per_layer])
        suffix = [Encoded(e.input_ids[p:], e.answer_mask[p:], []) for e in items]
        ids, mask, answer = self._collate(suffix)
        full_mask = torch.cat([torch.ones(len(items), p, dtype=mask.dtype, device=mask.device), mask], dim=1)
        hidden, _ = self.adapter.decoder(self._embed(ids, [[] for _ in items]), attention_mask=full_mask, past_key_values=past, use_cache=True)
        return hidden, ids, answer

    # ---- recognition -----------------------------------------------------------------------
    def _answer_token_ids(self) -> tuple[list[int], list[int]]:
        tok = self.adapter.tokenizer

        def first_ids(words):
            return sorted({tok(w, add_special_tokens=False)["input_ids"][0] for w in words})

        return first_ids(["Yes", "yes", " Yes"]), first_ids(["No", "no", " No"])

    @torch.no_grad()
    def yes_probabilities(self, name: str, images: Sequence[ImageLike], batch_size: int = 8) -> list[float]:
        """P(yes) / (P(yes) + P(no)) for the first answer token of the paper's recognition query."""
        self._ensure_loaded([name])
        query = RECOGNITION_QUERY.format(identifier=self.bank[name].identifier)
        out: list[float] = []
        for i in range(0, len(images), batch_size):
            items = [self.encode(query, image=img, concepts=[name]) for img in images[i : i + batch_size]]
            hidden, _, _ = self.hidden_states(items)
            last = torch.tensor([len(e.input_ids) - 1 for e in items], device=hidden.device)
            logits = self.bank.logits(hidden[torch.arange(len(items)), last], self.adapter.lm_head).float()
            probs = logits.softmax(-1)
            p_yes, p_no = probs[:, self._yes_ids].sum(-1), probs[:, self._no_ids].sum(-1)
            out += (p_yes / (p_yes + p_no).clamp_min(1e-12)).tolist()
        return out

    @torch.no_grad()
    def concept_yes_probabilities(self, image: ImageLike, names: Sequence[str], batch_size: int = 8,
                                  prefix_cache: dict | None = None) -> list[float]:
        """:meth:`yes_probabilities` of one photo for each of ``names``, batched; the system prompt and the
        photo are run once and their keys/values reused where the model allows (``who`` verification;
        pass the same ``prefix_cache`` dict and encoded photo to reuse them across calls)."""
        self._ensure_loaded(names)
        img = self.encode_image(image)
        cache: dict = {} if prefix_cache is None else prefix_cache
        out: list[float] = []
        for i in range(0, len(names), batch_size):
            items = [self.encode(RECOGNITION_QUERY.format(identifier=self.bank[n].identifier), image=img, concepts=[n])
                     for n in names[i : i + batch_size]]
            offset = items[0].prefix_len if self._can_cache_prefix(items) else 0
            hidden = self._suffix_hidden_states(items, cache)[0] if offset else self.hidden_states(items)[0]
            last = torch.tensor([len(e.input_ids) - 1 - offset for e in items], device=hidden.device)
            probs = self.bank.logits(hidden[torch.arange(len(items)), last], self.adapter.lm_head).float().softmax(-1)
            p_yes, p_no = probs[:, self._yes_ids].sum(-1), probs[:, self._no_ids].sum(-1)
            out += (p_yes / (p_yes + p_no).clamp_min(1e-12)).tolist()
        return out

    def who(self, image: ImageLike, **kwargs):
        """Every loaded or stored concept present in ``image``, best first (see :func:`yollava.who.who`)."""
        from .who import who

        return who(self, image, **kwargs)

    def recognize(self, name: str, image: ImageLike, threshold: float | None = None) -> Recognition:
        p = self.yes_probabilities(name, [image])[0]
        t = self.bank[name].threshold if threshold is None else threshold
        return Recognition(name, "Yes" if p >= t else "No", p, t)

    # ---- generation ------------------------------------------------------------------------
    def _decode(self, ids: list[int]) -> str:
        text, run = [], []
        for i in ids:
            tok = self.bank.id_token(i)
            if tok is None:
                run.append(i)
                continue
            if run:
                text.append(self.adapter.tokenizer.decode(run, skip_special_tokens=True))
                run = []
            text.append(tok)
        if run:
            text.append(self.adapter.tokenizer.decode(run, skip_special_tokens=True))
        return "".join(text)

    @torch.no_grad()
    def stream_chat(
        self,
        prompt: str,
        image: ImageLike | None = None,
        concepts: Sequence[str] = (),
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> Iterator[str]:
        """Yield the answer as it is generated (text pieces); greedy when ``temperature == 0``."""
        enc = self.encode(prompt, image=image, concepts=concepts)
        decoder, lm_head = self.adapter.generation_modules()
        ids = torch.tensor([enc.input_ids], device=self.adapter.device)
        positions = self.adapter.position_ids(ids, torch.ones_like(ids), [enc.images])
        hidden, past = decoder(self._embed(ids, [enc.images]), position_ids=positions, use_cache=True)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        eos = set(self.adapter.eos_token_ids)
        out: list[int] = []
        shown = ""
        for step in range(max_new_tokens):
            logits = self.bank.logits(hidden[:, -1], lm_head).float()[0]
            nxt = _sample(logits, temperature, top_p, gen)
            if nxt in eos:
                break
            out.append(nxt)
            text = self._decode(out)
            if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                yield text[len(shown) :]
                shown = text
            step_ids = torch.tensor([[nxt]], device=ids.device)
            step_pos = None if positions is None else positions[..., -1:] + step + 1
            hidden, past = decoder(self._embed(step_ids, [[]]), position_ids=step_pos, past_key_values=past, use_cache=True)
        text = self._decode(out)
        if len(text) > len(shown):
            yield text[len(shown) :]

    def chat(self, prompt: str, image: ImageLike | None = None, concepts: Sequence[str] = (), **kwargs) -> str:
        """Answer ``prompt`` (which may name concepts like ``<bo>``), with or without a photo."""
        return "".join(self.stream_chat(prompt, image=image, concepts=concepts, **kwargs)).strip()


def _sample(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(logits.argmax())
    probs = (logits / temperature).softmax(-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs / probs.sum(), 1, generator=gen))
