"""A concept: the identifier token ``<name>``, k latent tokens, and the output row of ``<name>``.

These k+1 input rows and one output row are the only trainable parameters of personalisation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import InvalidConceptNameError

DEFAULT_NUM_LATENT = 16
# letters/digits, then letters/digits/_/-; not ending in _<digits> (that shape is reserved for latent tokens).
# Always matched against the whole string (fullmatch): with re.match, "$" also matches before a final "\n".
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_LATENT_SHAPE = re.compile(r"_\d+\Z")
#: device names Windows reserves in any folder and with any extension (CON.json cannot be created there,
#: where exported concepts are unpacked); compared case-insensitively
WINDOWS_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))})


def validate_name(name: str) -> str:
    """Return ``name`` if it is a safe concept name, else raise with the reason."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidConceptNameError(
            f"invalid concept name {name!r}: use 1-64 letters, digits, '_' or '-', starting with a letter "
            "or digit (no spaces, slashes, dots or angle brackets)"
        )
    if name.upper() in WINDOWS_RESERVED:
        raise InvalidConceptNameError(
            f"invalid concept name {name!r}: {name.upper()} is a device name Windows reserves (no file can be called "
            f"{name}.json there); choose another name"
        )
    if _LATENT_SHAPE.search(name):
        raise InvalidConceptNameError(
            f"invalid concept name {name!r}: names ending in _<number> are reserved for latent tokens"
        )
    return name


def identifier(name: str) -> str:
    return f"<{name}>"


def latent_tokens(name: str, k: int) -> list[str]:
    return [f"<{name}_{i}>" for i in range(1, k + 1)]


class Concept(nn.Module):
    """Trainable rows of one concept. ``input_rows[0]`` is ``<name>``, ``input_rows[1:]`` the latents.

    ``extra_tensors`` holds the concept's optional visual signature (``prototype``, ``head.weight``,
    ``head.bias``; see :mod:`yollava.who`): float32 CPU tensors saved in the same safetensors file, never
    trained and never moved by ``.to()``."""

    def __init__(self, name: str, input_rows: torch.Tensor, output_row: torch.Tensor, meta: dict[str, Any] | None = None,
                 extra_tensors: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.name = validate_name(name)
        if input_rows.dim() != 2 or input_rows.shape[0] < 1:
            raise ValueError(f"input_rows must be (k+1, hidden), got {tuple(input_rows.shape)}")
        if output_row.shape != (input_rows.shape[1],):
            raise ValueError(f"output_row must be ({input_rows.shape[1]},), got {tuple(output_row.shape)}")
        self.input_rows = nn.Parameter(input_rows.clone())
        self.output_row = nn.Parameter(output_row.clone())
        self.meta: dict[str, Any] = dict(meta or {})
        self.extra_tensors: dict[str, torch.Tensor] = {k: v.detach().float().cpu().clone() for k, v in (extra_tensors or {}).items()}

    @property
    def k(self) -> int:
        return self.input_rows.shape[0] - 1

    @property
    def identifier(self) -> str:
        return identifier(self.name)

    @property
    def tokens(self) -> list[str]:
        """``[<name>, <name_1>, ..., <name_k>]``: the order of ``input_rows``."""
        return [self.identifier, *latent_tokens(self.name, self.k)]

    @property
    def system_prefix(self) -> str:
        """The sentence that introduces the concept before a question: ``<bo> is <bo_1>...<bo_k>.``"""
        return f"{self.identifier} is {self.latent_text}."

    @property
    def latent_text(self) -> str:
        """``<bo_1>...<bo_k>``: what follows a photo the subject is in, for a concept with ``injection == "vision"``."""
        return "".join(latent_tokens(self.name, self.k))

    @property
    def injection(self) -> str:
        """Where the latents enter a prompt: ``"prompt"`` (Yo'LLaVA: :attr:`system_prefix` before the question) or
        ``"vision"`` (MyVLM: :attr:`latent_text` straight after a photo's visual tokens, only when the subject is in it)."""
        return str(self.meta.get("injection") or "prompt")

    @property
    def reading(self) -> str:
        """How its yes/no is read from a photo: ``"whole"`` (the photo as given) or ``"views"`` (the best of the
        photo's views, :func:`yollava.images.photo_views`); the threshold was calibrated the same way."""
        return str(self.meta.get("reading") or "whole")

    @property
    def threshold(self) -> float:
        """Decision threshold on the yes-probability: 0.5 until trained; training calibrates it on the recipe's
        calibration samples (``fast``/``accurate``: unused pool photos and unseen augmented views of the positives,
        :mod:`yollava.data.builder`; ``paper``: a held-back slice of the training photos)."""
        return float(self.meta.get("recognition_threshold", 0.5))

    @classmethod
    def initialise(
        cls, name: str, embed_weight: torch.Tensor, head_weight: torch.Tensor, k: int = DEFAULT_NUM_LATENT, seed: int = 0,
        visual: tuple[str, Sequence[torch.Tensor]] | None = None,
    ) -> Concept:
        """New rows near the mean embedding (as ``resize_token_embeddings`` does), reproducible for a seed.

        ``visual=(how, features)``: the latents start from the subject's own visual tokens instead (``features``: one
        ``(n_tokens, hidden)`` tensor per training photo, as ``encode_images`` gives them), see :func:`visual_latents`."""
        if k < 0:
            raise ValueError("k must be >= 0")
        gen = torch.Generator().manual_seed(seed)
        w = embed_weight.detach().float()
        mean, std = w.mean(0), w.std(0)
        noise = torch.randn(k + 1, w.shape[1], generator=gen) * std * 0.1
        inputs = mean + noise
        if visual is not None and k:
            how, features = visual
            inputs[1:] = visual_latents(features, k, how) + noise[1:]
        output = head_weight.detach().float().mean(0).to(head_weight.dtype)
        return cls(name, inputs.to(embed_weight.dtype), output)


VISUAL_INITS = ("pooled", "global", "first")


def visual_latents(features: Sequence[torch.Tensor], k: int, how: str = "pooled") -> torch.Tensor:
    """``k`` latent rows from the training photos' visual tokens (each ``(n_tokens, hidden)``):

    - ``pooled``: each photo's token sequence averaged down to ``k`` (adaptive average pooling), then the mean
      over photos;
    - ``global``: each photo's mean visual token, the photos taking turns over the ``k`` rows;
    - ``first``: the first photo's tokens pooled to ``k``."""
    if not features:
        raise ValueError("visual_latents needs the visual tokens of at least one photo")
    if how not in VISUAL_INITS:
        raise ValueError(f"unknown visual initialisation {how!r}; choose one of {', '.join(VISUAL_INITS)}")
    feats = [f.detach().float().reshape(-1, f.shape[-1]) for f in features]
    pool = lambda f: torch.nn.functional.adaptive_avg_pool1d(f.T[None], k)[0].T  # noqa: E731  (n, h) -> (k, h)
    if how == "first":
        return pool(feats[0])
    if how == "pooled":
        return torch.stack([pool(f) for f in feats]).mean(0)
    means = torch.stack([f.mean(0) for f in feats])
    return means[torch.arange(k) % len(feats)]
