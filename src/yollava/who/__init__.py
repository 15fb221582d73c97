"""Who is in this photo? Visual signatures of concepts, a FAISS index over them, retrieve-then-verify.

A concept may carry a **visual signature** in its own files (checked by ``concepts/schema.py``):

- ``prototype`` (d,): the L2-normalised mean of its training photos' pooled embedder features (the image
  pool's embedder: EfficientNet-Lite0 by default);
- ``head.weight`` (d,), ``head.bias`` (1,): a logistic-regression concept head on the same features,
  training photos vs pool negatives (nearest pool photos + random ones), MyVLM-style; without a pool,
  a prototype head (a logistic on the cosine to the prototype, threshold from the training photos);
- ``meta["visual"]``: the embedder id, ``dim``, and how the head was made (its threshold, counts, seconds).

Fitting one takes about a second, so a concept recognises the moment it is created (``stage:
"recognition"``), long before its tokens are trained (``stage: "trained"``).

Every recognition answer says which **mode** produced it:

- ``head``: sigmoid(w·x + b) against the head's threshold;
- ``yollava``: the language model's P(yes) for the paper's recognition query, against the concept's
  calibrated threshold;
- ``fused``: the mean of the two calibrated log-odds margins, through a sigmoid, against 0.5;
- ``auto`` (default): ``head`` while a concept's tokens are untrained, :data:`DEFAULT_TRAINED_MODE` for a
  trained concept with a signature (chosen by ``benchmarks/who.py``: ``benchmarks/results/who/results.md``
  and the README's "Who is in this photo?"), ``yollava`` for a
  concept made before signatures existed.

:func:`who` answers "who is in this photo?" over every loaded and stored concept: a FAISS inner-product
index over the prototypes retrieves the ``top_k`` nearest concepts, a second one over the heads (``[w, b]``
against ``[x, 1]``) the ``top_k`` highest-scoring ones; the union (about ``top_k + 1`` concepts) is verified
by each candidate's own score (the language model's yes-probabilities batched, one photo, prompt
prefix reused); concepts without a signature are always verified; ``strategy="all"`` verifies every
concept (the exact reference).

The package: :mod:`.embedding` (the embedder, photo views), :mod:`.signature` (prototype and head, fitting),
:mod:`.index` (the FAISS indexes and the library's concept sources), :mod:`.verify` (modes, scoring, :func:`who`,
:func:`recognize`), :mod:`.conversation` (chat that introduces the concepts found, and tells a question that names concepts what their heads see), :mod:`.pending` (instant,
recognition-only concepts), :mod:`.head` (the concept head). Every public name is importable from ``yollava.who``.
"""

from __future__ import annotations

from .conversation import WhoChat, chat, named_in_photo, presence_hint, who_prompt
from .pending import instant_concept, remove_pending, save_pending
from .embedding import default_embedder, embed_images, embed_query, embedder_for, embedder_id, query_views, set_embedder
from .index import PENDING_DIR, ConceptIndex, Loader, PrototypeIndex, index_for, library_loader, library_sources, stored_sources
from .head import ConceptHead
from .signature import DEFAULT_HEAD_VIEWS, VisualSignature, attach_signature, composite, concept_stage, fit_signature
from .verify import (DEFAULT_TOP_K, DEFAULT_TRAINED_MODE, MODES, Found, WhoResult, concepts_loaded, decision_threshold, fuse, head_scores,
                     heads_in_photo, heads_on, margin, recognize,
                     resolve_mode,
                     score_candidates, who, who_in)

# the single module's private names, for code written against it
from .pending import _ROW_STATS  # noqa: F401
from .embedding import _DEFAULT_EMBEDDER, _EMBEDDER_LOCK, _EMBEDDERS, _INDEXES, _normalise  # noqa: F401
from .index import _Entry, _stamp  # noqa: F401
from .verify import _EPS, _logit, _NoLock, _sigmoid  # noqa: F401

__all__ = [
    "ConceptHead", "DEFAULT_HEAD_VIEWS", "DEFAULT_TOP_K", "DEFAULT_TRAINED_MODE", "MODES", "PENDING_DIR", "ConceptIndex",
    "Found", "Loader", "PrototypeIndex", "VisualSignature", "WhoChat", "WhoResult", "attach_signature", "chat", "composite",
    "concept_stage", "decision_threshold", "default_embedder", "embed_images", "embed_query", "embedder_for", "embedder_id", "fit_signature", "fuse", "head_scores", "heads_in_photo", "heads_on",
    "index_for", "instant_concept", "library_loader", "library_sources", "concepts_loaded", "margin", "named_in_photo", "presence_hint",
    "query_views", "recognize",
    "remove_pending", "resolve_mode", "save_pending", "score_candidates", "set_embedder", "stored_sources",
    "who", "who_in", "who_prompt",
]
