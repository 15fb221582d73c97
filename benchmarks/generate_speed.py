"""Generation speed on `pocket`: transformers' fp32 `generate`, our engine in fp32, our engine with int8 weights.

Same LLM, same prompt, greedy, one client; printed as a table (tokens/s, time to first token with a photo)
with the torch threads and the load average, and how far the int8 runtime's logits are from fp32's. Then
conversation synthesis (what `personalize` asks the base model: 10 questions about each of 2 photos of <bo>,
32 tokens, fp32) one answer at a time vs batched (`chat_many`), and whether the answers are the same.

    python benchmarks/generate_speed.py --threads 2 --tokens 64 --out benchmarks/results/generate_speed.md
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

PROMPTS = ["Write a long story about a dog who loves the sea.", "Explain in detail how a bicycle works.",
           "Describe a busy market in the morning.", "What is 2+2?", "List ten colours and say what each reminds you of."]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--no-synthesis", action="store_true", help="skip the conversation-synthesis timing")
    args = ap.parse_args()

    import torch
    from PIL import Image

    torch.set_num_threads(args.threads)
    from yollava import YoLLaVA
    from yollava.models import Message
    from yollava.paths import default_data_root

    engine = YoLLaVA.from_pretrained("pocket")
    adapter, tok = engine.adapter, engine.adapter.tokenizer
    llm = adapter.model.llm
    photo_path = default_data_root() / "yollava" / "bo" / "test" / "0.jpg"
    photo = Image.open(photo_path).convert("RGB") if photo_path.exists() else Image.new("RGB", (320, 240), (180, 120, 60))

    def engine_tokens_per_s() -> tuple[float, int]:
        best = 0.0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            text = "".join(engine.stream_chat(PROMPTS[0], max_new_tokens=args.tokens))
            dt = time.perf_counter() - t0
            n = len(tok(text, add_special_tokens=False)["input_ids"])
            best = max(best, n / dt)
        return best, n

    def first_token_with_photo() -> float:
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            next(iter(engine.stream_chat("What is in this photo?", image=photo.copy(), max_new_tokens=4)))
            best = min(best, time.perf_counter() - t0)
        return best

    rows = []
    # transformers' own generate on the same fp32 LLM, same rendered prompt
    ids = torch.tensor([tok(adapter.render([Message("user", PROMPTS[0])]), add_special_tokens=False)["input_ids"]])
    best = 0.0
    with torch.no_grad():
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = llm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.tokens,
                               min_new_tokens=args.tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            best = max(best, (out.shape[1] - ids.shape[1]) / (time.perf_counter() - t0))
    rows.append(("transformers `generate`, fp32", best, None))
    adapter.set_generation("fp32")
    rows.append(("yollava engine, fp32", engine_tokens_per_s()[0], first_token_with_photo()))

    # how far int8 is from fp32: first-token logits and greedy answers on the same prompts
    def first_logits(prompt):
        enc = engine.encode(prompt)
        decoder, head = adapter.generation_modules()
        with torch.no_grad():
            hidden, _ = decoder(engine.bank.embed(torch.tensor([enc.input_ids]), adapter.embed_tokens), use_cache=False)
            return engine.bank.logits(hidden[:, -1], head).float()[0]

    ref = [first_logits(p) for p in PROMPTS]
    ref_answers = [engine.chat(p, max_new_tokens=24) for p in PROMPTS]
    adapter.set_generation("int8")
    rows.append(("yollava engine, int8 weights (weight-only, bf16 activations)", engine_tokens_per_s()[0], first_token_with_photo()))
    q = [first_logits(p) for p in PROMPTS]
    q_answers = [engine.chat(p, max_new_tokens=24) for p in PROMPTS]
    max_diff = max((a - b).abs().max().item() for a, b in zip(ref, q))
    top1 = sum(int(a.argmax() == b.argmax()) for a, b in zip(ref, q))
    same = sum(a == b for a, b in zip(ref_answers, q_answers))
    adapter.set_generation("fp32")

    synthesis = None
    if not args.no_synthesis:
        from yollava.data.templates import conversation_questions

        photos = sorted((default_data_root() / "yollava" / "bo" / "train").glob("*.jpg"))[:2] or [photo, photo]
        pairs = [(q, p) for p in photos for q in conversation_questions("object")]
        t0 = time.perf_counter()
        one_by_one = [engine.chat(q, image=p, max_new_tokens=32, exact=True) for q, p in pairs]
        t1 = time.perf_counter()
        batched = engine.chat_many(pairs, max_new_tokens=32, exact=True)
        t2 = time.perf_counter()
        synthesis = (len(pairs), t1 - t0, t2 - t1, sum(a == b for a, b in zip(one_by_one, batched)))

    load = os.getloadavg()
    base = rows[0][1]
    lines = [f"# Generation speed on `pocket` ({args.threads} torch thread(s), load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})", "",
             "```bash", f"python benchmarks/generate_speed.py --threads {args.threads} --tokens {args.tokens}" + (f" --out {args.out}" if args.out else ""), "```", "",
             f"Greedy, one client, {args.tokens} new tokens of a text-only prompt (best of {args.repeats}); time to first token: "
             "\"What is in this photo?\" with a photo not seen before (vision encoder + prompt + first token).", "",
             "| runtime | tokens/s | × transformers fp32 | time to first token with a photo |", "|---|---:|---:|---:|"]
    for name, tps, ttft in rows:
        lines.append(f"| {name} | {tps:.1f} | {tps / base:.2f} | {'–' if ttft is None else f'{ttft:.2f} s'} |")
    lines += ["", f"int8 vs fp32 on {len(PROMPTS)} prompts: largest first-token logit difference {max_diff:.3f}; "
              f"same first token {top1}/{len(PROMPTS)}; same 24-token greedy answer {same}/{len(PROMPTS)}. "
              "Recognition scores, training and concept files always use the fp32 model; within one runtime a "
              "prompt that names no concept gives the same answer with and without concepts loaded (tests/test_pocket.py)."]
    if synthesis:
        n, seq, bat, same = synthesis
        lines += ["", f"Conversation synthesis (fp32, the model itself; {n} answers of up to 32 tokens about 2 photos of <bo>, as "
                  f"`personalize` asks them): one at a time {seq:.1f} s, batched (`chat_many`, left-padded) {bat:.1f} s = "
                  f"{seq / bat:.1f}x; the same answer {same}/{n}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
