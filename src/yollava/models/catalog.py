"""What ``yollava models`` and ``yollava doctor`` say about the supported families."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

#: what tests/test_families.py checks on a tiny random checkpoint of every HF family
VERIFIED = "tiny random config"
VERIFIED_DETAIL = ("tiny random config (tests/test_families.py; real weights cannot be downloaded here): logits = the transformers "
                   "forward, KV-cached decoding = a full forward, base bit-identical after training, a concept learned on "
                   "synthetic photos, save/load round trip, bf16 base with fp32 concept rows, loading by id from the HF cache")


@dataclass(frozen=True)
class Family:
    model_type: str
    name: str
    example: str
    photos: str
    verified: str = VERIFIED
    #: whether the family also generates images (a unified model; Yo'Chameleon concepts draw on it)
    draws: bool = False


FAMILIES = [
    Family("pocket", "pocket (embedded)", "pocket", "EfficientNet-Lite0 -> 4x4+1 tokens -> Qwen2.5-0.5B (+ LoRA); pocket-v1: 3x3+1", "real weights, CPU (README evaluations)"),
    Family("llava", "LLaVA-1.5", "llava-hf/llava-1.5-7b-hf", "CLIP 336 px, 576 tokens"),
    Family("llava_next", "LLaVA-NeXT (1.6)", "llava-hf/llava-v1.6-mistral-7b-hf", "any-resolution tiles, unpadded grid + row newlines"),
    Family("llava_onevision", "LLaVA-OneVision", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "SigLIP any-resolution tiles (anyres_max_9)"),
    Family("qwen2_vl", "Qwen2-VL", "Qwen/Qwen2-VL-2B-Instruct", "dynamic resolution, 3-D RoPE"),
    Family("qwen2_5_vl", "Qwen2.5-VL", "Qwen/Qwen2.5-VL-3B-Instruct", "dynamic resolution, window attention, 3-D RoPE"),
    Family("qwen3_vl", "Qwen3-VL", "Qwen/Qwen3-VL-2B-Instruct", "dynamic resolution, 3-D RoPE, deepstack features"),
    Family("idefics3", "Idefics3", "HuggingFaceM4/Idefics3-8B-Llama3", "tiles + global view, pixel shuffle, row/col tokens"),
    Family("smolvlm", "SmolVLM / SmolVLM2", "HuggingFaceTB/SmolVLM2-2.2B-Instruct", "tiles + global view, pixel shuffle, row/col tokens"),
    Family("gemma3", "Gemma 3", "google/gemma-3-4b-it", "SigLIP -> 256 tokens, bidirectional within the photo; tied, scaled embeddings"),
    Family("internvl", "InternVL (HF format)", "OpenGVLab/InternVL3-1B-hf", "448-px tiles + thumbnail, pixel shuffle"),
    Family("janus", "Janus / Janus-Pro (reads and draws)", "deepseek-community/Janus-Pro-1B",
           "SigLIP 384 px -> 576 tokens; draws 576 VQ codes (384 px) with its own head", draws=True),
    Family("emu3", "Emu3 (reads and draws)", "BAAI/Emu3-Gen-hf",
           "photos are VQ tokens of the vocabulary (rows ended by an end-of-line token); draws them with the output layer", draws=True),
]


def drawing_families() -> list[Family]:
    """The families that can also generate images (Yo'Chameleon concepts draw their subject on these)."""
    return [f for f in FAMILIES if f.draws]


def cached_models() -> tuple[Path, list[tuple[str, str, int]]]:
    """``(cache dir, [(model id, model_type, bytes)])`` for supported checkpoints in the Hugging Face cache."""
    from huggingface_hub import constants

    from . import hf_families

    cache = Path(constants.HF_HUB_CACHE)
    supported = set(hf_families())
    found = []
    for repo in sorted(cache.glob("models--*")):
        for config in sorted((repo / "snapshots").glob("*/config.json")):
            try:
                model_type = json.loads(config.read_text()).get("model_type", "?")
            except (OSError, ValueError):
                continue
            if model_type in supported:
                size = sum(f.stat().st_size for f in (repo / "blobs").glob("*") if f.is_file())
                found.append((repo.name.removeprefix("models--").replace("--", "/"), model_type, size))
                break
    return cache, found
