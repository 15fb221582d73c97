"""The image pool: generic photos (negatives) and a FAISS inner-product index of their embeddings.

``index_dir`` holds ``index.faiss`` (an ``IndexFlatIP`` over L2-normalised vectors, so scores are
cosine similarities) and ``files.json`` (path, size, mtime and sha256 of every indexed photo, in
index order). Re-indexing embeds only photos that are new or changed; photos that vanished are
dropped; unreadable files are skipped with a warning and listed in :attr:`ImagePool.report`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

from ..errors import InvalidImageError
from ..images import IMAGE_SUFFIXES, file_sha256, load_image
from ..paths import cache_home

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
FILES_FILE = "files.json"


def default_index_dir() -> Path:
    return cache_home() / "pool"


def embedder_name(embedder) -> str:
    """What the index remembers about the embedder (vectors of different embedders don't mix)."""
    return getattr(embedder, "fingerprint", None) or f"{type(embedder).__module__}.{type(embedder).__qualname__}"


def default_embedder():
    from ..vision.efficientnet import EfficientNetLite

    return EfficientNetLite()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file beside ``path``, then ``os.replace``: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, ensure_ascii=False).encode("utf-8"))


def scan_images(folder: str | Path) -> list[Path]:
    """Photos under ``folder``, recursively (hidden files and folders skipped), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"pool folder {folder} does not exist or is not a folder")
    return sorted(
        p.resolve()
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def embed_files(embedder, paths: Sequence[Path], batch_size: int = 32, progress: bool = False, desc: str = "embedding"):
    """Embed photos; returns ``(vectors (n_ok, d) float32, ok_paths, skipped [(path, reason)])``."""
    vecs, ok, skipped = [], [], []
    batches = range(0, len(paths), batch_size)
    for i in tqdm(batches, desc=desc, unit="batch", disable=not progress or not paths):
        images, batch_paths = [], []
        for p in paths[i : i + batch_size]:
            try:
                images.append(load_image(p))
                batch_paths.append(Path(p))
            except InvalidImageError as e:
                log.warning("skipping unreadable photo %s", e)
                skipped.append((Path(p), str(e)))
        if images:
            v = embedder.embed(images)
            vecs.append(np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=np.float32))
            ok.extend(batch_paths)
    if not vecs:
        return np.zeros((0, 0), dtype=np.float32), ok, skipped
    out = np.ascontiguousarray(np.concatenate(vecs))
    faiss.normalize_L2(out)
    return out, ok, skipped


@dataclass
class IndexReport:
    added: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    total: int = 0
    seconds: float = 0.0


class ImagePool:
    """An indexed set of photos. Build with :meth:`build_or_update`, reopen with :meth:`load`."""

    def __init__(self, entries: list[dict], vectors: np.ndarray, index_dir: Path, embedder_id: str, embedder=None):
        self.entries = entries
        self._vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index = faiss.IndexFlatIP(self._vectors.shape[1]) if len(self._vectors) else None
        if self.index is not None:
            self.index.add(self._vectors)
        self.index_dir = Path(index_dir)
        self.embedder_id = embedder_id
        self._embedder = embedder
        self.report = IndexReport(total=len(entries))

    # ---- persistence -------------------------------------------------------------------------
    @classmethod
    def load(cls, index_dir: str | Path | None = None, embedder=None) -> ImagePool:
        index_dir = Path(index_dir) if index_dir is not None else default_index_dir()
        files, index = index_dir / FILES_FILE, index_dir / INDEX_FILE
        if not files.is_file() or not index.is_file():
            raise FileNotFoundError(f"no image pool index in {index_dir}; run `yollava pool index DIR...` first")
        meta = json.loads(files.read_text(encoding="utf-8"))
        idx = faiss.deserialize_index(np.fromfile(index, dtype=np.uint8))
        if idx.ntotal != len(meta["files"]):
            raise ValueError(f"{index_dir}: index has {idx.ntotal} vectors for {len(meta['files'])} files; re-index it")
        vectors = idx.reconstruct_n(0, idx.ntotal) if idx.ntotal else np.zeros((0, meta.get("dim", 0)), np.float32)
        return cls(meta["files"], vectors, index_dir, meta["embedder"], embedder)

    def save(self) -> None:
        self.index_dir.mkdir(parents=True, exist_ok=True)
        index = self.index if self.index is not None else faiss.IndexFlatIP(max(self.dim, 1))
        atomic_write_bytes(self.index_dir / INDEX_FILE, faiss.serialize_index(index).tobytes())
        meta = {"embedder": self.embedder_id, "dim": self.dim, "files": self.entries}
        atomic_write_json(self.index_dir / FILES_FILE, meta)

    @classmethod
    def build_or_update(
        cls,
        dirs: Iterable[str | Path],
        index_dir: str | Path | None = None,
        embedder=None,
        *,
        batch_size: int = 32,
        progress: bool = True,
    ) -> ImagePool:
        """Index every photo under ``dirs`` (recursively), embedding only new or changed files.

        Photos indexed earlier from other folders stay while they exist. ``pool.report`` says what
        was added, removed and skipped (unreadable files are never fatal)."""
        t0 = time.perf_counter()
        index_dir = Path(index_dir) if index_dir is not None else default_index_dir()
        embedder = embedder if embedder is not None else default_embedder()
        name = embedder_name(embedder)
        try:
            old = cls.load(index_dir, embedder)
            if old.embedder_id != name:
                log.warning("pool index in %s was made with %s, not %s: rebuilding", index_dir, old.embedder_id, name)
                old = None
        except FileNotFoundError:
            old = None
        except Exception as e:  # a damaged index is rebuilt, not fatal
            log.warning("pool index in %s is unreadable (%s): rebuilding", index_dir, e)
            old = None

        wanted = sorted({p for d in dirs for p in scan_images(d)})
        keep_entries, keep_rows, removed = [], [], []
        known = set()
        retimed = 0  # same bytes, new mtime (a copy or sync touched them): kept, not re-embedded
        if old is not None:
            for row, e in enumerate(old.entries):
                p = Path(e["path"])
                st = p.stat() if p.is_file() else None
                unchanged = st is not None and st.st_size == e["size"] and st.st_mtime == e["mtime"]
                if not unchanged and st is not None and st.st_size == e["size"] and e.get("sha256") == file_sha256(p):
                    e, unchanged = {**e, "mtime": st.st_mtime}, True
                    retimed += 1
                if unchanged:
                    keep_entries.append(e)
                    keep_rows.append(row)
                    known.add(e["path"])
                else:
                    removed.append(p)
        new_paths = [p for p in wanted if str(p) not in known]
        vecs, ok, skipped = embed_files(embedder, new_paths, batch_size, progress, desc="indexing pool")
        new_entries = []
        for p in ok:
            st = p.stat()
            new_entries.append({"path": str(p), "size": st.st_size, "mtime": st.st_mtime, "sha256": file_sha256(p)})
        parts = []
        if old is not None and keep_rows:
            parts.append(old._vectors[keep_rows])
        if len(ok):
            parts.append(vecs)
        dim = parts[0].shape[1] if parts else 0
        vectors = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
        pool = cls(keep_entries + new_entries, vectors, index_dir, name, embedder)
        if new_entries or removed or retimed or old is None:
            pool.save()
        pool.report = IndexReport(ok, removed, skipped, len(pool), time.perf_counter() - t0)
        log.info("pool %s: %d photos (%d added, %d removed, %d skipped)", index_dir, len(pool), len(ok), len(removed), len(skipped))
        return pool

    # ---- access ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1]) if self._vectors.ndim == 2 else 0

    @property
    def paths(self) -> list[Path]:
        return [Path(e["path"]) for e in self.entries]

    def without(self, paths: Iterable[str | Path]) -> ImagePool:
        """The same pool (same index folder and embedder) without the photos at ``paths``, in memory only."""
        drop = {str(p) for p in paths}
        keep = [i for i, e in enumerate(self.entries) if e["path"] not in drop]
        vectors = self._vectors[keep] if keep else np.zeros((0, self.dim), np.float32)
        return ImagePool([self.entries[i] for i in keep], vectors, self.index_dir, self.embedder_id, self._embedder)

    def vectors(self) -> np.ndarray:
        """All pool embeddings, (n, d), in index order (rows match :attr:`entries`)."""
        return self._vectors

    @property
    def embedder(self):
        """The embedder the index was made with (the default one is created on first use)."""
        if self._embedder is None:
            self._embedder = default_embedder()
        if embedder_name(self._embedder) != self.embedder_id:
            raise ValueError(f"this pool was indexed with {self.embedder_id}, not {embedder_name(self._embedder)}")
        return self._embedder

    def embed(self, paths: Sequence[str | Path], batch_size: int = 32):
        """Embed photos with the pool's embedder: ``(vectors, ok_paths, skipped)``."""
        return embed_files(self.embedder, [Path(p) for p in paths], batch_size)

    def _excluded_mask(self, exclude: Iterable[str | Path]) -> np.ndarray:
        ex = set()
        for x in exclude:
            ex.update((str(x), str(Path(x).resolve())))
        return np.array([e["path"] in ex or e["sha256"] in ex for e in self.entries], dtype=bool)

    def search(self, vectors, k: int, exclude: Iterable[str | Path] = ()) -> list[list[tuple[Path, float]]]:
        """The ``k`` most similar pool photos (cosine) for each query vector, best first.
        ``exclude`` holds paths or sha256 hex digests of photos never to return."""
        q = np.ascontiguousarray(np.atleast_2d(np.asarray(vectors, dtype=np.float32)))
        if self.index is None or k <= 0:
            return [[] for _ in range(len(q))]
        faiss.normalize_L2(q)
        mask = self._excluded_mask(exclude)
        scores, ids = self.index.search(q, min(len(self), k + int(mask.sum())))
        out = []
        for srow, irow in zip(scores, ids):
            hits = [(Path(self.entries[i]["path"]), float(s)) for s, i in zip(srow, irow) if i >= 0 and not mask[i]]
            out.append(hits[:k])
        return out

    def sample_random(self, n: int, seed: int = 0, exclude: Iterable[str | Path] = ()) -> list[Path]:
        """``n`` distinct pool photos drawn uniformly (fewer if the pool is smaller), deterministic for a seed."""
        mask = self._excluded_mask(exclude)
        eligible = [i for i in range(len(self)) if not mask[i]]
        chosen = random.Random(seed).sample(eligible, min(n, len(eligible)))
        return [Path(self.entries[i]["path"]) for i in chosen]
