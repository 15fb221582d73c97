"""Does ``torch.compile`` of the frozen decoder speed up the fast training step on this CPU? (measured, not shipped)

    python benchmarks/train_compile.py 2      # torch threads; needs benchmarks/results/eval_bo_accurate's <bo> training set

48 samples of <bo>'s `fast` training set in batches of 8 with the prefix cache, eager twice, then with the LLM's
forward compiled (inductor, dynamic shapes): the first compiled pass includes the compilation.
"""
import sys, time, random, glob, torch
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
from yollava import YoLLaVA
from yollava.data.training_set import TrainingSet
from yollava.train import ConceptTrainer, TrainConfig
from yollava.train.trainer import split_holdout, balanced_samples
e = YoLLaVA.from_pretrained("pocket")
ts = TrainingSet.load(glob.glob("benchmarks/results/eval_bo_accurate/results.run/training_sets/yollava/bo*")[0])
tr, _ = split_holdout(ts.samples, 0.0, 0)
samples = random.Random(0).sample(balanced_samples(tr), 48)
c = e.new_concept("bo", 16); c.requires_grad_(True)
opt = torch.optim.AdamW([c.input_rows, c.output_row], lr=1e-3)
enc = [e.encode(s.question, image=s.image, answer=s.answer, concepts=["bo"]) for s in samples]
batches = ConceptTrainer(e, "bo", TrainConfig(batch_size=8), progress=False).batches(enc, 0)
def run(label, reps=1):
    cache = {}
    t0 = time.perf_counter()
    for b in batches:
        loss = e.loss([enc[i] for i in b], cache); opt.zero_grad(); loss.backward(); opt.step()
    dt = time.perf_counter() - t0
    print(f"{label}: {dt/len(enc):.3f} s/sample ({len(batches)} steps)", flush=True)
    return dt
run("eager warm"); base = run("eager")
llm = e.adapter.model.llm.model
t0 = time.perf_counter()
compiled = torch.compile(llm.forward, dynamic=True)
llm.forward = compiled
first = run("compiled first (incl. compile)")
print(f"compile+first {first:.1f}s", flush=True)
second = run("compiled"); third = run("compiled again")
print(f"speed-up {base/min(second, third):.2f}x")
