"""Yo'Chameleon on a Janus-Pro-1B / 7B-shaped model on one GPU (random weights: speed and memory do not depend on them,
and no download is needed): seconds per drawn image and per training step, and peak GPU memory.

    python benchmarks/generate_image_gpu.py --size 1b --out benchmarks/results/generate_image_gpu_1b.md
    python benchmarks/generate_image_gpu.py --size 7b --out benchmarks/results/generate_image_gpu_7b.md
    python benchmarks/generate_image_gpu.py --size tiny --device cpu --out /tmp/draw.md     # a smoke run (the test)

1b / 7b need CUDA (the script refuses to run them on a CPU). Per batch size n: one drawing request of n images (576 codes
each, classifier-free guidance 5, so 2n sequences), warm-up first, then ``--repeats`` timed requests (seconds per image
= request time / n); and training steps of the concept (a batch of ``--batch`` reconstruction samples + ``--batch``
understanding samples, one AdamW step on the concept's rows). Nothing has been measured with it yet on a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image

_VISION_BIG = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=384, patch_size=16,
                   num_image_tokens=576, mlp_ratio=4.0)
_VQ_BIG = dict(embed_dim=8, num_embeddings=16384, latent_channels=256, base_channels=128, channel_multiplier=[1, 1, 2, 2, 4],
               num_res_blocks=2, num_hidden_layers=2)
SHAPES = {
    # Janus-Pro-1B: SigLIP-L 384 px (576 photo tokens) + a DeepSeek-LLM-1.5B decoder; VQ tokenizer, 16,384 codes, 24x24 per image
    "1b": dict(hidden=2048, intermediate=5632, layers=24, heads=16, vocab=102400, vision=_VISION_BIG, vq=_VQ_BIG),
    # Janus-Pro-7B: the same towers + a DeepSeek-LLM-7B decoder
    "7b": dict(hidden=4096, intermediate=11008, layers=30, heads=32, vocab=102400, vision=_VISION_BIG, vq=_VQ_BIG),
    "tiny": dict(hidden=64, intermediate=128, layers=2, heads=4, vocab=640,
                 vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
                             num_image_tokens=16, mlp_ratio=2.0),
                 vq=dict(embed_dim=8, num_embeddings=64, latent_channels=32, base_channels=32, channel_multiplier=[1, 1, 1, 1],
                         num_res_blocks=1, num_hidden_layers=2)),
}


def build(size: str, device: torch.device, dtype: torch.dtype):
    from transformers import JanusConfig, JanusForConditionalGeneration, JanusImageProcessorPil, JanusProcessor

    from yollava.models.hf_janus import JANUS_TEMPLATE, JanusAdapter
    from yollava.models.tiny import byte_level_tokenizer

    s = SHAPES[size]
    special = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<image_placeholder>", "<begin_of_image>", "<end_of_image>"]
    tok = byte_level_tokenizer(special, unk_token=None, bos_token=special[0], eos_token=special[1], pad_token=special[2],
                               extra_special_tokens={"image_token": special[3], "boi_token": special[4], "eoi_token": special[5]})
    text = dict(model_type="llama", vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["intermediate"],
                num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["heads"], max_position_embeddings=4096,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    vision = dict(s["vision"], projection_dim=s["hidden"], depth=2)
    vq = dict(s["vq"], projection_dim=s["hidden"], image_token_embed_dim=s["hidden"])
    cfg = JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=tok.convert_tokens_to_ids(special[3]),
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(device):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = JanusForConditionalGeneration(cfg).eval()
        finally:
            torch.set_default_dtype(previous)
    px = s["vision"]["image_size"]
    ip = JanusImageProcessorPil(size={"height": px, "width": px}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = JanusProcessor(image_processor=ip, tokenizer=tok, chat_template=JANUS_TEMPLATE, num_image_tokens=s["vision"]["num_image_tokens"])
    return JanusAdapter(model, processor, f"random-janus-pro-{size}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SHAPES), default="1b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--n", default="1,4", help="images per request, comma-separated")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4, help="reconstruction (and understanding) samples per training step")
    ap.add_argument("--steps", type=int, default=3, help="timed training steps")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if args.size != "tiny" and (device.type != "cuda" or not torch.cuda.is_available()):
        print(f"--size {args.size} needs a CUDA GPU (this machine: {'no CUDA' if not torch.cuda.is_available() else args.device}); "
              "use --size tiny --device cpu for a smoke run", file=sys.stderr)
        raise SystemExit(2)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

    from yollava import YoLLaVA
    from yollava.engine.drawing import generate_image, image_loss
    from yollava.train.yochameleon import YoChameleonConfig, new_unified_concept, reconstruction_item, understanding_answer

    adapter = build(args.size, device, dtype)
    engine = YoLLaVA(adapter, concepts_dir=Path("/tmp/yollava-bench-concepts"))
    config = YoChameleonConfig()  # 16 generation + 16 understanding tokens, as the yochameleon recipe
    concept = new_unified_concept(engine, "bo", config)
    px = SHAPES[args.size]["vision"]["image_size"]
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows: list[dict] = []

    for n in [int(x) for x in args.n.split(",")]:
        generate_image(engine, "A photo of <bo> on a beach.", n=n, seed=0)  # warm-up
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        for r in range(args.repeats):
            generate_image(engine, "A photo of <bo> on a beach.", n=n, seed=r)
        _sync(device)
        seconds = (time.perf_counter() - t0) / args.repeats
        rows.append({"what": "draw", "size": args.size, "device": gpu, "dtype": str(dtype).replace("torch.", ""), "n": n,
                     "codes_per_image": adapter.num_image_tokens, "seconds_per_request": round(seconds, 3),
                     "seconds_per_image": round(seconds / n, 3), "peak_gib": _peak_gib(device)})

    photo = Image.new("RGB", (px, px), (200, 40, 30))
    codes = adapter.image_codes([photo])[0]
    draws = [reconstruction_item(engine, concept, codes) for _ in range(args.batch)]
    understand = [engine.encode("What colour is <bo>?", image=photo, answer=understanding_answer(concept, "<bo> is red."))
                  for _ in range(args.batch)]
    concept.requires_grad_(True)
    opt = torch.optim.AdamW([concept.input_rows, concept.output_row, concept.latent_output_rows], lr=1e-3)

    def step():
        img, prompt = image_loss(engine.model, engine.bank, draws)
        loss = img + prompt + engine.loss(understand)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    seconds = (time.perf_counter() - t0) / args.steps
    rows.append({"what": "train step", "size": args.size, "device": gpu, "dtype": str(dtype).replace("torch.", ""), "n": args.batch,
                 "codes_per_image": adapter.num_image_tokens, "seconds_per_request": round(seconds, 3),
                 "seconds_per_image": round(seconds / args.batch, 3), "peak_gib": _peak_gib(device)})

    header = "| what | size | device | dtype | images (or samples) | codes per image | s per request / step | s per image | peak GiB |\n|---|---|---|---|---:|---:|---:|---:|---:|"
    lines = [header] + [f"| {r['what']} | {r['size']} | {r['device']} | {r['dtype']} | {r['n']} | {r['codes_per_image']} | "
                        f"{r['seconds_per_request']:.3f} | {r['seconds_per_image']:.3f} | {r['peak_gib'] if r['peak_gib'] is not None else '-'} |"
                        for r in rows]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"# Yo'Chameleon on a Janus-Pro-{args.size}-shaped model (random weights)\n\n"
                            f"`python benchmarks/generate_image_gpu.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n{table}\n")
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
