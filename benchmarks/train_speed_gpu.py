"""Concept-training speed of a LLaVA-1.5-7B-shaped model on one GPU (random weights: speed does not
depend on them, and no download is needed).

    python benchmarks/train_speed_gpu.py --device cuda --size 7b --out benchmarks/results/train_speed_gpu.md
    python benchmarks/train_speed_gpu.py --device cpu --size tiny --out /tmp/speed.md      # a smoke run (the test)

Prints and writes one table row per setting (base precision x gradient checkpointing): samples/s in the
steady state (batches of 8 recognition + conversation samples, photo features cached, prefix cache on
(off with gradient checkpointing, which needs train mode and so no KV cache)),
peak GPU memory, and the FLOP-floor ratio: measured time / (4 x decoder params x tokens / peak FLOP/s),
4 = forward + backward through activations only (no weight gradients: the base is frozen).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

SHAPES = {
    # LLaVA-1.5-7B: CLIP ViT-L/14-336 (576 photo tokens) + Vicuna-7B (Llama-2 shape)
    "7b": dict(hidden=4096, intermediate=11008, layers=32, heads=32, vocab=32064,
               vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336, patch_size=14)),
    "tiny": dict(hidden=64, intermediate=128, layers=2, heads=4, vocab=640,
                 vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)),
}
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}


def build(size: str, device: torch.device, dtype: torch.dtype):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from yollava.models.hf_llava import LlavaAdapter
    from yollava.models.tiny import LLAVA_TEMPLATE, byte_level_tokenizer

    s = SHAPES[size]
    tok = byte_level_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    text = LlamaConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["intermediate"], num_hidden_layers=s["layers"],
                       num_attention_heads=s["heads"], num_key_value_heads=s["heads"], max_position_embeddings=4096,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(**s["vision"]), text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                      vision_feature_layer=-2)
    torch.manual_seed(0)
    with torch.device(device):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = LlavaForConditionalGeneration(cfg).eval()
        finally:
            torch.set_default_dtype(previous)
    px = s["vision"]["image_size"]
    ip = CLIPImageProcessor(size={"shortest_edge": px}, crop_size={"height": px, "width": px})
    processor = LlavaProcessor(image_processor=ip, tokenizer=tok, chat_template=LLAVA_TEMPLATE, patch_size=s["vision"]["patch_size"],
                               vision_feature_select_strategy="default")
    return LlavaAdapter(model, processor, f"llava-{size}-random")


def peak_flops(device: torch.device, dtype: torch.dtype, override: float | None) -> tuple[float, str]:
    if override:
        return override * 1e12, "given"
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        name = torch.cuda.get_device_name(device)
        for key, tf in PEAK_TFLOPS.items():
            if key in name:
                return tf * 1e12, f"{name} datasheet, dense bf16/fp16"
    n = 1024  # measured: a large matmul is the best this device does
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(5):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 5 * 2 * n**3 / (time.perf_counter() - t), "measured matmul"


def samples(engine, n: int, size: int):
    from yollava.train import Sample

    rng = random.Random(0)
    photos = [Image.new("RGB", (size, size), tuple(rng.randint(0, 255) for _ in range(3))) for _ in range(n)]
    out = [Sample("Is <bo> in this photo?", "Yes" if i % 2 else "No", p, "positive" if i % 2 else "negative") for i, p in enumerate(photos)]
    out += [Sample("What does <bo> look like?", "<bo> is a small brown dog with a fluffy tail and pointed ears.", None, "conversation")] * (n // 2)
    return out


def run(size: str, device: torch.device, dtype: torch.dtype, checkpointing: bool, n: int, steps: int, peak: float) -> dict:
    from yollava import YoLLaVA

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    adapter = build(size, device, dtype)
    if checkpointing:
        adapter.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        adapter.model.train()  # checkpointing is only active in train mode; dropout is 0 in these configs
    engine = YoLLaVA(adapter, tempfile.mkdtemp())
    concept = engine.new_concept("bo", k=16)
    concept.requires_grad_(True)
    opt = torch.optim.AdamW([concept.input_rows, concept.output_row], lr=1e-3, weight_decay=0.0)
    data = samples(engine, n, SHAPES[size]["vision"]["image_size"])
    t0 = time.perf_counter()
    encoded = [engine.encode(s.question, image=s.image, answer=s.answer) for s in data]
    encode_s = time.perf_counter() - t0
    batches = [encoded[i : i + 8] for i in range(0, len(encoded), 8)]
    cache: dict | None = None if checkpointing else {}  # checkpointing in train mode turns the KV cache off

    def step(batch):
        opt.zero_grad(set_to_none=True)
        groups = {}
        for e in batch:  # the trainer buckets by prefix length so the prefix cache applies
            groups.setdefault(e.prefix_len, []).append(e)
        for group in groups.values():
            (engine.loss(group, cache) * len(group) / len(batch)).backward()
        opt.step()

    for b in batches[:2]:  # warm-up (kernels, caches)
        step(b)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    done = 0
    for i in range(steps):
        b = batches[i % len(batches)]
        step(b)
        done += len(b)
    sync()
    seconds = time.perf_counter() - t
    n_params = sum(p.numel() for p in adapter.language_model.parameters())
    tokens = sum(len(e.input_ids) for e in encoded) / len(encoded)
    floor = 4 * n_params * tokens / peak  # seconds per sample at the FLOP floor
    row = {
        "size": size, "device": str(device), "dtype": str(dtype).removeprefix("torch."), "checkpointing": checkpointing,
        "samples_per_s": done / seconds, "encode_s_per_photo": encode_s / n, "tokens_per_sample": tokens,
        "decoder_params_b": n_params / 1e9, "peak_gpu_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "flop_floor_ratio": (seconds / done) / floor,
    }
    del engine, adapter, opt, cache
    return row


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--dtypes", default=None, help="comma list (default: bf16,fp16 on CUDA, fp32 on CPU)")
    ap.add_argument("--checkpointing", default="off", help="gradient checkpointing settings to time, e.g. off,on ('on' runs without the prefix cache)")
    ap.add_argument("--photos", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the table (markdown) and rows (json next to it)")
    args = ap.parse_args(argv)

    from yollava.runtime import quiet, resolve

    quiet()
    device, _ = resolve(args.device, None)
    dtypes = args.dtypes.split(",") if args.dtypes else (["bf16", "fp16"] if device.type == "cuda" else ["fp32"])
    rows = []
    for name in dtypes:
        _, dtype = resolve(str(device), name)
        peak, how = peak_flops(device, dtype, args.peak_tflops)
        for ckpt in args.checkpointing.split(","):
            row = run(args.size, device, dtype, ckpt == "on", args.photos, args.steps, peak)
            row["peak_tflops"], row["peak_source"] = peak / 1e12, how
            rows.append(row)
            print(json.dumps(row), flush=True)
    head = "| size | device | dtype | grad. checkpointing | samples/s | peak GPU GiB | tokens/sample | FLOP-floor ratio | peak TFLOP/s (source) |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        gib = "-" if r["peak_gpu_gib"] is None else f"{r['peak_gpu_gib']:.1f}"
        lines.append(f"| {r['size']} | {r['device']} | {r['dtype']} | {'on' if r['checkpointing'] else 'off'} | {r['samples_per_s']:.2f} | {gib} | "
                     f"{r['tokens_per_sample']:.0f} | {r['flop_floor_ratio']:.1f} | {r['peak_tflops']:.1f} ({r['peak_source']}) |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        args.out.write_text(f"# concept training speed, {args.size} LLaVA-1.5 shape, random weights, {gpu}\n\n"
                            f"`python benchmarks/train_speed_gpu.py {' '.join(sys.argv[1:] if argv is None else argv)}`\n\n{table}\n")
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
