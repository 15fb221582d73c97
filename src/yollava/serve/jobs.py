"""Training jobs: persisted in SQLite, run one at a time in a worker thread, resumed after a restart.

A job's photos, training set, answer cache and epoch checkpoints live in its own folder
(``HOME/users/<id>/jobs/<job>``), removed when the job ends. A concept is made by the core's
:class:`~yollava.personalize.ConceptPipeline` on the job's own engine (the shared model, an empty bank),
step by step: the signature (by its own thread, so a concept recognises within seconds), the training set
(the base model's answers batched, a few at a time under the model lock so chats interleave, with the job's
cancellation checked between chunks), training (progress, cancellation and the model lock from one trainer
callback, :class:`~yollava.serve.job_progress.JobProgress`), then saving. A resumed job reloads its saved
training set, so its epoch checkpoint applies and it continues from its last finished epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import shutil
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import YollavaError
from ..data.training_set import TrainingSet
from ..data.templates import conversation_questions
from ..personalize import ConceptPipeline
from .config import ServerConfig, recipe_from_dict
from .db import ACTIVE, Database, User
from .host import JobCancelled, ModelHost
from .job_progress import JobProgress, LiveJob, learn_rates, plan_stages, set_phase, timeline
from .spaces import UserSpace
from .thumbnails import concept_thumbnails, job_thumbnails

log = logging.getLogger(__name__)

#: conversation answers generated per turn under the model lock (a chat waits at most one chunk)
ANSWER_CHUNK = 4


class JobFailed(Exception):
    pass


class JobManager:
    def __init__(self, host: ModelHost, db: Database, config: ServerConfig):
        self.host, self.db, self.config = host, db, config
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._live: dict[str, LiveJob] = {}
        self._live_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        #: concept heads are fitted by their own thread, so a new concept recognises within seconds even
        #: while another job trains; the training worker reuses the head (or fits it, whichever comes first)
        self._instant_queue: queue.Queue[str | None] = queue.Queue()
        self._instant_thread: threading.Thread | None = None
        self._instant_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._concept_locks: dict[tuple[int, str], threading.Lock] = defaultdict(threading.Lock)
        #: the photo pool negatives come from (loaded once per server)
        self.pool = None
        self._pool_lock = threading.Lock()
        #: cleans messages shown to clients (the server sets its Redactor: no server paths in job errors)
        self.redact = lambda text: text
        #: the server's WhoService (its embedder fits each new concept's head); None: the default embedder
        self.who = None
        #: seconds each stage took per unit (or in all) in the jobs this process ran: the next job's estimate
        self.rates: dict[str, float] = {}

    # ---- life cycle ------------------------------------------------------------------------
    def space(self, user_id: int) -> UserSpace:
        return UserSpace(self.config.home, user_id)

    def concept_lock(self, user_id: int, name: str) -> threading.Lock:
        return self._concept_locks[(user_id, name)]

    def start(self) -> None:
        self._recover()
        self._thread = threading.Thread(target=self._work, name="yollava-training", daemon=True)
        self._thread.start()
        self._instant_thread = threading.Thread(target=self._instant_work, name="yollava-concept-heads", daemon=True)
        self._instant_thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Interrupt the running job at its next step; it stays unfinished in the DB and resumes on restart."""
        self._stopping.set()
        with self._live_lock:
            for live in self._live.values():
                live.cancelled.set()
        self._queue.put(None)
        self._instant_queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._instant_thread is not None:
            self._instant_thread.join(timeout)

    def _recover(self) -> None:
        """Jobs a previous run left queued or running: queue them again, or fail them with the reason."""
        for job in self.db.list_jobs(status=ACTIVE):
            space = self.space(job["user_id"])
            photos_dir = space.job_dir(job["id"]) / "photos"
            photos = sorted(photos_dir.iterdir()) if photos_dir.is_dir() else []
            trained_for = job["recipe"].get("model")
            if trained_for is not None and trained_for != self.host.fingerprint:
                self._finish_failed(job, f"interrupted by a server restart, and the server now serves another model "
                                         f"({self.host.fingerprint.get('model_id')!r}, not {trained_for.get('model_id')!r}); upload the photos again")
            elif not self.config.resume_jobs:
                self._finish_failed(job, "interrupted by a server restart (the server was started without resuming jobs); upload the photos again")
            elif len(photos) != job["n_photos"]:
                self._finish_failed(job, f"interrupted by a server restart, and its uploaded photos are gone ({len(photos)} of {job['n_photos']} left); upload them again")
            else:
                was = job["status"]
                live = self._enqueue(job["id"], job["user_id"], job["concept"], recipe_from_dict(job["recipe"])[1].asks_base_model)
                live.phase = f"queued (resuming after a server restart; was {was})"
                _, progress = live.snapshot()
                self.db.update_job(job["id"], status="queued", phase=live.phase, resumed=job["resumed"] + 1, progress=progress)
                log.info("resuming training job %s (<%s> of user %d)", job["id"], job["concept"], job["user_id"])

    def _finish_failed(self, job: dict, reason: str) -> None:
        self.db.update_job(job["id"], status="failed", phase="failed", error=reason, finished=time.time())
        if not self.config.keep_uploads:
            self.space(job["user_id"]).remove_job_dir(job["id"])

    def _enqueue(self, job_id: str, user_id: int, concept: str, conversations: bool, photos_seconds: float = 0.0) -> LiveJob:
        live = LiveJob(job_id, user_id, concept, plan_stages(conversations, photos_seconds))
        with self._live_lock:
            self._live[job_id] = live
        self._queue.put(job_id)
        self._instant_queue.put(job_id)
        return live

    # ---- submitting and watching -----------------------------------------------------------
    def active_job(self, user_id: int, concept: str) -> dict | None:
        jobs = self.db.list_jobs(user_id, ACTIVE, concept)
        return jobs[0] if jobs else None

    def submit(self, user: User, concept: str, photos: list[tuple[bytes, str]], category: str, overwrite: bool,
               thumbnails: list[bytes] = (), photos_seconds: float = 0.0) -> dict:
        """Store the photos (and their small ``thumbnails``, JPEG bytes) and queue the job. ``photos``: (bytes,
        suffix) already checked to be images, which took ``photos_seconds``."""
        train, data = self.config.train, self.config.data
        recipe = {"name": self.config.recipe_name, "train": _asdict(train), "data": {**_asdict(data), "category": category},
                  "model": self.host.fingerprint}
        job_id = self.db.add_job(user, concept, recipe, len(photos), overwrite)
        photos_dir = self.space(user.id).job_dir(job_id) / "photos"
        try:
            photos_dir.mkdir(parents=True, exist_ok=True)
            for i, (blob, suffix) in enumerate(photos):
                (photos_dir / f"photo-{i:02d}{suffix}").write_bytes(blob)
            job_thumbnails(self.space(user.id), job_id).store(thumbnails)
        except OSError as e:
            self.db.update_job(job_id, status="failed", phase="failed", error=f"could not store the photos ({e})", finished=time.time())
            self.space(user.id).remove_job_dir(job_id)
            raise
        self._enqueue(job_id, user.id, concept, data.asks_base_model, photos_seconds)
        return self.view(self.db.get_job(job_id))

    def view(self, job: dict) -> dict[str, Any]:
        """The public form of a job (live progress while it runs, every stage with its time spent and left)."""
        phase, progress = job["phase"], job["progress"]
        with self._live_lock:
            live = self._live.get(job["id"])
        if live is not None and job["status"] in ACTIVE:
            phase, progress = live.snapshot()
        now = time.time()
        remaining = None
        if progress.get("stages"):
            batch = (job["recipe"].get("train") or {}).get("batch_size") or 8
            ahead = self._ahead(job, now) if job["status"] == "queued" else 0.0
            stages, remaining = timeline(progress["stages"], now, self.rates, batch, ahead)
            progress = {**progress, "stages": stages}
        if job["status"] not in ACTIVE:
            remaining = 0.0
        end = job["finished"] if job["status"] not in ACTIVE and job["finished"] else now
        instant = self.instant_file(job)
        ready_at = None
        if job["status"] == "succeeded":
            ready_at = (job["result"] or {}).get("recognition_ready_seconds")
        elif job["status"] in ACTIVE:
            with contextlib.suppress(OSError):
                ready_at = round(instant.stat().st_mtime - job["created"], 3)
        return {
            "id": job["id"],
            "object": "training_job",
            "concept": job["concept"],
            "identifier": f"<{job['concept']}>",
            "status": job["status"],
            "phase": phase,
            "progress": progress,
            "error": self.redact(job["error"]),
            "result": job["result"],
            "photos": job["n_photos"],
            "recipe": {k: v for k, v in job["recipe"].items() if k != "model"},
            "resumed": job["resumed"],
            "created": job["created"],
            "started": job["started"],
            "finished": job["finished"],
            # the concept head is fitted first (about a second): the concept recognises long before it can talk
            "recognition_ready": job["status"] == "succeeded" or (job["status"] in ACTIVE and ready_at is not None),
            "conversation_ready": job["status"] == "succeeded",
            "recognition_ready_seconds": ready_at,
            # the whole job: since it was uploaded, and the estimate of what is left (None: not known yet)
            "stage": next((st["key"] for st in progress.get("stages", ()) if st["status"] == "running"), None),
            "elapsed_seconds": round(max(0.0, end - job["created"]), 1),
            "remaining_seconds": remaining,
        }

    def _ahead(self, job: dict, now: float) -> float | None:
        """The time left of the jobs the worker runs before ``job`` (None if one of them cannot be estimated)."""
        total = 0.0
        for other in self.db.list_jobs(status=ACTIVE):
            if other["id"] == job["id"] or other["created"] > job["created"]:
                continue
            with self._live_lock:
                live = self._live.get(other["id"])
            if live is None:
                return None
            _, progress = live.snapshot()
            batch = (other["recipe"].get("train") or {}).get("batch_size") or 8
            _, left = timeline(progress.get("stages", []), now, self.rates, batch, None)
            if left is None:
                return None
            total += left
        return total

    def instant_file(self, job: dict) -> Path:
        """The recognition-only concept a job writes once its concept head is fitted."""
        from .who_service import INSTANT_DIR

        return self.space(job["user_id"]).job_dir(job["id"]) / INSTANT_DIR / f"{job['concept']}.json"

    def cancel(self, job_id: str, wait: float = 0.0) -> None:
        with self._live_lock:
            live = self._live.get(job_id)
        if live is None:
            return
        live.cancelled.set()
        if wait:
            live.done.wait(wait)

    def wait(self, job_id: str, timeout: float) -> bool:
        """Wait until the worker is done with ``job_id`` (True), or ``timeout`` seconds (False)."""
        with self._live_lock:
            live = self._live.get(job_id)
        return live is None or live.done.wait(timeout)

    def cancel_concept(self, user_id: int, concept: str, wait: float = 60.0) -> bool:
        """Cancel every unfinished job of one concept and wait until they have stopped; True if all did."""
        with self._live_lock:
            lives = [j for j in self._live.values() if j.user_id == user_id and j.concept == concept]
        for live in lives:
            live.cancelled.set()
        deadline = time.monotonic() + wait
        return all(live.done.wait(max(0.0, deadline - time.monotonic())) for live in lives)

    # ---- the worker ------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None or self._stopping.is_set():
                return
            try:
                self._execute(job_id)
            except Exception:  # never let the worker die
                log.exception("training job %s crashed the worker", job_id)
            finally:
                with self._live_lock:
                    live = self._live.pop(job_id, None)
                if live is not None:
                    live.done.set()

    def _execute(self, job_id: str) -> None:
        with self._live_lock:
            live = self._live.get(job_id)
        job = self.db.get_job(job_id)
        if job is None or live is None or job["status"] not in ACTIVE:
            return
        space = self.space(job["user_id"])
        jdir = space.job_dir(job_id)
        name = job["concept"]
        if live.cancelled.is_set():
            self._end(job, live, "cancelled", "cancelled before it started")
            return
        train, data, recipe_name = recipe_from_dict(job["recipe"])
        photos = sorted((jdir / "photos").iterdir()) if (jdir / "photos").is_dir() else []
        self.db.update_job(job_id, status="running", phase="preparing", started=job["started"] or time.time(), error=None)
        live.finish("queue")
        self._set(live, "preparing", {})
        engine = self.host.job_engine(space.concepts)
        try:
            if not photos:
                raise JobFailed("the uploaded photos are gone")
            self._set(live, "fitting the concept head")
            signature = self.fit_instant(job_id)
            if signature is None:
                raise JobCancelled()
            self._set(live, "preparing")

            pipeline = ConceptPipeline(engine, recipe_name, train=train, data=data, pool_loader=lambda: self.pool_for(data),
                                       progress=False)
            training_set = self._training_set(pipeline, live, name, jdir, photos)
            live.finish("answers")  # a resumed job reloads its training set: nothing to synthesise
            self._expect(live, training_set.samples, train)
            self._set(live, "preparing the samples", {})  # the trainer's first event fills in the epochs and steps
            result = pipeline.train(name, training_set, checkpoint_dir=jdir / "checkpoints",
                                    callbacks=[JobProgress(live, self.db, self.host.lock)])
            pipeline.describe(result.concept, photos, training_set, signature)
            with self.concept_lock(job["user_id"], name):
                if live.cancelled.is_set() or not self.db.user_exists(job["user_id"]):  # removed: write nothing
                    raise JobCancelled()
                if space.has_concept(name) and not job["overwrite"]:
                    raise JobFailed(f"a concept <{name}> appeared while this job ran (imported?); it was left as it is")
                live.begin_once("save")
                self._set(live, "saving")
                engine.save_concept(name)
                self.host.concepts.forget(space.concepts, name)
                job_thumbnails(space, job_id).move_to(concept_thumbnails(space, name))
            summary = {
                "best_epoch": result.best_epoch,
                "epochs_run": len(result.history),
                "holdout": result.holdout,
                "seconds": round(result.seconds, 2),
                "samples_seen": result.samples_seen,
                "recognition_threshold": result.concept.threshold,
            }
            with contextlib.suppress(OSError):
                summary["recognition_ready_seconds"] = round(self.instant_file(job).stat().st_mtime - job["created"], 3)
            with live.lock:
                p = live.progress
                p.update(epoch=len(result.history), step=p.get("total_steps", p.get("step", 0)), fraction=1.0)
                if result.history:
                    p["loss"] = result.history[-1].get("loss")
            self._end(job, live, "succeeded", None, summary)
        except JobCancelled:
            if self._stopping.is_set():
                live.stop_running("interrupted")
                _, progress = live.snapshot()
                self.db.update_job(job_id, status="queued", phase="interrupted (server stopped); resumes when the server restarts", progress=progress)
                return
            self._end(job, live, "cancelled", "cancelled")
        except JobFailed as e:
            self._end(job, live, "failed", str(e))
        except YollavaError as e:
            self._end(job, live, "failed", str(e))
        except Exception as e:
            log.exception("training job %s failed", job_id)
            self._end(job, live, "failed", f"training failed because of an error on the server ({e.__class__.__name__}); "
                                           "try again, and tell the server's admin if it happens again")

    def _end(self, job: dict, live: LiveJob, status: str, error: str | None, result: dict | None = None) -> None:
        # Clean up before publishing the end: a client that sees "succeeded" must not find the job's files.
        if not self.config.keep_uploads:
            self.space(job["user_id"]).remove_job_dir(job["id"])
        if not self.db.user_exists(job["user_id"]):  # `yollava users rm` ran meanwhile: leave nothing of theirs
            shutil.rmtree(self.space(job["user_id"]).root, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.host.concepts.forget(self.instant_file(job).parent, job["concept"])  # its in-memory copy
        if status == "succeeded":
            live.finish("save")
            learn_rates(self.rates, live.snapshot()[1]["stages"])
        else:
            live.stop_running(status)
        _, progress = live.snapshot()
        phase = {"succeeded": "done"}.get(status, status)
        self._set(live, phase)
        self.db.update_job(job["id"], status=status, phase=phase, error=error, result=result, progress=progress, finished=time.time())

    # ---- steps of a job --------------------------------------------------------------------
    def _instant_work(self) -> None:
        self._warm_up()
        while True:
            job_id = self._instant_queue.get()
            if job_id is None or self._stopping.is_set():
                return
            try:
                self.fit_instant(job_id)
            except JobFailed as e:  # e.g. no pool: the training worker reports it
                log.info("no concept head for job %s yet: %s", job_id, e)
            except Exception:  # never let the thread die; the training worker tries again
                log.exception("fitting the concept head of job %s failed", job_id)

    def _warm_up(self) -> None:
        """Load the embedder (and the pool, if the recipe uses one) when the server starts, not on the first upload."""
        from ..who import embedder_for

        try:
            embedder = self.who.embedder if self.who is not None else embedder_for(self.host.engine)
            embedder.embed([Image.new("RGB", (32, 32))])
            if self.config.data.needs_pool or self.config.pool_dirs:
                self.pool_for(self.config.data)
        except Exception as e:  # the first job reports any real problem
            log.info("concept-head warm-up skipped: %s", e)

    def fit_instant(self, job_id: str):
        """Fit the concept's visual signature (prototype + concept head, about a second) and store a
        recognition-only concept in the job folder: from then on the concept recognises, while its tokens
        wait for or go through training. Done once per job (a resumed job reuses it); returns the
        signature, or None if the job is gone."""
        from ..concepts import load_concept, save_concept
        from ..who import VisualSignature, embedder_for, instant_concept

        job = self.db.get_job(job_id)
        if job is None or job["status"] not in ACTIVE:
            return None
        with self._live_lock:
            live = self._live.get(job_id)
        with self._instant_locks[job_id]:
            path = self.instant_file(job)
            if path.is_file():
                with contextlib.suppress(YollavaError, OSError, ValueError):
                    signature = VisualSignature.from_concept(load_concept(path.parent, job["concept"], self.host.fingerprint))
                    if signature is not None:
                        if live is not None:
                            live.recognition_ready = True
                            live.finish("head")
                        return signature
            photos_dir = self.space(job["user_id"]).job_dir(job_id) / "photos"
            photos = sorted(photos_dir.iterdir()) if photos_dir.is_dir() else []
            if not photos or (live is not None and live.cancelled.is_set()):
                return None
            train, data, recipe_name = recipe_from_dict(job["recipe"])
            if live is not None:
                live.begin("head")
            embedder = self.who.embedder if self.who is not None else embedder_for(self.host.engine)
            pool = self.pool_for(data) if (data.needs_pool or self.config.pool_dirs) else None
            signature = ConceptPipeline(self.host.engine, recipe_name, train=train, data=data, pool=pool, progress=False).signature(
                photos, embedder)
            concept = instant_concept(self.host.engine, job["concept"], signature, train.k, train.seed,
                                      meta={"recipe": {"name": recipe_name}})
            with self.concept_lock(job["user_id"], job["concept"]):  # a delete holds it while removing the job folder
                current = self.db.get_job(job_id)
                if current is None or current["status"] not in ACTIVE or (live is not None and live.cancelled.is_set()):
                    return None
                save_concept(concept, path.parent, self.host.fingerprint)
            if live is not None:
                live.recognition_ready = True
                live.finish("head")
                if live.phase.startswith("queued"):
                    self._set(live, "recognition ready; queued for training")
            return signature

    def pool_for(self, data):
        """The photo pool negatives come from (loaded once): the server's ``--pool`` folders, else the shared one."""
        from ..data.pool import ImagePool
        from ..paths import default_data_root
        from ..personalize import load_pool

        with self._pool_lock:
            if self.pool is None:
                if self.config.pool_dirs:
                    self.pool = ImagePool.build_or_update(list(self.config.pool_dirs), self.config.home / "pool", progress=False)
                else:
                    if not (default_data_root() / "pool").is_dir():
                        raise JobFailed("this server's recipe uses negatives but has no photo pool: start it with --pool DIR "
                                        "(or --n-easy 0 --no-hard-negatives)")
                    self.pool = load_pool(progress=False)
            return self.pool

    def _training_set(self, pipeline: ConceptPipeline, live: LiveJob, name: str, jdir: Path, photos: list[Path]) -> TrainingSet:
        """The job's training set: the saved one of a resumed job (the very same samples, so its checkpoint applies),
        else built by ``pipeline`` with the base model's answers a chunk at a time under the model lock."""
        path = jdir / "training_set.json"
        if path.is_file():
            try:
                return TrainingSet.load(path)
            except (OSError, ValueError, KeyError) as e:
                log.warning("rebuilding the training set of %s (%s)", jdir.name, e)
        data = pipeline.data_config
        n_conv = min(len(photos), data.conversation_photos or len(photos))
        n_answers = (n_conv * len(conversation_questions(data.category)) if data.conversations else 0) + min(len(photos), data.caption_photos)
        if n_answers:
            live.begin("answers", total=n_answers)
        self._set(live, "building training data", {"answers": 0, "answers_total": n_answers} if n_answers else {})

        def answer_in_chunks(pairs: list[tuple[str, Path]]) -> list[str]:
            answers: list[str] = []
            for i in range(0, len(pairs), ANSWER_CHUNK):
                live.check()
                with self.host.lock:
                    answers += pipeline.answer(pairs[i : i + ANSWER_CHUNK])
                with live.lock:
                    live.progress["answers"] = live.progress.get("answers", 0) + len(pairs[i : i + ANSWER_CHUNK])
            return answers

        pipeline.answerer = answer_in_chunks
        training_set = pipeline.training_set(name, photos, cache_dir=jdir / "answers")
        training_set.save(path)
        return training_set

    def _set(self, live: LiveJob, phase: str, progress: dict | None = None) -> None:
        set_phase(self.db, live, phase, progress)

    @staticmethod
    def _expect(live: LiveJob, samples: list, train) -> None:
        """The sizes of the stages to come, as the trainer will split and batch ``samples``."""
        from ..train.trainer import epoch_samples, split_holdout

        fitted, held = split_holdout(samples, train.holdout_fraction, train.seed)
        n = len(epoch_samples(fitted, train)[0])
        live.expect("encode", n)
        live.expect("train", train.epochs * -(-n // max(1, train.batch_size)))
        live.expect("calibrate", len(held))


def _asdict(obj) -> dict:
    return dataclasses.asdict(obj)

