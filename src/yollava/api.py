"""``YoLLaVA``: what users import. An :class:`~yollava.engine.Engine` (a frozen VLM and one concept bank) that
also recognises a concept in any mode, finds who is in a photo and makes concepts from photos.

    from yollava import YoLLaVA

    yl = YoLLaVA.from_pretrained("pocket")
    yl.personalize("bo", ["bo1.jpg", "bo2.jpg", "bo3.jpg"])
    yl.recognize("bo", "new.jpg")          # Found(answer='Yes', p_yes=..., mode='fused', ...)
    yl.who("party.jpg").names              # every stored concept present, best first
    yl.chat("What is <bo> doing?", image="new.jpg")
    yl.generate_image("A photo of <bo> on a beach")   # on a model that draws (Janus), with a yochameleon concept
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from .engine import Engine, ImageLike


def _heads_in_photo(engine, concepts, image):
    from .who import heads_in_photo

    return heads_in_photo(engine, concepts, image)


class YoLLaVA(Engine):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.photo_gate is None:  # concepts taught MyVLM-style follow a photo only when their head finds them in it
            self.photo_gate = functools.partial(_heads_in_photo, self)

    def recognize(self, name: str, image: ImageLike, *, mode: str = "auto", threshold: float | None = None):
        """Is ``<name>`` in ``image``? The answer (a :class:`~yollava.who.Found`, a
        :class:`~yollava.prompts.Recognition`) says the mode that gave it: ``auto`` (default) is the concept head
        while the concept's tokens train and the best measured mode once they are trained; ``head``, ``yollava``
        (the language model's P(yes) alone) or ``fused`` on request (see :mod:`yollava.who`)."""
        from .who import recognize

        return recognize(self, name, image, mode=mode, threshold=threshold)

    def who(self, image: ImageLike, **kwargs):
        """Every loaded or stored concept present in ``image``, best first (see :func:`yollava.who.who`)."""
        from .who import who

        return who(self, image, **kwargs)

    def personalize(self, name: str, photos: Sequence[str | Path], **kwargs):
        """Learn concept ``name`` from ``photos`` and save it (see :func:`yollava.personalize.personalize`). With
        ``recipe="yochameleon"`` (or one of its ablations) on a model that draws, the concept also gets generation
        tokens (see :func:`yollava.yochameleon.personalize_unified`)."""
        from .yochameleon import is_unified_recipe, personalize_unified

        if is_unified_recipe(kwargs.get("recipe")):
            return personalize_unified(self, name, photos, **kwargs)
        from .personalize import personalize

        return personalize(self, name, photos, **kwargs)

    def generate_image(self, prompt: str, *, n: int = 1, seed: int | None = 0, guidance: float | None = None,
                       temperature: float = 1.0, concepts: Sequence[str] = ()):
        """``n`` pictures for ``prompt``, e.g. ``"A photo of <bo> on a beach"``: a
        :class:`~yollava.engine.drawing.Drawing` (``.images``: PIL images). Needs a model that draws (Janus) and
        concepts with generation tokens (trained with ``recipe="yochameleon"``); otherwise
        :class:`~yollava.errors.CannotGenerateImagesError` says which models can. ``guidance``: classifier-free guidance
        scale (None: the family's default, 5 for Janus); ``temperature`` 0: greedy; ``seed`` fixes the sampling."""
        from .engine.drawing import generate_image

        return generate_image(self, prompt, n=n, seed=seed, guidance=guidance, temperature=temperature, concepts=concepts)
