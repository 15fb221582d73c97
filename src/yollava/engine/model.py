"""The model layer: a frozen VLM that embeds, runs and scores prompts with an *explicit* concept bank.

:class:`ConceptModel` holds the adapter and nothing that depends on which concepts are loaded: every
method that needs concept ids or rows takes the :class:`~yollava.concepts.ConceptBank` to use. So one
model serves any number of banks at once (the server gives each request its own), and nothing here is
per user, per request or per training run. Tokenisation splits concept identifiers (``<bo>``) out of
the text and gives them ids after the base vocabulary; photos are spliced in where the adapter's
placeholder ids are; the output layer gets the bank's concept columns appended. The base model is
never modified.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ..concepts import ConceptBank
from ..errors import UnknownConceptError
from ..models import EncodedImage, VLMAdapter
from . import user_text

TOKEN_LIKE = re.compile(r"<[A-Za-z0-9][A-Za-z0-9_-]*>")

ImageLike = str | Path | Image.Image | EncodedImage


@dataclass
class Encoded:
    """One tokenised conversation: prompt ids, answer mask, and the photo(s) it contains."""

    input_ids: list[int]
    answer_mask: list[bool]
    images: list[EncodedImage]
    #: tokens before the first concept or answer token: the same for every epoch, so cacheable
    prefix_len: int = 0


def answer_token_ids(tokenizer) -> tuple[list[int], list[int]]:
    """First token ids of the spellings of "Yes" and of "No" (the recognition answer's first token)."""

    def first_ids(words):
        return sorted({tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words})

    return first_ids(["Yes", "yes", " Yes"]), first_ids(["No", "no", " No"])


class ConceptModel:
    """A frozen VLM seen through a concept bank passed to each call."""

    def __init__(self, adapter: VLMAdapter):
        self.adapter = adapter
        #: first-token ids of "Yes" / "No" (recognition reads P(yes) / (P(yes) + P(no)) from them)
        self.yes_ids, self.no_ids = answer_token_ids(adapter.tokenizer)
        self._fingerprint: dict | None = None

    def new_bank(self) -> ConceptBank:
        """An empty bank for this model."""
        a = self.adapter
        return ConceptBank(a.vocab_size, a.hidden_size, a.reserved_tokens())

    def fingerprint(self) -> dict:
        """The base model's identity (computed once: the model is frozen)."""
        if self._fingerprint is None:
            self._fingerprint = self.adapter.fingerprint()
        return dict(self._fingerprint)

    # ---- photos ----------------------------------------------------------------------------
    def encode_images(self, images: list[Image.Image]) -> list[EncodedImage]:
        return self.adapter.encode_images(images)

    # ---- text -> ids -----------------------------------------------------------------------
    @staticmethod
    def mentioned_concepts(text: str, reserved: set[str]) -> list[str]:
        """Names of the ``<name>`` tokens in ``text`` that are not the model's own special tokens."""
        names = []
        for tok in TOKEN_LIKE.findall(text):
            name = tok[1:-1]
            if tok not in reserved and name not in names:
                names.append(name)
        return names

    def text_ids(self, bank: ConceptBank, text: str) -> list[int]:
        """Token ids of ``text``; concept tokens (``<bo>``, ``<bo_1>``) get ``bank``'s ids. In spans marked as
        typed by a person (:func:`.user_text.mark`) special-token strings stay text."""
        ids: list[int] = []
        for piece, literal in user_text.segments(text, self._special_strings):
            ids += self._text_ids(bank, piece, {"split_special_tokens": True} if literal else {})
        return ids

    @functools.cached_property
    def _special_strings(self) -> tuple[str, ...]:
        return user_text.special_strings(self.adapter.tokenizer)

    def _text_ids(self, bank: ConceptBank, text: str, options: dict) -> list[int]:
        ids: list[int] = []
        reserved = bank.reserved_tokens
        pos = 0
        for m in TOKEN_LIKE.finditer(text):
            tok = m.group(0)
            if tok in reserved:
                continue
            concept_id = bank.token_id(tok)
            if concept_id is None:
                raise UnknownConceptError(bank.unknown_message(tok[1:-1]))
            if m.start() > pos:
                ids += self.adapter.tokenizer(text[pos : m.start()], add_special_tokens=False, **options)["input_ids"]
            ids.append(concept_id)
            pos = m.end()
        if pos < len(text):
            ids += self.adapter.tokenizer(text[pos:], add_special_tokens=False, **options)["input_ids"]
        return ids

    def prompt_ids(self, bank: ConceptBank, rendered: str, images: list[EncodedImage]) -> list[int]:
        """Ids of a rendered prompt with each photo marker replaced by that photo's placeholder ids."""
        parts = rendered.split(self.adapter.image_marker)
        if len(parts) - 1 != len(images):
            raise ValueError(f"prompt has {len(parts) - 1} photo marker(s) but {len(images)} photo(s) were given")
        ids = self.text_ids(bank, parts[0])
        for img, part in zip(images, parts[1:]):
            ids += img.token_ids + self.text_ids(bank, part)
        return ids

    def encoded(self, bank: ConceptBank, rendered: str, images: list[EncodedImage], answer: str | None = None) -> Encoded:
        """A rendered prompt (and, for training, its answer) as :class:`Encoded`."""
        prompt = self.prompt_ids(bank, rendered, images)
        answer_ids = self.text_ids(bank, answer + self.adapter.end_of_turn) if answer is not None else []
        ids = prompt + answer_ids
        vocab = self.adapter.vocab_size
        prefix_len = next((i for i, t in enumerate(ids) if t >= vocab or i >= len(prompt)), len(ids))
        return Encoded(ids, [False] * len(prompt) + [True] * len(answer_ids), images, prefix_len)

    def decode(self, bank: ConceptBank, ids: list[int]) -> str:
        """Text of generated ids; a concept id becomes its token (``<bo>``). Latent tokens a concept emits before
        answering (Yo'Chameleon's self-prompting) are not part of the answer's text."""
        text, run = [], []
        for i in ids:
            tok = bank.id_token(i)
            if tok is None:
                run.append(i)
                continue
            if bank.is_latent(i):
                continue
            if run:
                text.append(self.adapter.tokenizer.decode(run, skip_special_tokens=True))
                run = []
            text.append(tok)
        if run:
            text.append(self.adapter.tokenizer.decode(run, skip_special_tokens=True))
        return "".join(text)

    # ---- forward ---------------------------------------------------------------------------
    def collate(self, items: Sequence[Encoded]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded ``(ids, attention mask, answer mask)``: real tokens keep positions 0..n-1."""
        width = max(len(e.input_ids) for e in items)
        pad = self.adapter.tokenizer.pad_token_id or 0
        ids = torch.full((len(items), width), pad, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        answer = torch.zeros((len(items), width), dtype=torch.bool)
        for i, e in enumerate(items):
            n = len(e.input_ids)
            ids[i, :n] = torch.tensor(e.input_ids)
            mask[i, :n] = 1
            answer[i, :n] = torch.tensor(e.answer_mask)
        dev = self.adapter.device
        return ids.to(dev), mask.to(dev), answer.to(dev)

    def embed(self, bank: ConceptBank, ids: torch.Tensor, images: list[list[EncodedImage]]) -> torch.Tensor:
        """Input embeddings: base rows, ``bank``'s concept rows, photo features in the photo slots."""
        embeds = bank.embed(ids, self.adapter.embed_tokens)
        feats = [img.features for row in images for img in row]
        if feats:
            slots = (ids == self.adapter.image_token_id).unsqueeze(-1)
            embeds = embeds.masked_scatter(slots, torch.cat(feats).to(embeds.dtype))
        return embeds

    def logits(self, bank: ConceptBank, hidden: torch.Tensor, lm_head=None) -> torch.Tensor:
        """Output logits with ``bank``'s concept columns appended."""
        return bank.logits(hidden, self.adapter.lm_head if lm_head is None else lm_head)

    def hidden_states(self, bank: ConceptBank, items: Sequence[Encoded], decoder=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoder's last hidden states of a batch, with its ``(ids, answer mask)``. ``decoder``: another
        runtime of the frozen decoder (:meth:`VLMAdapter.training_modules`); default the model itself."""
        decoder = decoder or self.adapter.decoder
        ids, mask, answer = self.collate(items)
        images = [e.images for e in items]
        embeds = self.embed(bank, ids, images)
        positions = self.adapter.position_ids(ids, mask, images)
        hidden, _ = decoder(embeds, attention_mask=mask, position_ids=positions)
        return hidden, ids, answer

    def can_cache_prefix(self, items: Sequence[Encoded]) -> bool:
        """Whether the batch's frozen prefix can be run apart and its keys/values reused: the family allows
        it (:attr:`VLMAdapter.supports_prefix_cache`), every item has the same prefix length, and no
        answer token or photo lies after the prefix."""
        p = items[0].prefix_len
        return (
            self.adapter.supports_prefix_cache
            and p > 0
            and all(e.prefix_len == p and not e.answer_mask[p] for e in items)
            and all(self.adapter.image_token_id not in e.input_ids[p:] for e in items)
        )

    def suffix_hidden_states(self, bank: ConceptBank, items: Sequence[Encoded], cache: dict, decoder=None):
        """Hidden states of the tokens after the (equal) prefix; each distinct prefix (ids + photos) is run
        once without gradients and its keys/values are kept in ``cache`` (one cache per ``decoder``)."""
        from transformers import DynamicCache

        decoder = decoder or self.adapter.decoder
        p = items[0].prefix_len
        keys = [(tuple(e.input_ids[:p]), tuple(id(img) for img in e.images)) for e in items]
        missing = list({k: i for i, k in enumerate(keys) if k not in cache}.items())
        if missing:
            with torch.no_grad():
                ids = torch.tensor([items[i].input_ids[:p] for _, i in missing], device=self.adapter.device)
                _, past = decoder(self.embed(bank, ids, [items[i].images for _, i in missing]), use_cache=True)
            for j, (key, _) in enumerate(missing):
                cache[key] = [(layer.keys[j : j + 1], layer.values[j : j + 1]) for layer in past.layers]
        per_layer = zip(*(cache[k] for k in keys))
        past = DynamicCache(ddp_cache_data=[(torch.cat([k for k, _ in kv]), torch.cat([v for _, v in kv])) for kv in per_layer])
        suffix = [Encoded(e.input_ids[p:], e.answer_mask[p:], []) for e in items]
        ids, mask, answer = self.collate(suffix)
        full_mask = torch.cat([torch.ones(len(items), p, dtype=mask.dtype, device=mask.device), mask], dim=1)
        hidden, _ = decoder(self.embed(bank, ids, [[] for _ in items]), attention_mask=full_mask, past_key_values=past, use_cache=True)
        return hidden, ids, answer

    def loss(self, bank: ConceptBank, items: Sequence[Encoded], prefix_cache: dict | None = None,
             weights: Sequence[float] | None = None, precision: str | None = None) -> torch.Tensor:
        """Next-token cross-entropy on answer tokens only; logits are computed only where needed.

        ``weights`` (one per item): each item's answer tokens count that many times in the mean, so a weight
        of 3 gives the loss of the batch with that item repeated 3 times (positives balanced by weight
        instead of by repeated samples).

        With ``prefix_cache`` (a dict the caller keeps across steps), the frozen part of each prompt
        before the first concept token (system prompt + photo) is run once without gradients and its
        keys/values are reused; this needs equal prefix lengths in the batch (the trainer buckets them).

        ``precision``: run the frozen decoder and output layer in this precision (``"bf16"``, see
        :meth:`VLMAdapter.training_modules`; ``None``: the model's own). A ``prefix_cache`` holds one precision's
        keys/values: keep one per precision."""
        decoder, lm_head = self.adapter.training_modules(precision)
        if prefix_cache is not None and self.can_cache_prefix(items):
            hidden, ids, answer = self.suffix_hidden_states(bank, items, prefix_cache, decoder)
        else:
            hidden, ids, answer = self.hidden_states(bank, items, decoder)
        predicts = answer[:, 1:]  # position t predicts token t+1
        logits = self.logits(bank, hidden[:, :-1][predicts], lm_head)
        targets = ids[:, 1:][predicts]
        if weights is None:
            return F.cross_entropy(logits.float(), targets)
        if len(weights) != len(items):
            raise ValueError(f"loss weights: one per item ({len(items)}), not {len(weights)}")
        w = torch.as_tensor(weights, dtype=torch.float32, device=logits.device)
        if not (torch.isfinite(w).all() and (w > 0).all()):
            raise ValueError(f"loss weights must be finite and > 0, not {list(weights)}")
        w = w.unsqueeze(1).expand(predicts.shape)[predicts]
        return (F.cross_entropy(logits.float(), targets, reduction="none") * w).sum() / w.sum()

    # ---- scoring ---------------------------------------------------------------------------
    @torch.no_grad()
    def next_token_probabilities(self, bank: ConceptBank, items: Sequence[Encoded], prefix_cache: dict | None = None) -> torch.Tensor:
        """Softmax over the next token after each prompt (``(batch, vocab + bank tokens)``, fp32). With
        ``prefix_cache`` the shared prefix is reused where :meth:`can_cache_prefix` allows."""
        offset = items[0].prefix_len if prefix_cache is not None and self.can_cache_prefix(items) else 0
        hidden = self.suffix_hidden_states(bank, items, prefix_cache)[0] if offset else self.hidden_states(bank, items)[0]
        last = torch.tensor([len(e.input_ids) - 1 - offset for e in items], device=hidden.device)
        return self.logits(bank, hidden[torch.arange(len(items)), last]).float().softmax(-1)

    def yes_share(self, probs: torch.Tensor) -> list[float]:
        """``P(yes) / (P(yes) + P(no))`` of each row of next-token probabilities."""
        p_yes, p_no = probs[:, self.yes_ids].sum(-1), probs[:, self.no_ids].sum(-1)
        return (p_yes / (p_yes + p_no).clamp_min(1e-12)).tolist()

    # ---- generation ------------------------------------------------------------------------
    @torch.no_grad()
    def generate_ids(
        self, bank: ConceptBank, enc: Encoded, max_new_tokens: int = 128, temperature: float = 0.0,
        top_p: float = 1.0, seed: int | None = None, exact: bool = False,
    ) -> Iterator[int]:
        """Yield generated token ids (KV-cached; greedy when ``temperature == 0``); stops at end of turn.
        ``exact``: generate with the model itself, not a faster generation runtime (int8)."""
        decoder, lm_head = self.adapter.generation_modules(exact)
        ids = torch.tensor([enc.input_ids], device=self.adapter.device)
        positions = self.adapter.position_ids(ids, torch.ones_like(ids), [enc.images])
        hidden, past = decoder(self.embed(bank, ids, [enc.images]), position_ids=positions, use_cache=True)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        eos = set(self.adapter.eos_token_ids)
        for step in range(max_new_tokens):
            logits = self.logits(bank, hidden[:, -1], lm_head).float()[0]
            nxt = _sample(logits, temperature, top_p, gen)
            if nxt in eos:
                return
            yield nxt
            step_ids = torch.tensor([[nxt]], device=ids.device)
            step_pos = None if positions is None else positions[..., -1:] + step + 1
            hidden, past = decoder(self.embed(bank, step_ids, [[]]), position_ids=step_pos, past_key_values=past, use_cache=True)

    @torch.no_grad()
    def generate_batch_ids(self, bank: ConceptBank, items: Sequence[Encoded], max_new_tokens: int = 128,
                           exact: bool = False) -> list[list[int]]:
        """Greedy answers to several prompts at once: left-padded, positions counted from each prompt's first
        real token, so each answer is :meth:`generate_ids`'s up to float summation order. On a CPU one batched
        decoding step costs little more than a single one (reading the weights dominates), so synthesising a
        concept's conversation answers this way is several times faster. Families that set
        ``supports_batched_generation = False`` answer one prompt at a time."""
        if not self.adapter.supports_batched_generation or len(items) == 1:
            return [list(self.generate_ids(bank, e, max_new_tokens, exact=exact)) for e in items]
        decoder, lm_head = self.adapter.generation_modules(exact)
        dev = self.adapter.device
        width = max(len(e.input_ids) for e in items)
        ids = torch.full((len(items), width), self.adapter.tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for i, e in enumerate(items):
            ids[i, width - len(e.input_ids):] = torch.tensor(e.input_ids)
            mask[i, width - len(e.input_ids):] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        hidden, past = decoder(self.embed(bank, ids, [e.images for e in items]), attention_mask=mask, position_ids=positions, use_cache=True)
        eos = torch.tensor(sorted(self.adapter.eos_token_ids), device=dev)
        out: list[list[int]] = [[] for _ in items]
        done = torch.zeros(len(items), dtype=torch.bool, device=dev)
        last = positions[:, -1:]
        for _ in range(max_new_tokens):
            nxt = self.logits(bank, hidden[:, -1], lm_head).float().argmax(-1)
            done |= torch.isin(nxt, eos)
            if bool(done.all()):
                break
            for i in (~done).nonzero().flatten().tolist():
                out[i].append(int(nxt[i]))
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            last = last + 1
            hidden, past = decoder(self.embed(bank, nxt[:, None], [[] for _ in items]), attention_mask=mask, position_ids=last,
                                   past_key_values=past, use_cache=True)
        return out


#: below this temperature sampling is greedy: the distribution is the argmax to float precision anyway, and
#: logits divided by 1e-300 overflow to inf (every probability NaN)
MIN_TEMPERATURE = 1e-5


def _sample(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator | None) -> int:
    if temperature < MIN_TEMPERATURE:
        return int(logits.argmax())
    probs = (logits / temperature).softmax(-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p
        keep[0] = True  # the most likely token always stays: a tiny top_p is greedy, never an empty set
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs / probs.sum(), 1, generator=gen))
