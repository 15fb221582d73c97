"""The method and the baselines, behind one small interface.

Every language-model method is a way of *introducing* the subject before a question:

- ``yollava``: the learned concept (``<bo> is <bo_1>...<bo_k>.``, added by the engine) and the
  identifier ``<bo>`` in the question; trained once per subject and cached in the run folder.
  ``yollava-no-hard`` / ``yollava-no-conv`` are the paper's data ablations (Table 7);
  ``yollava-no-short`` / ``yollava-no-sentence`` drop recipe v2's one-word or sentence recognition answers.
- ``vanilla``: nothing; the subject is asked about by its plain name ("Can you see if bo is in this
  photo?"). The model has never been told what "bo" is, so this is the paper's chance-level baseline.
  ``vanilla-sks`` asks about "sks" instead: several subject names here describe the subject
  ("shiba-gray", "yellow-duck", "red_piggy_bank"), and a plain-name prompt leaks that.
- ``text-human``: a human-written description before the question (paper Table 27, "Personalized
  Text Prompting": ``<sks> is [DESCRIPTION]. [QUESTION]``, with the plain name for ``<sks>``).
- ``text-model``: the same, with a description the base model wrote itself: it captions each training
  photo, then summarises the captions in at most 20 words (Table 27 prompts); cached in the run folder.
  A caption that is a refusal ("I'm sorry, ...": small models balk at the role-play prompt) is asked
  again plainly ("This photo shows bo. Describe bo in detail."); the count is recorded.

``myvlm`` is MyVLM's method (recipe ``myvlm``): its concept head recognises and toggles a concept embedding that
follows the photo, so its recognition scores are the head's and its captions and answers the language model's.

and ``head`` is not a language-model method: the product's concept head (MyVLM-style logistic regression on
the image pool's embedder, EfficientNet-Lite0 by default; :class:`yollava.who.ConceptHead`), fitted and
thresholded exactly as a concept's visual signature is. It only does recognition.

Each is one class registered with ``@register_method`` (:mod:`yollava.eval.registry`); the benchmark
driver (:mod:`yollava.eval.driver`) makes it by name and calls ``prepare`` / the task's scoring /
``release`` for every subject.

``yollava eval <task> --help`` lists the registered methods and the task's default ``--methods``
(``default_for=``) from the registry, in registration order: this file's order, then the probes
(:mod:`yollava.eval.probes`; the registry imports the built-in modules in a fixed order, so a method moved to
another module keeps a stable place). A report lists the methods in the order ``--methods`` gave them.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable


from ..data.pool import atomic_write_json
from ..engine import RECOGNITION_QUERY, Engine
from ..recipes import DataConfig, get_recipe
from ..train import TrainConfig
from .datasets import Subject
from .registry import _METHODS as _registered_methods
from .registry import make_method, method_names, parse_methods, register_method
from .scoring import yes_probabilities
from .store import settings_differences

log = logging.getLogger(__name__)

CAPTION_PROMPT = (
    "You are an AI visual assistant, and you are seeing a single image of {name}, normally the main object or person "
    "in the image. Describe the photo in detail."
)
SUMMARY_PROMPT = (
    "You are given descriptions of the same subject named {name} in different photos (e.g., the same cat).\n"
    "Your job is to write a brief description of the subject's appearance. Your description should be expressive "
    "enough that you can use this caption to recognize the object in another photo.\n"
    "You can use a maximum of 20 words. Any extra words will be ignored. Start your answer with: \"{name} is...\".\n\n"
    "Descriptions:\n{captions}"
)
FALLBACK_CAPTION_PROMPT = "This photo shows {name}. Describe {name} in detail."
_REFUSAL = re.compile(r"^\s*(I'm sorry|I am sorry|I can't|I cannot|Sorry)", re.I)
_BRACKETED = re.compile(r"<([A-Za-z0-9][A-Za-z0-9_-]*)>")

ABLATIONS = {  # the paper's data ablations (Table 7) and recipe v2's two kinds of recognition answers
    "yollava-no-hard": {"hard_negatives": False},
    "yollava-no-conv": {"conversations": False},
    "yollava-no-short": {"short_answers": False},
    "yollava-no-sentence": {"sentence_answers": False},
}
#: the tasks each ablation is offered for on the command line (the others: every task)
ABLATION_TASKS = {"yollava-no-short": ("recognition",), "yollava-no-sentence": ("recognition",)}
ALL_TASKS = ("recognition", "qa", "caption")


class Unavailable(Exception):
    """The method cannot run for this subject (e.g. no description, no training photo); recorded, not fatal."""


def plain_text(text: str) -> str:
    """Text for a prompt without concepts: ``<bo>`` -> ``bo`` (the engine would read it as a concept)."""
    return _BRACKETED.sub(r"\1", text).strip()


@dataclass
class EvalContext:
    engine: Engine
    run_dir: Path
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    #: the named recipe ``train``/``data`` come from (recorded in each concept's JSON)
    recipe_name: str = "fast"
    #: returns the image pool the training-set builder may use (held-out test photos already removed)
    pool_fn: Callable[[], Any] | None = None
    caption_tokens: int = 96
    summary_tokens: int = 48
    batch_size: int = 8
    progress: bool = True
    #: other run folders whose concepts/descriptions may be reused when they were made the same way
    reuse_from: list[Path] = field(default_factory=list)
    #: (prompt, photo path) -> P(yes) of a prompt without concepts (:meth:`Method.recognition_scores`)
    scores_without_concepts: dict[tuple[str, str], float] = field(default_factory=dict)
    _pool: Any = None

    @property
    def pool(self):
        if self._pool is None:
            if self.pool_fn is None:
                raise ValueError("this method needs an image pool (negatives) but none was given")
            self._pool = self.pool_fn()
        return self._pool


@dataclass
class Prompting:
    """How a language-model method introduces the subject."""

    prefix: str  # text before the question ("" or a description)
    concepts: list[str]  # concepts the engine introduces (yollava)
    mention: str  # how the question names the subject ("<bo>" or "bo")

    def ask(self, question: str) -> str:
        """``question`` names the subject ``{subject}``."""
        return self.ask_raw(question.format(subject=self.mention))

    def ask_raw(self, question: str) -> str:
        """``question`` already names the subject."""
        return f"{self.prefix} {question}" if self.prefix else question


class Method:
    """A way to answer the benchmark's questions about a subject. Subclass it, override ``prompting`` (a
    language-model method) or ``recognition_scores`` (anything else), and register it with
    ``@register_method("name")``: that is all a new baseline needs."""

    name: str = ""
    #: the tasks it is offered for on the command line (``register_method(tasks=...)`` overrides)
    tasks: tuple[str, ...] = ALL_TASKS

    def __init__(self, name: str | None = None):
        if name:
            self.name = name

    def prepare(self, ctx: EvalContext, subject: Subject) -> dict:
        """Train / describe / fit what the subject needs (cached); returns info for the record."""
        return {}

    def prompting(self, ctx: EvalContext, subject: Subject) -> Prompting:
        raise NotImplementedError

    def threshold(self, ctx: EvalContext, subject: Subject) -> float:
        return 0.5

    def recognition_scores(self, ctx: EvalContext, subject: Subject, images: list[Path]) -> list[float]:
        """P(yes) of the recognition query as :meth:`prompting` asks it. A prompt without concepts is the same
        frozen model's answer whatever the subject, so its scores are kept per (prompt, photo) for the run: a
        subject-blind prompt (``vanilla-sks``) reads each photo once, not once per subject."""
        p = self.prompting(ctx, subject)
        prompt = p.ask(RECOGNITION_QUERY.replace("{identifier}", "{subject}"))
        if p.concepts or not all(isinstance(x, (str, Path)) for x in images):
            return yes_probabilities(ctx.engine, prompt, images, concepts=p.concepts, batch_size=ctx.batch_size)
        memo = ctx.scores_without_concepts
        missing = list(dict.fromkeys(str(x) for x in images if (prompt, str(x)) not in memo))
        memo.update(((prompt, x), s) for x, s in zip(missing, yes_probabilities(
            ctx.engine, prompt, [Path(x) for x in missing], batch_size=ctx.batch_size)))
        return [memo[prompt, str(x)] for x in images]

    def release(self, ctx: EvalContext, subject: Subject) -> None:
        pass


# ---- Yo'LLaVA ------------------------------------------------------------------------------------
@register_method("yollava", tasks=(*ALL_TASKS, "generation"), default_for=ALL_TASKS)  # generation: it cannot draw (recorded)
class YollavaMethod(Method):
    def __init__(self, name: str = "yollava", **data_overrides):
        self.name = name
        self.data_overrides = data_overrides

    def recipe_name(self, ctx: EvalContext) -> str:
        """The named recipe its concepts are trained with (the run's, ``--recipe``)."""
        return ctx.recipe_name

    def train_config(self, ctx: EvalContext) -> TrainConfig:
        return ctx.train

    def data_config(self, ctx: EvalContext, subject: Subject) -> DataConfig:
        try:
            return replace(ctx.data, category=subject.category, **self.data_overrides)
        except ValueError as e:  # e.g. no sentence answers in a recipe that has no one-word answers either
            raise Unavailable(f"{self.name} does not apply to this recipe: {e}") from None

    def folder(self, ctx: EvalContext) -> Path:
        return ctx.run_dir / "concepts" / self.name

    def prepare(self, ctx: EvalContext, subject: Subject) -> dict:
        from ..personalize import ConceptPipeline

        engine, name = ctx.engine, subject.concept
        if not subject.train:
            raise Unavailable("no training photo")
        meta_path = self.folder(ctx) / f"{name}.json"
        data = self.data_config(ctx, subject)
        if not meta_path.exists():
            self._reuse(ctx, subject, data)
        if meta_path.exists():  # trained in an earlier (interrupted) run, or reused from another run folder
            concept = engine.load_concept(meta_path)
            return _training_info(concept.meta, cached=True)
        pipeline = ConceptPipeline(engine, self.recipe_name(ctx), train=self.train_config(ctx), data=data, pool_loader=lambda: ctx.pool,
                                   progress=ctx.progress)
        t0 = time.perf_counter()
        ts = pipeline.training_set(name, list(subject.train), negatives=subject.train_negatives)
        ts.save(ctx.run_dir / "training_sets" / self.name / f"{name}.json")
        build_seconds = time.perf_counter() - t0
        ckpt = ctx.run_dir / "checkpoints" / self.name
        result = pipeline.run(name, list(subject.train), training_set=ts, save=False, visual=False, checkpoint_dir=ckpt,
                              negatives=subject.train_negatives)
        result.concept.meta["data_build_seconds"] = round(build_seconds, 2)
        result.concept.meta["eval_data_config"] = asdict(data)
        engine.save_concept(name, self.folder(ctx))
        for p in ckpt.glob(f"{name}.ckpt.*"):
            p.unlink(missing_ok=True)
        return _training_info(result.concept.meta, cached=False)

    def _reuse(self, ctx: EvalContext, subject: Subject, data: DataConfig) -> None:
        """Copy this subject's concept from another run folder if it was trained from the same photos
        with the same recipe and data settings (and for the same base model: checked on loading)."""
        import shutil

        from ..images import file_sha256

        name = subject.concept
        for run in ctx.reuse_from:
            src = Path(run) / "concepts" / self.name / f"{name}.json"
            if not src.exists():
                continue
            meta = json.loads(src.read_text(encoding="utf-8"))
            recipe = meta.get("recipe", {})
            same = (not settings_differences(recipe.get("train", recipe), json.loads(json.dumps(asdict(self.train_config(ctx)))))
                    and not settings_differences(meta.get("eval_data_config"), json.loads(json.dumps(asdict(data))))
                    and sorted(p["sha256"] for p in meta.get("source_photos", [])) == sorted(file_sha256(p) for p in subject.train)
                    and sorted(meta.get("data", {}).get("given_negative_sha256", [])) == sorted(map(file_sha256, subject.train_negatives)))
            if not same:
                log.warning("not reusing %s: trained with other photos or settings", src)
                continue
            dst = self.folder(ctx)
            dst.mkdir(parents=True, exist_ok=True)
            for suffix in (".safetensors", ".json"):  # the JSON last: its presence means "done"
                shutil.copy2(src.with_suffix(suffix), dst / f"{name}{suffix}")
            log.info("reusing <%s> from %s", name, src)
            return

    def prompting(self, ctx: EvalContext, subject: Subject) -> Prompting:
        return Prompting("", [subject.concept], f"<{subject.concept}>")

    def threshold(self, ctx: EvalContext, subject: Subject) -> float:
        return ctx.engine.bank[subject.concept].threshold

    def recognition_scores(self, ctx: EvalContext, subject: Subject, images: list[Path]) -> list[float]:
        """As a user's ``recognize`` reads them: the concept's own reading (whole photo or best view)."""
        return ctx.engine.yes_probabilities(subject.concept, images, batch_size=ctx.batch_size)

    def release(self, ctx: EvalContext, subject: Subject) -> None:
        if subject.concept in ctx.engine.bank:
            ctx.engine.unload_concept(subject.concept)


def _training_info(meta: dict, cached: bool) -> dict:
    m = meta.get("metrics", {})
    return {
        "cached": cached,
        "threshold": meta.get("recognition_threshold", 0.5),
        "best_epoch": m.get("best_epoch"),
        "train_seconds": m.get("seconds"),
        "data_build_seconds": meta.get("data_build_seconds"),
        "samples_seen": m.get("samples_seen"),
        "holdout": m.get("holdout"),
        "counts": meta.get("counts"),
        "recipe": meta.get("recipe"),
    }


# ---- prompting baselines -------------------------------------------------------------------------
@register_method("vanilla-sks", tasks=("recognition", "qa"), placeholder="sks")
@register_method("vanilla", tasks=(*ALL_TASKS, "generation"), default_for=(*ALL_TASKS, "generation"))  # (decorators apply bottom-up: "vanilla" is registered first)
class VanillaMethod(Method):
    """No information about the subject. ``vanilla`` names it by its plain name ("bo", "shiba gray");
    ``vanilla-sks`` by the meaningless placeholder "sks", as the paper's identifiers are: many subject
    names here say what the subject is ("yellow-duck", "red_piggy_bank"), which a plain-name prompt leaks."""

    def __init__(self, name: str = "vanilla", placeholder: str | None = None):
        self.name = name
        self.placeholder = placeholder

    def prompting(self, ctx: EvalContext, subject: Subject) -> Prompting:
        return Prompting("", [], self.placeholder or subject.plain)


@register_method("text-human", tasks=(*ALL_TASKS, "generation"), default_for=(*ALL_TASKS, "generation"))
class TextHumanMethod(Method):
    name = "text-human"

    def prepare(self, ctx: EvalContext, subject: Subject) -> dict:
        if not subject.description:
            raise Unavailable("no human-written description of this subject")
        return {"description": plain_text(subject.description)}

    def prompting(self, ctx: EvalContext, subject: Subject) -> Prompting:
        return Prompting(plain_text(subject.description or ""), [], subject.plain)


@register_method("text-model", default_for=("recognition",))
class TextModelMethod(Method):
    """Paper Table 27: the base model captions each training photo, then summarises the captions."""

    name = "text-model"

    def __init__(self, name: str | None = None):
        super().__init__(name)
        self._descriptions: dict[str, str] = {}

    def path(self, ctx: EvalContext, subject: Subject) -> Path:
        return ctx.run_dir / "descriptions" / f"{subject.concept}.json"

    def describe(self, ctx: EvalContext, subject: Subject) -> dict:
        path = self.path(ctx, subject)
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
        for run in ctx.reuse_from:  # made from the same photos with the same lengths in another run folder
            src = Path(run) / "descriptions" / path.name
            if src.exists():
                d = json.loads(src.read_text(encoding="utf-8"))
                if (d.get("photos") == [p.name for p in subject.train] and d.get("caption_tokens") == ctx.caption_tokens
                        and d.get("summary_tokens") == ctx.summary_tokens and d.get("model") == _model_id(ctx)):
                    atomic_write_json(path, d)
                    return d
        if not subject.train:
            raise Unavailable("no training photo to caption")
        engine, name = ctx.engine, subject.plain
        t0 = time.perf_counter()
        captions, fallbacks = [], 0
        for p in subject.train:
            c = plain_text(engine.chat(CAPTION_PROMPT.format(name=name), image=p, max_new_tokens=ctx.caption_tokens))
            if _REFUSAL.match(c):  # small models may refuse the role-play prompt: ask plainly instead
                c = plain_text(engine.chat(FALLBACK_CAPTION_PROMPT.format(name=name), image=p, max_new_tokens=ctx.caption_tokens))
                fallbacks += 1
            captions.append(c)
        listing = "\n".join(f"{i + 1}. {c}" for i, c in enumerate(captions))
        summary = plain_text(engine.chat(SUMMARY_PROMPT.format(name=name, captions=listing), max_new_tokens=ctx.summary_tokens))
        summary = " ".join(summary.split())
        if not summary:
            summary = f"{name} is the subject of these photos."
        out = {"captions": captions, "description": summary, "seconds": round(time.perf_counter() - t0, 2),
               "photos": [p.name for p in subject.train], "caption_fallbacks": fallbacks, "caption_tokens": ctx.caption_tokens,
               "summary_tokens": ctx.summary_tokens, "model": _model_id(ctx)}
        atomic_write_json(path, out)
        return out

    def prepare(self, ctx: EvalContext, subject: Subject) -> dict:
        d = self.describe(ctx, subject)
        self._descriptions[subject.name] = d["description"]
        return {"description": d["description"], "describe_seconds": d.get("seconds")}

    def prompting(self, ctx: EvalContext, subject: Subject) -> Prompting:
        if subject.name not in self._descriptions:
            self.prepare(ctx, subject)
        return Prompting(self._descriptions[subject.name], [], subject.plain)


def _model_id(ctx: EvalContext) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(ctx.engine.fingerprint(), sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---- concept head --------------------------------------------------------------------------------
@register_method("head", default_for=("recognition",))
class HeadMethod(Method):
    """The product's concept head, as ``personalize`` and the server fit it (``yollava.who.fit_signature``): the
    image pool's embedder, augmented views of the training photos vs the negatives of
    :mod:`yollava.data.negatives`, a photo scored by its best multi-crop view against the head's own threshold."""

    name = "head"
    tasks = ("recognition",)

    def __init__(self, name: str | None = None):
        super().__init__(name)
        self._signatures: dict[str, Any] = {}
        self._views: dict[str, Any] = {}  # each test photo's embedded views, shared by every subject's head in the run

    def prepare(self, ctx: EvalContext, subject: Subject) -> dict:
        from ..who import fit_signature

        if not subject.train:
            raise Unavailable("no training photo")
        signature = fit_signature(subject.train, ctx.pool.embedder, ctx.pool, seed=ctx.train.seed, negatives=subject.train_negatives)
        if signature.head.info.get("kind") != "logistic":
            raise Unavailable("the image pool gave no negatives (empty pool?)")
        self._signatures[subject.name] = signature
        return {**signature.head.info, "threshold": signature.head.threshold}

    def threshold(self, ctx: EvalContext, subject: Subject) -> float:
        return self._signatures[subject.name].head.threshold

    def recognition_scores(self, ctx: EvalContext, subject: Subject, images: list[Path]) -> list[float]:
        from ..who import head_scores

        return head_scores(self._signatures[subject.name], ctx.pool.embedder, images, views=self._views)

    def prompting(self, ctx: EvalContext, subject: Subject) -> Prompting:
        raise Unavailable("the concept head only recognises; it cannot answer questions")

    def release(self, ctx: EvalContext, subject: Subject) -> None:
        self._signatures.pop(subject.name, None)


# ---- MyVLM ---------------------------------------------------------------------------------------
@register_method("myvlm", tasks=ALL_TASKS)
class MyvlmMethod(YollavaMethod):
    """MyVLM's method as recipe ``myvlm`` (:mod:`yollava.recipes`), whatever ``--recipe`` says: the concept head
    (fitted on the run's pool, as ``head`` is) recognises and is the toggle; the concept embedding follows a photo
    only when the head finds the subject in it (the engine's :attr:`~yollava.engine.Engine.photo_gate`, set while
    the subject is evaluated). Its recognition scores are therefore the head's."""

    def __init__(self, name: str = "myvlm"):
        super().__init__(name)
        self._gate_before: Any = None

    def recipe_name(self, ctx: EvalContext) -> str:
        return "myvlm"

    def train_config(self, ctx: EvalContext) -> TrainConfig:
        return replace(get_recipe("myvlm").train, seed=ctx.train.seed)

    def data_config(self, ctx: EvalContext, subject: Subject) -> DataConfig:
        return replace(get_recipe("myvlm").data, category=subject.category)

    def prepare(self, ctx: EvalContext, subject: Subject) -> dict:
        from ..who import heads_in_photo

        info = super().prepare(ctx, subject)
        if self._signature(ctx, subject) is None:
            raise Unavailable("the concept has no concept head (the image pool gave no negatives?)")
        self._gate_before = ctx.engine.photo_gate
        ctx.engine.photo_gate = functools.partial(heads_in_photo, ctx.engine)
        return info

    def _signature(self, ctx: EvalContext, subject: Subject):
        from ..who import VisualSignature

        sig = VisualSignature.from_concept(ctx.engine.bank[subject.concept])
        return sig if sig is not None and sig.head is not None else None

    def threshold(self, ctx: EvalContext, subject: Subject) -> float:
        return self._signature(ctx, subject).head.threshold

    def recognition_scores(self, ctx: EvalContext, subject: Subject, images: list[Path]) -> list[float]:
        from ..who import embedder_for, head_scores

        return head_scores(self._signature(ctx, subject), embedder_for(ctx.engine), images)

    def release(self, ctx: EvalContext, subject: Subject) -> None:
        ctx.engine.photo_gate = self._gate_before
        super().release(ctx, subject)


for _name, _overrides in ABLATIONS.items():
    register_method(_name, tasks=ABLATION_TASKS.get(_name, ALL_TASKS), **_overrides)(YollavaMethod)

#: the built-in methods, in the order they are listed (the registry may hold more: ``method_names()``)
METHODS = tuple(_registered_methods)
LLM_METHODS = tuple(m for m in METHODS if m != "head")

__all__ = ["ABLATIONS", "EvalContext", "LLM_METHODS", "METHODS", "Method", "Prompting", "Unavailable", "make_method", "method_names",
           "parse_methods", "plain_text", "register_method"]
