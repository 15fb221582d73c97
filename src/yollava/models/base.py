"""The one interface every personalisable VLM family implements.

A VLM is seen as five frozen parts: a tokenizer, a token-embedding table, an image encoder that
turns a photo into visual-token embeddings, a decoder that maps input embeddings to hidden states,
and an output layer (``lm_head``). Concept rows live outside the model (see
``yollava.concepts.bank``); the adapter never modifies the wrapped model, which is what keeps the
base behaviour bit-for-bit unchanged.

Adding a family means one file that subclasses :class:`VLMAdapter` and registers itself with
:func:`yollava.models.register`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch import nn


@dataclass
class EncodedImage:
    """A photo turned into visual-token embeddings, ready to be spliced into a prompt.

    ``features`` has shape ``(n_tokens, hidden)``; ``token_ids`` are the placeholder ids that
    stand for the photo in the prompt (features go where ``token_ids == adapter.image_token_id``,
    in order; other ids, e.g. vision start/end markers, are embedded as normal tokens).
    ``extra`` carries family-specific metadata (e.g. Qwen2-VL's ``image_grid_thw``).
    """

    features: torch.Tensor
    token_ids: list[int]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str
    has_image: bool = False


class VLMAdapter(ABC):
    """A frozen vision-language model, seen through the few operations personalisation needs."""

    #: short family name, e.g. "llava", "qwen2_vl", "pocket"
    family: str = ""
    #: text that stands for a photo in a rendered prompt (replaced by ``EncodedImage.token_ids``)
    image_marker: str = "<image>"
    #: whether a prompt's frozen prefix (system prompt + photo) can be run on its own and its keys/values
    #: reused for the rest: False where positions or attention masks depend on the whole prompt (3-D RoPE,
    #: photos that attend to themselves whole); a family that overrides :meth:`position_ids` sets it False
    supports_prefix_cache: bool = True
    #: whether several prompts can be generated at once, left-padded with positions counted from each
    #: prompt's first real token: False for the same families (their own position ids)
    supports_batched_generation: bool = True
    #: whether the family also *writes* images (a unified model: Janus); such an adapter is also an
    #: :class:`ImageWriter`
    can_generate_images: bool = False

    def __init__(self, model: nn.Module, tokenizer, model_id: str):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_id = model_id
        for p in self.model.parameters():
            p.requires_grad_(False)

    # ---- the parts -------------------------------------------------------------------------
    @property
    @abstractmethod
    def embed_tokens(self) -> nn.Embedding:
        """The frozen input-embedding table of the language model."""

    @property
    @abstractmethod
    def lm_head(self) -> nn.Linear:
        """The frozen output layer (no bias) of the language model."""

    @property
    @abstractmethod
    def image_token_id(self) -> int:
        """Placeholder id whose positions receive visual features."""

    @abstractmethod
    def encode_images(self, images: list[Image.Image]) -> list[EncodedImage]:
        """Run the frozen image encoder (+ projector). The result may be cached per photo."""

    @abstractmethod
    def decoder(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values=None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, Any]:
        """Run the frozen decoder; returns ``(last_hidden_state, past_key_values)``."""

    @abstractmethod
    def render(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        """Render a conversation with the family's chat template; photos appear as ``image_marker``."""

    @property
    @abstractmethod
    def end_of_turn(self) -> str:
        """Text that closes an assistant answer in training targets (e.g. ``</s>``, ``<|im_end|>``)."""

    # ---- defaults families may override ----------------------------------------------------
    @contextlib.contextmanager
    def gradient_checkpointing(self):
        """Within this block the frozen decoder recomputes its activations in the backward pass instead of
        keeping them: less memory for about a third more compute. Hugging Face checkpointing is active only
        in train mode, which also turns the KV cache off (so no prefix cache); dropout is 0 in the supported
        configs. The previous mode is restored afterwards."""
        target = self.model if hasattr(self.model, "gradient_checkpointing_enable") else getattr(self.model, "llm", None)
        if target is None or not hasattr(target, "gradient_checkpointing_enable"):
            raise ValueError(f"{type(self.model).__name__} does not support gradient checkpointing")
        was_training = self.model.training
        target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model.train()
        try:
            yield
        finally:
            target.gradient_checkpointing_disable()
            self.model.train(was_training)

    def generation_modules(self, exact: bool = False) -> tuple[Any, nn.Module]:
        """``(decoder, lm_head)`` used to *generate* text: by default the very ones that train and score.
        A family may return a faster inference copy (e.g. int8 weights); training, recognition scores and
        concept compatibility never depend on it. ``exact=True``: always the model itself (what
        synthesised training answers use, so a concept's data does not depend on the chat runtime)."""
        return self.decoder, self.lm_head

    def training_modules(self, precision: str | None = None) -> tuple[Any, nn.Module]:
        """``(decoder, lm_head)`` the training loss runs through. ``None``: the model itself, in its own precision.
        ``"bf16"``: a bf16 version of the frozen decoder and output layer (concept rows stay fp32 and are cast where
        they enter, as for a bf16 base); by default only a model that already runs in bf16 has one. A family may keep
        a bf16 copy of an fp32 model (``pocket`` does). Recognition scores and generation never use it."""
        if precision is None or (precision == "bf16" and self.model_dtype == torch.bfloat16):
            return self.decoder, self.lm_head
        raise ValueError(f"{self.family or type(self).__name__} cannot train in {precision!r} ({self.model_dtype} model); "
                         "use precision None (the model's own) or 'auto'")

    def fast_training_precision(self) -> str | None:
        """What a recipe's ``precision="auto"`` trains in here: ``None`` (the model's own precision) unless the
        family keeps a faster copy for this hardware."""
        return None

    @property
    def generation_runtime(self) -> str:
        """Name of the runtime :meth:`generation_modules` uses (``"fp32"``, ``"int8"``, ...)."""
        return "default"

    def prepare_generation(self) -> None:
        """Make the generation runtime ready now rather than on the first answer (a server calls it at start).
        A no-op for families without another runtime."""

    def use_exact_generation(self) -> None:
        """Generate with the model itself from now on, not a faster runtime (evaluations: their answers must
        not depend on what chat defaults to). A no-op for families without another runtime."""

    def position_ids(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, images: list[list[EncodedImage]]
    ) -> torch.Tensor | None:
        """Position ids for a right-padded batch; ``None`` lets the decoder count 0..T-1.

        When not ``None``, decoding step ``s`` after a prefill uses ``positions[..., -1:] + s + 1``."""
        return None

    @property
    def eos_token_ids(self) -> list[int]:
        ids = set()
        for tok in (self.tokenizer.eos_token, self.end_of_turn):
            if tok:
                tid = self.tokenizer.convert_tokens_to_ids(tok)
                if isinstance(tid, int) and tid != self.tokenizer.unk_token_id:
                    ids.add(tid)
        return sorted(ids)

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding table (may exceed ``len(tokenizer)``: padded vocabularies)."""
        return self.embed_tokens.weight.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.embed_tokens.weight.shape[1]

    @property
    def model_dtype(self) -> torch.dtype:
        """The precision the frozen base runs in (bf16/fp16 on a GPU, fp32 on the CPU)."""
        return self.embed_tokens.weight.dtype

    @property
    def dtype(self) -> torch.dtype:
        """The precision concept rows are kept and trained in: always fp32, even when the base runs
        in bf16/fp16 (rows are cast to :attr:`model_dtype` where they enter the computation, so
        gradients and AdamW updates stay in full precision)."""
        return torch.float32

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    def reserved_tokens(self) -> set[str]:
        """Token strings a concept name must not shadow (special and added tokens)."""
        names = set(self.tokenizer.get_added_vocab().keys())
        names.update(t for t in self.tokenizer.all_special_tokens if t)
        return names

    def fingerprint(self) -> dict[str, Any]:
        """Identity of the base model; a concept only loads on a model with the same one."""
        config = getattr(self.model, "config", None)
        cfg = config.to_dict() if config is not None and hasattr(config, "to_dict") else {}
        for volatile in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash"):
            cfg.pop(volatile, None)
        blob = json.dumps(cfg, sort_keys=True, default=str).encode()
        # a cheap sample of every tensor tells fine-tunes of one architecture apart without hashing GBs
        weights = hashlib.sha256()
        for name, p in self.model.state_dict().items():
            weights.update(name.encode())
            weights.update(p.detach().flatten()[:16].float().cpu().numpy().tobytes())
        return {
            "family": self.family,
            "model_id": self.model_id,
            "config_sha256": hashlib.sha256(blob).hexdigest()[:16],
            "weights_sha256": weights.hexdigest()[:16],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
        }


class ImageWriter(ABC):
    """What a unified family that writes images adds to :class:`VLMAdapter` (Yo'Chameleon).

    Such a model draws a photo as a grid of discrete codes of its image tokenizer (a VQ model): after the prompt and
    :attr:`image_start_id` it predicts ``num_image_tokens`` codes one at a time, each read by its own output layer
    (:meth:`image_logits`) and fed back through its own input embedding (:meth:`image_code_embeddings`); the codes
    decode to pixels. The same codes of a real photo (:meth:`image_codes`) are the targets a concept learns to draw."""

    can_generate_images = True
    #: the guidance scale the family's own ``generate`` uses by default (classifier-free guidance), or None
    default_guidance: float | None = None
    #: whether guidance mixes log-probabilities (Emu3: transformers' ``UnbatchedClassifierFreeGuidanceLogitsProcessor``)
    #: rather than raw scores (Janus: ``ClassifierFreeGuidanceLogitsProcessor``)
    guidance_on_log_probs: bool = False

    @property
    @abstractmethod
    def num_image_tokens(self) -> int:
        """Codes per generated image."""

    @property
    def image_size(self) -> tuple[int, int] | None:
        """``(width, height)`` of the pictures it draws, where known before drawing."""
        return None

    @property
    @abstractmethod
    def image_start_id(self) -> int:
        """The token id that opens a picture (e.g. ``<begin_of_image>``)."""

    @property
    def image_prefix_ids(self) -> list[int]:
        """The tokens after the prompt that the codes follow (default: :attr:`image_start_id` alone; Emu3 adds the
        picture's size)."""
        return [self.image_start_id]

    def code_mask(self, position: int) -> torch.Tensor | None:
        """Which scores of :meth:`image_logits` may be drawn at code ``position`` (a bool vector), or None: all
        (Emu3 draws visual tokens, and its end-of-row token at the end of each row)."""
        return None

    @abstractmethod
    def image_codes(self, images: list[Image.Image]) -> torch.Tensor:
        """``(n, num_image_tokens)`` long: each photo through the frozen image tokenizer (the codes it would draw)."""

    @abstractmethod
    def image_code_embeddings(self, codes: torch.Tensor) -> torch.Tensor:
        """``(..., hidden)``: decoder inputs of image codes ``(...)``."""

    @abstractmethod
    def image_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(..., codebook)``: scores of the next image code from decoder hidden states."""

    @abstractmethod
    def decode_image_codes(self, codes: torch.Tensor) -> list[Image.Image]:
        """``(n, num_image_tokens)`` codes -> n RGB images."""

    def unconditional_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """The prompt classifier-free guidance contrasts with: every token but BOS and :attr:`image_start_id` replaced
        by the pad token, concept tokens included (what Janus's own ``generate`` does). ``ids`` end with
        :attr:`image_prefix_ids`, which are kept."""
        keep = ids == self.image_start_id
        keep[..., ids.shape[-1] - len(self.image_prefix_ids):] = True
        if self.tokenizer.bos_token_id is not None:
            keep |= ids == self.tokenizer.bos_token_id
        return ids.masked_fill(~keep, self.tokenizer.pad_token_id or 0)
