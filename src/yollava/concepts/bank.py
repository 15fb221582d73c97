"""The set of loaded concepts, and how their tokens enter and leave the frozen model.

Concept tokens get ids after the base embedding table (``id >= vocab_size``), assigned in load
order and rebuilt on every load/unload; ids never leave the process (files store rows, not ids).
The base embedding and ``lm_head`` are used as they are and never resized or written to: a
prompt without concept tokens goes through exactly the base computation.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..errors import InvalidConceptNameError, UnknownConceptError
from .concept import Concept


class ConceptBank(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int, reserved_tokens: set[str] = frozenset()):
        super().__init__()
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.reserved_tokens = set(reserved_tokens)
        self.concepts: nn.ModuleDict = nn.ModuleDict()
        self._token_to_id: dict[str, int] = {}
        self._id_to_token: dict[int, str] = {}
        self._slices: OrderedDict[str, slice] = OrderedDict()

    # ---- membership ------------------------------------------------------------------------
    def add(self, concept: Concept, replace: bool = False) -> None:
        if concept.input_rows.shape[1] != self.hidden_size:
            raise ValueError(
                f"concept {concept.name!r} has hidden size {concept.input_rows.shape[1]}, model has {self.hidden_size}"
            )
        clash = [t for t in concept.tokens if t in self.reserved_tokens]
        if clash:
            raise InvalidConceptNameError(f"concept name {concept.name!r} clashes with existing token(s) {clash}")
        if concept.name in self.concepts and not replace:
            raise InvalidConceptNameError(f"a concept named {concept.name!r} is already loaded (unload it first)")
        taken = {t for n, c in self.concepts.items() if n != concept.name for t in c.tokens}
        if taken.intersection(concept.tokens):
            raise InvalidConceptNameError(f"concept {concept.name!r} shares token names with a loaded concept")
        self.concepts[concept.name] = concept
        self._reindex()

    def remove(self, name: str) -> Concept:
        if name not in self.concepts:
            raise UnknownConceptError(self.unknown_message(name))
        concept = self.concepts[name]
        del self.concepts[name]
        self._reindex()
        return concept

    def __contains__(self, name: str) -> bool:
        return name in self.concepts

    def __getitem__(self, name: str) -> Concept:
        if name not in self.concepts:
            raise UnknownConceptError(self.unknown_message(name))
        return self.concepts[name]

    def names(self) -> list[str]:
        return list(self.concepts.keys())

    def unknown_message(self, name: str) -> str:
        """The error text for a concept that is not in this bank (names the loaded ones)."""
        loaded = ", ".join(f"<{n}>" for n in self.concepts) or "none"
        return f"unknown concept <{name}> (loaded: {loaded})"

    def _reindex(self) -> None:
        self._token_to_id.clear()
        self._id_to_token.clear()
        self._slices.clear()
        next_id = self.vocab_size
        for name, c in self.concepts.items():
            self._slices[name] = slice(next_id - self.vocab_size, next_id - self.vocab_size + c.k + 1)
            for tok in c.tokens:
                self._token_to_id[tok] = next_id
                self._id_to_token[next_id] = tok
                next_id += 1

    # ---- token <-> id ----------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return len(self._token_to_id)

    def token_id(self, token: str) -> int | None:
        return self._token_to_id.get(token)

    def id_token(self, token_id: int) -> str | None:
        return self._id_to_token.get(token_id)

    def identifier_ids(self) -> list[int]:
        return [self._token_to_id[c.identifier] for c in self.concepts.values()]

    def is_latent(self, token_id: int) -> bool:
        """Whether ``token_id`` is a concept's latent token (``<bo_3>``), not an identifier or a base token."""
        tok = self._id_to_token.get(token_id)
        return tok is not None and tok[1:-1] not in self.concepts

    # ---- the two places concept rows enter the computation ---------------------------------
    def _input_table(self) -> torch.Tensor:
        return torch.cat([c.input_rows for c in self.concepts.values()], dim=0)

    def embed(self, input_ids: torch.Tensor, embed_tokens: nn.Embedding) -> torch.Tensor:
        """Embed ids: base ids through the frozen table, concept ids from the concept rows."""
        is_concept = input_ids >= self.vocab_size
        embeds = embed_tokens(input_ids.masked_fill(is_concept, 0))
        if not self.concepts or not bool(is_concept.any()):
            if bool(is_concept.any()):
                raise UnknownConceptError("prompt holds concept token ids but no concept is loaded")
            return embeds
        table = self._input_table().to(embeds.dtype)  # fp32 rows enter a bf16/fp16 base in its precision
        scale = getattr(embed_tokens, "embed_scale", None)  # Gemma scales its embedding table by sqrt(hidden)
        if torch.is_tensor(scale):
            table = table * scale.to(embeds.dtype)
        rows = table[(input_ids[is_concept] - self.vocab_size)]
        return embeds.masked_scatter(is_concept.unsqueeze(-1), rows)

    def logits(self, hidden: torch.Tensor, lm_head: nn.Linear) -> torch.Tensor:
        """Base logits, followed by one column per concept token: ``<name>`` columns use the concept's
        output row; latent-token columns are ``-inf`` (latents are never generated), except for a concept with
        latent output rows (a Yo'Chameleon concept, which emits its token sets: self-prompting)."""
        base = lm_head(hidden)
        if not self.concepts:
            return base
        cols = []
        for c in self.concepts.values():
            ident = hidden @ c.output_row.to(hidden.dtype)
            cols.append(ident.unsqueeze(-1))
            latent_rows = getattr(c, "latent_output_rows", None)
            if latent_rows is not None:
                cols.append(hidden @ latent_rows.to(hidden.dtype).T)
            elif c.k:
                cols.append(torch.full((*hidden.shape[:-1], c.k), float("-inf"), dtype=base.dtype, device=base.device))
        return torch.cat([base, *cols], dim=-1)

    def parameters_of(self, names: list[str] | None = None) -> list[nn.Parameter]:
        names = self.names() if names is None else names
        return [p for n in names for p in (self[n].input_rows, self[n].output_row)
                + ((self[n].latent_output_rows,) if getattr(self[n], "latent_output_rows", None) is not None else ())]
