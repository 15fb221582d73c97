"""Build a concept's training set the way Yo'LLaVA does (paper §3.2-3.3, appendix F-G).

- positives: each user photo with a positive recognition Q/A (Table 16);
- easy negatives: random pool photos with a negative recognition Q/A (Table 17);
- hard negatives: for each positive, the m = ceil(n_hard / n_photos) most similar pool photos
  (chosen by :mod:`.negatives`, as every negative is);
- text-only conversations: the base model answers the 10 attribute questions (Table 18 for people,
  Table 19 otherwise) about each positive photo; "Riley"/"this subject" becomes the identifier
  and the photo is dropped from the sample.

Beyond the paper (recipe v2, ``short_answers``): every recognition photo is also asked a short
recognition question (the product's own query or a paraphrase) answered exactly "Yes"/"No", the
decision ``recognize`` reads; positives also come as ``positive_views`` augmented views instead of
repeated pixels. ``calibration_negatives`` unused pool photos (half the next-nearest, half random) and
``calibration_views`` unseen views of the positives are set aside, never trained on, to set the
concept's yes/no threshold without spending any of the user's photos.

``negative_photos``: photos the user gives as ones *without* the subject (the same rooms with other things in
them; the photos of their other concepts), each a "No" sample ("given_negative") as the photo and
:data:`GIVEN_NEGATIVE_VIEWS` augmented views of it, beside the pool's negatives: negatives from the user's own domain,
which the pool cannot supply.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import InvalidImageError, NotEnoughPhotosError
from ..images import file_sha256, list_images, load_image
from .samples import Sample
from ..paths import cache_home
from ..prompts import CAPTION_QUERY
from .pool import ImagePool, atomic_write_json
from .augment import CALIBRATION_VIEW_BASE, SCENE_VIEW_BASE
from .negatives import NEAR_DUPLICATE, choose_negatives
from .scene import choose_scene_crops
from .templates import (conversation_questions, identifier_for, name_in_caption, negative_templates, positive_templates, replace_subject,
                        short_query)
from .training_set import TrainingSet

log = logging.getLogger(__name__)

AnswerFn = Callable[[str, Path], str]
#: the base model answering several (question, photo) pairs at once, in order (batched generation)
AnswerManyFn = Callable[[list[tuple[str, Path]]], list[str]]
#: questions answered per call of an AnswerManyFn (the answers are cached after each call)
ANSWER_BATCH = 20
#: augmented views of each given negative photo trained besides the photo itself (a fixed choice, not tuned)
GIVEN_NEGATIVE_VIEWS = 2


def expand_photos(photos: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their photos; resolved, in order, without repeats."""
    out: list[Path] = []
    for p in photos:
        p = Path(p)
        found = list_images(p) if p.is_dir() else [p]
        out.extend(f.resolve() for f in found if f.resolve() not in out)
    return out


class AnswerCache:
    """Synthesised answers keyed by (photo sha256, question, model fingerprint), in one JSON file."""

    def __init__(self, cache_dir: str | Path | None = None):
        self.path = Path(cache_dir if cache_dir is not None else cache_home() / "answers") / "answers.json"
        try:
            self.data: dict[str, str] = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        except (OSError, ValueError) as e:
            log.warning("answer cache %s is unreadable (%s); starting afresh", self.path, e)
            self.data = {}
        self.dirty = False

    @staticmethod
    def key(sha256: str, question: str, fingerprint: str) -> str:
        return json.dumps([sha256, question, fingerprint])

    def get(self, sha256: str, question: str, fingerprint: str) -> str | None:
        return self.data.get(self.key(sha256, question, fingerprint))

    def put(self, sha256: str, question: str, fingerprint: str, answer: str) -> None:
        self.data[self.key(sha256, question, fingerprint)] = str(answer)
        self.dirty = True

    def save(self) -> None:
        if self.dirty:
            atomic_write_json(self.path, self.data)
            self.dirty = False


def _checked_positives(photos: list[Path], pool: ImagePool | None, need_vectors: bool):
    """Readable, distinct (by sha256) user photos, their sha256s, embeddings (if needed) and the skipped."""
    if need_vectors:
        vectors, ok, skipped = pool.embed(photos)
    else:
        ok, skipped, vectors = [], [], None
        for p in photos:
            try:
                load_image(p)
                ok.append(p)
            except InvalidImageError as e:
                log.warning("skipping unreadable photo %s", e)
                skipped.append((p, str(e)))
    keep, shas = [], []
    for i, p in enumerate(ok):
        sha = file_sha256(p)
        if sha in shas:
            log.warning("%s is a copy of %s; using it once", p, ok[keep[shas.index(sha)]])
            continue
        keep.append(i)
        shas.append(sha)
    return [ok[i] for i in keep], shas, None if vectors is None else vectors[keep], skipped


def _given_negatives(photos: Iterable[str | Path], positive_shas: set[str]) -> tuple[list[Path], list[str]]:
    """The user's photos without the subject: readable (an unreadable one raises, naming it), distinct, none a copy
    of one of the subject's photos."""
    out, shas = [], []
    for p in expand_photos(photos):
        load_image(p)
        sha = file_sha256(p)
        if sha in positive_shas:
            log.warning("%s is one of the subject's own photos; not using it as a photo without the subject", p)
        elif sha not in shas:
            out.append(p)
            shas.append(sha)
    return out, shas


def _answer_missing(cache: AnswerCache, missing: list[tuple[Path, str, str]], fingerprint: str, answer_fn: AnswerFn | None,
                    answer_many: AnswerManyFn | None, label: str) -> None:
    """Ask the base model the ``(photo, sha256, question)`` not in ``cache`` yet, a batch (or one) at a time,
    saving the cache after each, so an interrupted build keeps what it was told."""
    step = ANSWER_BATCH
    if answer_many is None:  # one question per call
        answer_many, step = (lambda pairs: [answer_fn(q, p) for q, p in pairs]), 1
    bar = tqdm(total=len(missing), desc=label, unit="answer", leave=False, disable=not missing)
    try:
        for i in range(0, len(missing), step):
            chunk = missing[i : i + step]
            answers = answer_many([(q, p) for p, _, q in chunk])
            if len(answers) != len(chunk):
                raise RuntimeError(f"answer_many returned {len(answers)} answers for {len(chunk)} questions")
            for (_, sha, q), answer in zip(chunk, answers):
                cache.put(sha, q, fingerprint, answer)
            cache.save()
            bar.update(len(chunk))
    finally:
        cache.save()
        bar.close()


def build_training_set(
    name: str,
    photos: Iterable[str | Path],
    pool: ImagePool | None,
    *,
    answer_fn: AnswerFn | None = None,
    answer_many: AnswerManyFn | None = None,
    category: str = "object",
    n_easy_negatives: int = 100,
    n_hard_negatives: int = 100,
    conversations: bool = True,
    hard_negatives: bool = True,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    model_fingerprint: str = "",
    near_duplicate: float = NEAR_DUPLICATE,
    positives_per_photo: int = 1,
    conversation_photos: int | None = None,
    sentence_answers: bool = True,
    short_answers: bool = False,
    sentence_negatives: int | None = None,
    positive_views: int | None = 0,
    calibration_negatives: int = 0,
    calibration_views: int = 0,
    product_query_share: float = 0.5,
    caption_photos: int = 0,
    caption_negatives: int = 0,
    scene_negatives: int = 0,
    negative_photos: Iterable[str | Path] = (),
) -> TrainingSet:
    """Build the training set for concept ``name`` from the user's ``photos`` (files or folders).

    ``answer_fn(question, image_path) -> str`` is the base model answering a question about a photo
    (needed when ``conversations``, unless ``answer_many(pairs) -> answers`` answers several at once, which is
    then used instead: batched generation); its answers are cached under ``cache_dir`` (default
    ``$YOLLAVA_CACHE/answers``) keyed by photo sha256, question and ``model_fingerprint``.
    ``conversation_photos`` limits the photos asked about (the official ``<bo>`` data uses 4); default all.
    ``positives_per_photo`` distinct positive templates per photo (the paper pairs each photo with one;
    its official data has 13-20 per photo). Deterministic for a given ``seed`` and pool.
    ``sentence_answers``: the paper's sentence templates (Tables 16-17) on each positive photo and on
    ``sentence_negatives`` of the negatives (None: all). ``short_answers``: a "Yes"/"No" sample for every
    recognition photo and each of its ``positive_views`` augmented views (see the module docstring;
    None: as many views as make the positives' short answers as many as the negatives).
    ``caption_photos``: that many of the photos are asked "Describe this photo." by the base model (through
    ``answer_fn``/``answer_many``, cached like the conversations) and its caption, rewritten to name the subject by
    the identifier (:func:`~yollava.data.templates.name_in_caption`), becomes the answer of a caption sample
    with the photo (MyVLM's captioning task). ``caption_negatives``: that many of the negatives (given, then hard ones first) are
    captioned too, their captions kept as they are ("other_caption" samples: where the subject is not, it is not named).
    ``scene_negatives``: up to that many crops of each photo where the subject is not (:mod:`.scene`; found with the
    pool's embedder, so it needs a pool and 2 photos or more), each a "No" sample ("scene_negative"), with the short
    answers' question. ``negative_photos``: see the module docstring (files or folders; a copy of one of the
    subject's photos is left out with a warning; an unreadable one is an error naming it).
    """
    identifier = identifier_for(name)
    if not (sentence_answers or short_answers):
        raise ValueError("recognition samples need sentence_answers or short_answers (or both)")
    want_negatives = n_easy_negatives > 0 or (hard_negatives and n_hard_negatives > 0) or calibration_negatives > 0
    if want_negatives and pool is None:
        raise ValueError("negatives need an image pool (pass pool=ImagePool..., or n_easy_negatives=0, hard_negatives=False)")
    if scene_negatives and (pool is None or not short_answers):
        raise ValueError("scene negatives need an image pool (its embedder finds the subject) and short_answers")
    if not 0 <= calibration_views < SCENE_VIEW_BASE - CALIBRATION_VIEW_BASE:
        raise ValueError(f"calibration_views must be in 0..{SCENE_VIEW_BASE - CALIBRATION_VIEW_BASE - 1}, not {calibration_views}")
    if (conversations or caption_photos or caption_negatives) and answer_fn is None and answer_many is None:
        raise ValueError("conversations and captions need answer_fn(question, image_path) -> str (the base model) or "
                         "answer_many, or conversations=False and caption_photos=0")
    paths = expand_photos(photos)
    pos_paths, pos_shas, pos_vecs, skipped = _checked_positives(paths, pool, want_negatives)
    if not pos_paths:
        raise NotEnoughPhotosError(
            f"no readable photo of {identifier} among {len(paths)} given" + (f" ({skipped[0][1]})" if skipped else "")
            + "; give at least 1 (the paper uses 3-10)"
        )

    given, given_shas = _given_negatives(negative_photos, set(pos_shas))
    hard, easy, calibration = [], [], []
    if want_negatives:
        chosen = choose_negatives(pool, pos_paths, pos_vecs, n_hard=n_hard_negatives if hard_negatives else 0,
                                  n_easy=n_easy_negatives, n_calibration=calibration_negatives, seed=seed,
                                  positive_sha256=pos_shas, near_duplicate=near_duplicate)
        hard, easy, calibration = chosen.hard, chosen.easy, chosen.calibration

    rng = random.Random(seed)
    pos_t, neg_t = positive_templates(identifier), negative_templates(identifier)

    def short(image: Path, kind: str, view: int = 0, calibration: bool = False, query_share: float = product_query_share) -> Sample:
        answer = "Yes" if kind == "positive" else "No"
        return Sample(short_query(identifier, rng, query_share), answer, image, kind, view, calibration)

    if positive_views is None:
        n_negative_answers = len(hard) + len(easy) + len(given) * (1 + GIVEN_NEGATIVE_VIEWS)
        positive_views = max(0, math.ceil(n_negative_answers / len(pos_paths)) - 1)
    samples: list[Sample] = []
    for p in pos_paths:
        if sentence_answers:
            picks = rng.sample(range(len(pos_t)), min(positives_per_photo, len(pos_t)))
            picks += [rng.randrange(len(pos_t)) for _ in range(positives_per_photo - len(picks))]
            samples += [Sample(*pos_t[i], image=p, kind="positive") for i in picks]
        if short_answers:
            samples += [short(p, "positive", view) for view in range(positive_views + 1)]
    negatives = [(p, "given_negative") for p in given] + [(h.path, "hard_negative") for h in hard] + [(p, "negative") for p in easy]
    with_sentence = set(range(len(negatives)))
    if sentence_negatives is not None and sentence_negatives < len(negatives):
        with_sentence = set(rng.sample(range(len(negatives)), sentence_negatives))
    for i, (p, kind) in enumerate(negatives):
        if sentence_answers and i in with_sentence:
            samples.append(Sample(*rng.choice(neg_t), image=p, kind=kind))
        if short_answers:
            views = range(1 + GIVEN_NEGATIVE_VIEWS) if kind == "given_negative" else (0,)
            samples += [short(p, kind, view) for view in views]
    scene = choose_scene_crops(pos_paths, pool.embedder, scene_negatives) if scene_negatives else []
    samples += [short(c.photo, "scene_negative", SCENE_VIEW_BASE + c.crop) for c in scene]
    # held aside to set the threshold: always asked the product's own query, as recognize() does
    samples += [short(p, "positive", CALIBRATION_VIEW_BASE + v, True, 1.0) for v in range(calibration_views) for p in pos_paths]
    samples += [short(p, "negative", 0, True, 1.0) for p in calibration]

    if conversations or caption_photos or caption_negatives:
        cache = AnswerCache(cache_dir)
        questions = conversation_questions(category) if conversations else []
        asked = [(p, sha, q) for p, sha in list(zip(pos_paths, pos_shas))[:conversation_photos] for q in questions]
        asked += [(p, sha, CAPTION_QUERY) for p, sha in list(zip(pos_paths, pos_shas))[:caption_photos]]
        others = [(Path(p), file_sha256(p), CAPTION_QUERY) for p, _ in negatives[:caption_negatives]]
        asked += others
        _answer_missing(cache, [a for a in asked if cache.get(a[1], a[2], model_fingerprint) is None], model_fingerprint,
                        answer_fn, answer_many, f"conversations about {identifier}")
        other_photos = {p for p, _, _ in others}
        for p, sha, q in asked:
            answer = cache.get(sha, q, model_fingerprint).strip()
            if not answer:
                log.warning("empty answer to %r about %s; sample left out", q, p)
            elif p in other_photos:
                samples.append(Sample(q, answer, p, "other_caption"))
            elif q == CAPTION_QUERY:
                samples.append(Sample(q, name_in_caption(answer, identifier), p, "caption"))
            else:
                samples.append(Sample(replace_subject(q, identifier), replace_subject(answer, identifier), None, "conversation"))

    config = {
        "category": category, "n_easy_negatives": n_easy_negatives, "n_hard_negatives": n_hard_negatives,
        "hard_per_positive": math.ceil(n_hard_negatives / len(pos_paths)) if hard_negatives else 0,
        "conversations": conversations, "hard_negatives": hard_negatives, "seed": seed,
        "near_duplicate": near_duplicate, "positives_per_photo": positives_per_photo, "conversation_photos": conversation_photos,
        "sentence_answers": sentence_answers, "short_answers": short_answers, "sentence_negatives": sentence_negatives,
        "positive_views": positive_views if short_answers else 0, "calibration_negatives": calibration_negatives, "calibration_views": calibration_views,
        "product_query_share": product_query_share, "caption_photos": caption_photos, "caption_negatives": caption_negatives,
        "given_negatives": len(given), "given_negative_sha256": given_shas,
        "scene_negatives": scene_negatives, "scene_crops": [[str(c.photo), c.crop, round(c.score, 4), round(c.best, 4)] for c in scene],
        "model_fingerprint": model_fingerprint, "positive_sha256": pos_shas,
        "pool": None if pool is None else {"index_dir": str(pool.index_dir), "size": len(pool), "embedder": pool.embedder_id},
    }
    return TrainingSet(identifier, samples, pos_paths, easy, hard, skipped, config)
