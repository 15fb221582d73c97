"""Generation (Yo'Chameleon): does a concept draw *its* subject, and does drawing cost understanding?

For each subject the method draws ``n_images`` pictures of "A photo of {subject}." (the subject introduced the method's
way: the learned concept for ``yochameleon`` and its ablations, a description for ``text-human``, the plain name for
``vanilla``) on a model that draws (Janus). The pictures and the subject's held-out test photos are embedded with the
product's image embedder (EfficientNet-Lite0, the pool's) or, with ``--embedder``, a local CLIP / SigLIP / DINO
checkpoint (:class:`yollava.vision.hf_embedder.HFImageEmbedder`: the papers' CLIP-I / DINO scores), and the record keeps:

- ``subject_similarity``: mean cosine of the pictures to the subject's test photos;
- ``other_similarity``: mean cosine to the other subjects' test photos;
- ``margin``: the difference (how much more like the subject than like the others the pictures are);
- ``identified``: the share of pictures closest (mean cosine) to the subject among all subjects;
- recognition on the same concept (weighted accuracy at the method's threshold and ROC-AUC on its test photos
  against the other subjects'): the understanding a concept keeps while it also draws.

An understanding-only concept (``yollava``) cannot draw: it is recorded as unavailable for drawing.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..engine.drawing import DRAW_PROMPT
from ..errors import CannotGenerateImagesError
from ..train.metrics import recognition_metrics
from .datasets import RecognitionDataset, Subject
from .driver import Task
from .methods import EvalContext, Method, Unavailable, YollavaMethod, _training_info
from .registry import method_names, register_method, register_task
from .report import _f, _footer, _header
from .store import RunStore

PROTOCOL_VERSION = 1


@register_task("generation")
class GenerationTask(Task):
    """Pictures of each subject drawn by each method, compared with its held-out photos and the other subjects'."""

    paper_note: ClassVar[str] = ("Paper (Yo'Chameleon, CVPR 2025): image generation quality of the personalised subject by "
                                 "CLIP-I / DINO similarity to real photos; here the product's embedder, on this machine's data.")

    def __init__(self, dataset: RecognitionDataset, *, subjects: list[str] | None = None, max_subjects: int | None = None,
                 n_images: int = 4, guidance: float | None = None, max_negatives: int | None = 40, seed: int = 0, embedder=None):
        self.dataset = dataset
        self.subjects = dataset.select(subjects, max_subjects)
        self.n_images, self.guidance, self.max_negatives, self.seed = n_images, guidance, max_negatives, seed
        self._embedder = embedder
        self._features: dict[Path, np.ndarray] = {}

    def protocol(self, common: dict[str, Any]) -> dict[str, Any]:
        return {"task": "generation", "version": PROTOCOL_VERSION, "dataset": self.dataset.name, "seed": self.seed,
                "split": self.dataset.split(), "prompt": DRAW_PROMPT, "n_images": self.n_images, "guidance": self.guidance,
                "max_negatives": self.max_negatives, "embedder": getattr(self.embedder(None), "fingerprint", type(self.embedder(None)).__name__),
                "model": common["model"], "recipe": common["recipe"], "train": common["train"], "data": common["data"],
                "caption_tokens": common["caption_tokens"], "summary_tokens": common["summary_tokens"]}

    def embedder(self, engine):
        if self._embedder is None:
            from ..who import embedder_for

            self._embedder = embedder_for(engine)
        return self._embedder

    def _embed_photos(self, engine, paths: list[Path]) -> np.ndarray:
        from ..who.embedding import embed_images

        missing = [p for p in paths if p not in self._features]
        if missing:
            for p, v in zip(missing, embed_images(self.embedder(engine), missing)):
                self._features[p] = v
        return np.stack([self._features[p] for p in paths])

    def score(self, ctx: EvalContext, method: Method, subject: Subject, info: dict, started: float) -> dict[str, Any]:
        from ..engine.drawing import generate_image
        from ..who.embedding import embed_images

        engine = ctx.engine
        p = method.prompting(ctx, subject)
        t1 = time.perf_counter()
        try:
            drawing = generate_image(engine, p.ask(DRAW_PROMPT.replace("{identifier}", "{subject}")), n=self.n_images, seed=self.seed,
                                     guidance=self.guidance, concepts=p.concepts)
        except CannotGenerateImagesError as e:
            raise Unavailable(str(e)) from None
        t2 = time.perf_counter()
        drawn = embed_images(self.embedder(engine), drawing.images)
        others = [s for s in self.dataset.subjects if s.name != subject.name and s.test]
        mine = drawn @ self._embed_photos(engine, subject.test).T
        per_subject = {s.name: float((drawn @ self._embed_photos(engine, s.test).T).mean()) for s in [subject, *others]}
        closest = [max([subject, *others], key=lambda s: float((d @ self._embed_photos(engine, s.test).T).mean())).name == subject.name
                   for d in drawn]
        other_sim = float(np.mean([per_subject[s.name] for s in others])) if others else None
        paths, labels = self.dataset.test_set(subject, self.max_negatives, self.seed)
        scores = method.recognition_scores(ctx, subject, paths)
        recog = recognition_metrics(labels, scores, method.threshold(ctx, subject))
        return {"info": info, "prompt": drawing.prompt, "self_prompted": drawing.self_prompted,
                "subject_similarity": float(mine.mean()), "other_similarity": other_sim,
                "margin": None if other_sim is None else float(mine.mean()) - other_sim, "identified": float(np.mean(closest)),
                "n_images": len(drawing.images), "recognition": {k: recog[k] for k in ("weighted_accuracy", "auc")},
                "prepare_seconds": round(t1 - started, 2), "draw_seconds": round(t2 - t1, 2), "seconds_per_image": round((t2 - t1) / len(drawing.images), 3)}

    def describe(self, record: dict) -> str:
        margin = record["margin"]
        return (f"similarity to the subject {record['subject_similarity']:.3f}"
                + (f" (margin over other subjects {margin:+.3f})" if margin is not None else "")
                + f", identified {record['identified']:.2f}, recognition weighted {record['recognition']['weighted_accuracy']:.2f}")

    def finish(self, results: dict, protocol: dict, store: RunStore) -> dict:
        return results | {"protocol": {k: v for k, v in protocol.items() if k != "split"}, "notes": self.dataset.notes,
                          "run_dir": str(store.dir)}

    @classmethod
    def summarise(cls, r: dict) -> dict:
        return {k: r[k] for k in ("subject_similarity", "other_similarity", "margin", "identified")} | {
            "recognition_weighted": r["recognition"]["weighted_accuracy"], "recognition_auc": r["recognition"]["auc"]}

    @classmethod
    def pool(cls, rows: list[dict]) -> dict:
        def mean(key, sub=None):
            values = [(r[key] if sub is None else r[key][sub]) for r in rows]
            values = [v for v in values if v is not None]
            return float(np.mean(values)) if values else None

        return {"subjects": len(rows), "images": sum(r["n_images"] for r in rows), "subject_similarity": mean("subject_similarity"),
                "other_similarity": mean("other_similarity"), "margin": mean("margin"), "identified": mean("identified"),
                "recognition_weighted": mean("recognition", "weighted_accuracy"), "recognition_auc": mean("recognition", "auc"),
                "seconds_per_image": mean("seconds_per_image")}

    @classmethod
    def markdown(cls, results: dict, title: str | None = None) -> str:
        lines = _header(results, title or "Generation", cls.paper_note)
        lines += ["| method | subjects | images | similarity to the subject | to other subjects | margin | identified | "
                  "recognition weighted | recognition AUC | s per image |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for m in results["methods"]:
            o = results["overall"].get(m, {})
            lines.append(f"| {m} | {o.get('subjects', 0)} | {o.get('images', 0)} | {_f(o.get('subject_similarity'))} | "
                         f"{_f(o.get('other_similarity'))} | **{_f(o.get('margin'))}** | {_f(o.get('identified'))} | "
                         f"{_f(o.get('recognition_weighted'))} | {_f(o.get('recognition_auc'))} | {_f(o.get('seconds_per_image'))} |")
        lines += _footer(results, notes=False)
        return "\n".join(lines) + "\n"

    @classmethod
    def chart_series(cls, results: dict) -> dict[str, list]:
        return {"margin": [results["overall"].get(m, {}).get("margin") for m in results["methods"]],
                "identified": [results["overall"].get(m, {}).get("identified") for m in results["methods"]]}


# ---- Yo'Chameleon and its ablations ----------------------------------------------------------------
@register_method("yochameleon-shared-tokens", tasks=("generation", "recognition"), recipe="yochameleon-shared-tokens")
@register_method("yochameleon-no-self-prompting", tasks=("generation", "recognition"), recipe="yochameleon-no-self-prompting")
@register_method("yochameleon-no-soft-positives", tasks=("generation", "recognition"), recipe="yochameleon-no-soft-positives")
@register_method("yochameleon", tasks=("generation", "recognition"), default_for=("generation",))
class YoChameleonMethod(YollavaMethod):
    """A Yo'Chameleon concept (:func:`yollava.yochameleon.personalize_unified`) trained from the subject's training photos
    with the named recipe, the run's epochs, learning rate and seed, and the run's understanding data settings; asked
    and released as a Yo'LLaVA concept is (its folder, prompting, threshold and release are :class:`YollavaMethod`'s)."""

    def __init__(self, name: str = "yochameleon", recipe: str = "yochameleon"):
        super().__init__(name)
        self.recipe = recipe

    def prepare(self, ctx: EvalContext, subject: Subject) -> dict:
        from ..engine.drawing import require_writer
        from ..train.yochameleon import get_unified_recipe
        from ..yochameleon import personalize_unified

        if not subject.train:
            raise Unavailable("no training photo")
        try:
            require_writer(ctx.engine.adapter)
        except CannotGenerateImagesError as e:
            raise Unavailable(str(e)) from None
        meta_path = self.folder(ctx) / f"{subject.concept}.json"
        if meta_path.exists():
            return _training_info(ctx.engine.load_concept(meta_path).meta, cached=True)
        config = replace(get_unified_recipe(self.recipe).train, epochs=ctx.train.epochs, lr=ctx.train.lr, seed=ctx.train.seed)
        data = replace(ctx.data, category=subject.category)
        made = personalize_unified(ctx.engine.with_bank(self.folder(ctx), ctx.engine.bank), subject.concept, list(subject.train),
                                   recipe=self.recipe, config=config, data=data, pool=ctx.pool if config.soft_positives or data.needs_pool else None,
                                   overwrite=True, progress=ctx.progress, visual=False)
        return _training_info(made.concept.meta, cached=False) | {"soft_positives": len(made.soft_positives)}



#: the methods ``yollava eval generation`` offers
GENERATION_METHODS = method_names("generation")
