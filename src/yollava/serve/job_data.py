"""A training job's data: the photo pool (loaded once per server) and the job's training set.

The training set is built as ``personalize``'s ``build_data`` builds it, with a per-job answer cache;
the base model's conversation answers are generated one token at a time under the model lock (chats
interleave) with the job's cancellation checked between tokens. A resumed job reloads the very same
samples, so its epoch checkpoint applies.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from ..data.builder import build_training_set
from ..data.templates import conversation_questions
from ..data.training_set import TrainingSet
from ..recipes import DataConfig
from ..train import TrainConfig
from .config import ServerConfig
from .host import ModelHost, locked_steps
from .job_progress import LiveJob

log = logging.getLogger(__name__)


class JobFailed(Exception):
    pass


class JobData:
    def __init__(self, host: ModelHost, config: ServerConfig):
        self.host, self.config = host, config
        self.pool = None
        self._lock = threading.Lock()

    def pool_for(self, data: DataConfig):
        """The photo pool negatives come from (loaded once): the server's ``--pool`` folders, else the shared one."""
        from ..data.pool import ImagePool
        from ..paths import default_data_root
        from ..personalize import load_pool

        with self._lock:
            if self.pool is None:
                if self.config.pool_dirs:
                    self.pool = ImagePool.build_or_update(list(self.config.pool_dirs), self.config.home / "pool", progress=False)
                else:
                    if not (default_data_root() / "pool").is_dir():
                        raise JobFailed(
                            "this server's recipe uses negatives but has no photo pool: start it with --pool DIR "
                            "(or --n-easy 0 --no-hard-negatives)"
                        )
                    self.pool = load_pool(progress=False)
            return self.pool

    def training_set(self, engine, live: LiveJob, name: str, jdir: Path, photos: list[Path], train: TrainConfig, data: DataConfig,
                     set_phase: Callable[..., None]) -> TrainingSet:
        """The job's training set: the saved one of a resumed job, else built (conversation answers by ``engine``)."""
        path = jdir / "training_set.json"
        if path.is_file():
            try:
                return TrainingSet.load(path)  # a resumed job: the very same samples, so the checkpoint applies
            except (OSError, ValueError, KeyError) as e:
                log.warning("rebuilding the training set of %s (%s)", jdir.name, e)
        needs_pool = data.needs_pool
        pool = self.pool_for(data) if needs_pool else None
        n_conv = min(len(photos), getattr(data, "conversation_photos", None) or len(photos))
        n_answers = n_conv * len(conversation_questions(data.category)) if data.conversations else 0
        set_phase("building training data", {"answers": 0, "answers_total": n_answers} if n_answers else {})

        def answer(question: str, image) -> str:
            """The base model's answer, one token at a time under the model lock (chats interleave)."""
            live.check()
            pieces = locked_steps(engine.stream_chat(question, image=image, max_new_tokens=data.conversation_tokens, reference=True),
                                  self.host.lock, live.check)
            text = "".join(pieces).strip()
            with live.lock:
                live.progress["answers"] = live.progress.get("answers", 0) + 1
            return text

        # as personalize's build_data does, plus a per-job answer cache
        training_set = build_training_set(
            name, photos, pool, answer_fn=answer if data.conversations else None, seed=train.seed,
            cache_dir=jdir / "answers", model_fingerprint=self.host.fingerprint_json, **data.builder_options(),
        )
        training_set.save(path)
        return training_set

