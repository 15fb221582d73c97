"""The recognition question and its answer: what the engine asks, the training data teaches and every
recognition mode returns (no torch, no model)."""

from __future__ import annotations

from dataclasses import dataclass

#: the recognition query of the paper's evaluation (and of the engine's yes-probabilities)
RECOGNITION_QUERY = "Can you see if {identifier} is in this photo? Answer with a single word or phrase."
#: the caption request of MyVLM's protocol (eval ``caption``) and of the recipes' caption samples
CAPTION_QUERY = "Describe this photo."


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
