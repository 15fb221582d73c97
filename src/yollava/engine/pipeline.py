"""``Engine``: a :class:`ConceptModel` plus *one* concept bank (``yollava.YoLLaVA``, what users import, is an
Engine that also recognises in every mode, finds who is here and makes concepts).

It loads, adds and saves concepts (in its bank, from its concepts folder), turns questions and
conversations into prompts (``<bo> is <bo_1>...<bo_k>.`` before the question; for a concept taught MyVLM-style,
``<bo_1>...<bo_k>`` straight after a photo its :attr:`Engine.photo_gate` finds it in), and offers chat /
stream / the language model's yes-probabilities / first-token probabilities and the training loss, each a
few lines over the model layer with ``self.bank`` passed in. :meth:`Engine.with_bank` makes another pipeline over the
same model with its own bank and folder (the server gives one to each request and training job; no
request sees another's concepts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..concepts import INJECTIONS, READINGS, Concept, ConceptBank, load_concept, save_concept
from ..prompts import RECOGNITION_QUERY, Recognition
from ..errors import ConceptNotReadyError, PromptTooLongError, UnknownConceptError
from ..images import load_image, photo_views
from ..models import DEFAULT_MODEL, EncodedImage, Message, VLMAdapter, load_model
from ..paths import default_concepts_dir
from . import user_text
from .model import ConceptModel, Encoded, ImageLike


#: which of these MyVLM-style concepts are in this photo (their names); see :attr:`Engine.photo_gate`
PhotoGate = Callable[[list[Concept], ImageLike], Sequence[str]]


@dataclass(frozen=True)
class PromptLimit:
    """Prompts an engine refuses (:class:`~yollava.errors.PromptTooLongError`): longer than
    ``max_tokens``, or leaving no room for an answer in a context of ``context_length`` tokens."""

    max_tokens: int | None = None
    context_length: int | None = None

    def check(self, n: int) -> None:
        if self.max_tokens and n > self.max_tokens:
            raise PromptTooLongError(f"the prompt is {n:,} tokens (text, photos and each concept's k+1 tokens); "
                                     f"this server allows at most {self.max_tokens:,}")
        if self.context_length and n >= self.context_length:
            raise PromptTooLongError(f"the prompt is {n:,} tokens; the model's context of {self.context_length:,} tokens "
                                     "leaves no room for an answer")


class Engine:
    """A frozen VLM and a bank of concepts: chat, yes-probabilities, the training loss."""

    def __init__(self, adapter: VLMAdapter | ConceptModel, concepts_dir: str | Path | None = None, *,
                 bank: ConceptBank | None = None, fingerprint: dict[str, Any] | None = None,
                 prompt_limit: PromptLimit | None = None, photo_gate: PhotoGate | None = None):
        self.model = adapter if isinstance(adapter, ConceptModel) else ConceptModel(adapter)
        self.concepts_dir = Path(concepts_dir) if concepts_dir else default_concepts_dir()
        self.bank = bank if bank is not None else self.model.new_bank()
        self.prompt_limit = prompt_limit
        #: the public hook that says which MyVLM-style concepts (``injection == "vision"``) are in a photo:
        #: ``(loaded vision concepts, photo) -> names present``. None: each one the prompt names (or ``concepts=``
        #: asks for) counts as present. :class:`yollava.YoLLaVA` sets their concept heads (``yollava.who.heads_in_photo``).
        self.photo_gate = photo_gate
        self._fingerprint = fingerprint
        self._image_cache: dict[tuple, EncodedImage] = {}

    @classmethod
    def from_pretrained(cls, model: str = DEFAULT_MODEL, concepts_dir: str | Path | None = None, **kwargs) -> Engine:
        return cls(load_model(model, **kwargs), concepts_dir)

    @property
    def adapter(self) -> VLMAdapter:
        return self.model.adapter

    def with_bank(self, concepts_dir: str | Path | None = None, bank: ConceptBank | None = None, *,
                  prompt_limit: PromptLimit | None = None) -> Engine:
        """Another pipeline over the same frozen model, with its own concept bank (default: empty) and
        concepts folder (default: this one's). Nothing loaded into either is seen by the other."""
        return type(self)(self.model, concepts_dir or self.concepts_dir, bank=bank, fingerprint=self._fingerprint,
                          prompt_limit=prompt_limit, photo_gate=self.photo_gate)

    # ---- concepts --------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        return dict(self._fingerprint) if self._fingerprint is not None else self.adapter.fingerprint()

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

    def new_concept(self, name: str, k: int, seed: int = 0, *, photos: Sequence[ImageLike] = (), visual_init: str | None = None,
                    injection: str = "prompt", reading: str = "whole") -> Concept:
        """A fresh concept in the bank; with ``visual_init`` its latents start from ``photos``' visual tokens
        (:func:`~yollava.concepts.concept.visual_latents`); ``injection``: see :attr:`Concept.injection`."""
        if injection not in INJECTIONS:
            raise ValueError(f"injection must be one of {', '.join(INJECTIONS)}, not {injection!r}")
        if reading not in READINGS:
            raise ValueError(f"reading must be one of {', '.join(READINGS)}, not {reading!r}")
        visual = None
        if visual_init is not None:
            if not photos:
                raise ValueError(f"<{name}>: a visual initialisation needs the subject's photos")
            visual = (visual_init, [self.encode_image(p).features for p in photos])
        concept = Concept.initialise(name, self.adapter.embed_tokens.weight, self.adapter.lm_head.weight, k=k, seed=seed, visual=visual)
        if injection != "prompt":
            concept.meta["injection"] = injection
        if reading != "whole":
            concept.meta["reading"] = reading
        return self.add_concept(concept)

    def _ensure_loaded(self, names: Sequence[str]) -> None:
        for name in names:
            if name not in self.bank:
                try:
                    self.load_concept(name)
                except UnknownConceptError:
                    raise UnknownConceptError(self.bank.unknown_message(name) + f"; not found in {self.concepts_dir} either") from None

    # ---- photos ----------------------------------------------------------------------------
    def encode_image(self, image: ImageLike) -> EncodedImage:
        """Visual tokens for a photo; cached per file (path, size, mtime) since the encoder is frozen.
        An already encoded photo is returned as it is."""
        if isinstance(image, EncodedImage):
            return image
        if isinstance(image, Image.Image):
            return self.model.encode_images([image.convert("RGB")])[0]
        path = Path(image)
        st = path.stat() if path.exists() else None
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns) if st else None
        if key is not None and key in self._image_cache:
            return self._image_cache[key]
        encoded = self.model.encode_images([load_image(path)])[0]
        if key is not None:
            self._image_cache[key] = encoded
        return encoded

    # ---- text -> ids -----------------------------------------------------------------------
    def mentioned_concepts(self, text: str) -> list[str]:
        return self.model.mentioned_concepts(text, self.bank.reserved_tokens)

    def _introductions(self, names: Sequence[str]) -> str:
        """``<bo> is <bo_1>...<bo_k>.`` for each of ``names`` taught Yo'LLaVA-style (loaded from the folder when needed)."""
        self._ensure_loaded(names)
        for n in names:  # a concept whose head is ready but whose tokens are still training (yollava.who)
            if self.bank[n].meta.get("stage") == "recognition":
                raise ConceptNotReadyError(f"<{n}> can recognise but not talk yet: its tokens are still training")
        return " ".join(self.bank[n].system_prefix for n in names if self.bank[n].injection == "prompt")

    def concepts_in_photo(self, image: ImageLike, named: Sequence[str] = (), in_photo: Sequence[str] | None = None) -> list[str]:
        """The MyVLM-style concepts (``injection == "vision"``) whose latents follow ``image``: ``in_photo`` when
        given (training knows), else what :attr:`photo_gate` says of every loaded one, else (no gate, or a photo
        already encoded, which has no pixels for a head) those of ``named``."""
        if in_photo is not None:
            self._ensure_loaded(in_photo)
            return [n for n in dict.fromkeys(in_photo) if self.bank[n].injection == "vision"]
        self._ensure_loaded(named)
        vision = [self.bank[n] for n in self.bank.names() if self.bank[n].injection == "vision"]
        if not vision:
            return []
        if self.photo_gate is None or isinstance(image, EncodedImage):
            return [n for n in dict.fromkeys(named) if self.bank[n].injection == "vision"]
        return list(dict.fromkeys(self.photo_gate(vision, image)))

    def user_message(self, question: str, concepts: Sequence[str] = (), has_image: bool = False, in_photo: Sequence[str] = ()) -> Message:
        """The latents of the MyVLM-style concepts ``in_photo`` (straight after the photo), ``<bo> is <bo_1>...<bo_k>.``
        for each other concept named, then the question."""
        names = list(dict.fromkeys([*concepts, *self.mentioned_concepts(question)]))
        prefix = self._introductions(names)
        after_photo = "".join(self.bank[n].latent_text for n in in_photo) if has_image else ""
        question = user_text.mark(question)  # typed text: "</s>" in it stays text, never the special token
        return Message("user", " ".join(part for part in (after_photo, prefix, question) if part), has_image)

    def _checked(self, enc: Encoded) -> Encoded:
        if self.prompt_limit is not None:
            self.prompt_limit.check(len(enc.input_ids))
        return enc

    def encode(
        self, question: str, image: ImageLike | None = None, answer: str | None = None, concepts: Sequence[str] = (),
        in_photo: Sequence[str] | None = None,
    ) -> Encoded:
        """``in_photo``: the MyVLM-style concepts in ``image`` when the caller knows (None: :meth:`concepts_in_photo`)."""
        images = [self.encode_image(image)] if image is not None else []
        present = self.concepts_in_photo(image, [*concepts, *self.mentioned_concepts(question)], in_photo) if images else []
        rendered = self.adapter.render([self.user_message(question, concepts, bool(images), present)])
        return self._checked(self.model.encoded(self.bank, rendered, images, answer))

    def encode_conversation(self, conversation: Sequence[tuple[str, str, ImageLike | None]], concepts: Sequence[str] = ()) -> Encoded:
        """A multi-turn prompt from ``[(role, text, photo or None), ...]``; the concepts named anywhere (and
        ``concepts``) are introduced at the start of the first user turn, as :meth:`encode` does for one turn."""
        names = list(dict.fromkeys([*concepts, *self.mentioned_concepts(" ".join(t for _, t, _ in conversation))]))
        prefix = self._introductions(names)
        messages, images = [], []
        for role, text, image in conversation:
            text = user_text.mark(text)  # typed text: "</s>" in it stays text, never the special token
            if prefix and role == "user":
                text, prefix = f"{prefix} {text}", ""
            if image is not None:
                after_photo = "".join(self.bank[n].latent_text for n in self.concepts_in_photo(image, names))
                text = f"{after_photo} {text}" if after_photo else text
                images.append(self.encode_image(image))
            messages.append(Message(role, text, image is not None))
        ids = self.model.prompt_ids(self.bank, self.adapter.render(messages), images)
        return self._checked(Encoded(ids, [False] * len(ids), images))

    # ---- forward ---------------------------------------------------------------------------
    def hidden_states(self, items: Sequence[Encoded]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.hidden_states(self.bank, items)

    def loss(self, items: Sequence[Encoded], prefix_cache: dict | None = None, weights: Sequence[float] | None = None,
             precision: str | None = None) -> torch.Tensor:
        """Next-token cross-entropy on answer tokens only, optionally weighted per item and in another precision
        of the frozen model (see :meth:`ConceptModel.loss`)."""
        return self.model.loss(self.bank, items, prefix_cache, weights, precision)

    def first_token_probabilities(self, items: Sequence[Encoded], prefix_cache: dict | None = None) -> torch.Tensor:
        """The distribution of the first answer token after each prompt (``(batch, vocab + concept tokens)``)."""
        return self.model.next_token_probabilities(self.bank, items, prefix_cache)

    def yes_share(self, probs: torch.Tensor) -> list[float]:
        """``P(yes) / (P(yes) + P(no))`` of each row of :meth:`first_token_probabilities`."""
        return self.model.yes_share(probs)

    # ---- recognition -----------------------------------------------------------------------
    @torch.no_grad()
    def prompt_yes_probabilities(self, prompt: str, images: Sequence[ImageLike | None], concepts: Sequence[str] = (),
                                 batch_size: int = 8, views: bool = False) -> list[float]:
        """``P(yes) / (P(yes) + P(no))`` of the first answer token of ``prompt`` asked about each photo; with
        ``views``, the largest over each photo's views (:func:`yollava.images.photo_views`)."""
        if views:
            groups = [self._views(img) for img in images]
            flat = self.prompt_yes_probabilities(prompt, [v for g in groups for v in g], concepts, batch_size)
            out, i = [], 0
            for g in groups:
                out.append(max(flat[i : i + len(g)]))
                i += len(g)
            return out
        out: list[float] = []
        for i in range(0, len(images), batch_size):
            items = [self.encode(prompt, image=img, concepts=concepts) for img in images[i : i + batch_size]]
            out += self.yes_share(self.first_token_probabilities(items))
        return out

    @staticmethod
    def _views(image: ImageLike | None) -> list[ImageLike]:
        if image is None or isinstance(image, EncodedImage):
            raise ValueError("reading a photo in views needs the photo itself (a path or PIL image), not "
                             + ("no photo" if image is None else "its encoded visual tokens"))
        return photo_views(image)

    def yes_probabilities(self, name: str, images: Sequence[ImageLike], batch_size: int = 8) -> list[float]:
        """P(yes) / (P(yes) + P(no)) for the first answer token of the paper's recognition query, read as the
        concept reads (:attr:`Concept.reading`: the whole photo, or the best of its views)."""
        self._ensure_loaded([name])
        query = RECOGNITION_QUERY.format(identifier=self.bank[name].identifier)
        return self.prompt_yes_probabilities(query, images, concepts=[name], batch_size=batch_size,
                                             views=self.bank[name].reading == "views")

    @torch.no_grad()
    def concept_yes_probabilities(self, image: ImageLike, names: Sequence[str], batch_size: int = 8,
                                  prefix_cache: dict | None = None, photo: ImageLike | None = None) -> list[float]:
        """:meth:`yes_probabilities` of one photo for each of ``names``, batched; the system prompt and the
        photo are run once and their keys/values reused where the model allows (``who`` verification;
        pass the same ``prefix_cache`` dict and encoded photo to reuse them across calls). Concepts that read
        ``"views"`` are asked about each view of ``photo`` (the photo itself; default ``image``)."""
        self._ensure_loaded(names)
        by_views = [n for n in names if self.bank[n].reading == "views"]
        whole = [n for n in names if n not in by_views]
        scores: dict[str, float] = {}
        if whole:
            scores.update(zip(whole, self._yes_on_one_photo(self.encode_image(image), whole, batch_size, prefix_cache)))
        if by_views:
            best = [0.0] * len(by_views)
            for view in self._views(image if photo is None else photo):
                best = [max(b, p) for b, p in zip(best, self._yes_on_one_photo(self.encode_image(view), by_views, batch_size, {}))]
            scores.update(zip(by_views, best))
        return [scores[n] for n in names]

    def _yes_on_one_photo(self, img: EncodedImage, names: Sequence[str], batch_size: int, prefix_cache: dict | None) -> list[float]:
        cache: dict = {} if prefix_cache is None else prefix_cache
        out: list[float] = []
        for i in range(0, len(names), batch_size):
            items = [self.encode(RECOGNITION_QUERY.format(identifier=self.bank[n].identifier), image=img, concepts=[n])
                     for n in names[i : i + batch_size]]
            out += self.yes_share(self.first_token_probabilities(items, cache))
        return out

    # ---- generation ------------------------------------------------------------------------
    @torch.no_grad()
    def stream_encoded(self, enc: Encoded, max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
                       seed: int | None = None, on_token: Callable[[int], None] | None = None, exact: bool = False) -> Iterator[str]:
        """Yield the answer to an encoded prompt as it is generated (text pieces). ``on_token(n)`` is
        called with the number of tokens generated so far, before each token's text is yielded.
        ``exact``: the model itself, not a faster generation runtime (synthesised training answers)."""
        out: list[int] = []
        shown = ""
        for token in self.model.generate_ids(self.bank, enc, max_new_tokens, temperature, top_p, seed, exact):
            out.append(token)
            if on_token is not None:
                on_token(len(out))
            text = self.model.decode(self.bank, out)
            if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                yield text[len(shown) :]
                shown = text
        text = self.model.decode(self.bank, out)
        if len(text) > len(shown):
            yield text[len(shown) :]

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
        exact: bool = False,
    ) -> Iterator[str]:
        """Yield the answer as it is generated (text pieces); greedy when ``temperature == 0``."""
        enc = self.encode(prompt, image=image, concepts=concepts)
        yield from self.stream_encoded(enc, max_new_tokens, temperature, top_p, seed, exact=exact)

    @torch.no_grad()
    def chat_many(self, prompts: Sequence[tuple[str, ImageLike | None]], concepts: Sequence[str] = (), max_new_tokens: int = 128,
                  batch_size: int = 20, exact: bool = False) -> list[str]:
        """Greedy answers to several ``(prompt, photo or None)`` at once (batched; see
        :meth:`ConceptModel.generate_batch_ids`): the answers :meth:`chat` gives one by one, up to float
        summation order, in a fraction of the time. ``exact``: the model itself, not a faster
        generation runtime."""
        answers: list[str] = []
        for i in range(0, len(prompts), batch_size):
            items = [self.encode(p, image=img, concepts=concepts) for p, img in prompts[i : i + batch_size]]
            answers += [self.model.decode(self.bank, ids).strip()
                        for ids in self.model.generate_batch_ids(self.bank, items, max_new_tokens, exact)]
        return answers

    def chat(self, prompt: str, image: ImageLike | None = None, concepts: Sequence[str] = (), **kwargs) -> str:
        """Answer ``prompt`` (which may name concepts like ``<bo>``), with or without a photo."""
        return "".join(self.stream_chat(prompt, image=image, concepts=concepts, **kwargs)).strip()
