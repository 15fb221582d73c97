"""How long making pocket's int8 generation copy takes (on the first chat answer, or at `yollava serve` start).

    python benchmarks/int8_copy.py            # one torch thread
"""

import time

import torch

torch.set_num_threads(1)
from yollava import YoLLaVA  # noqa: E402

e = YoLLaVA.from_pretrained("pocket")
print("runtime", e.adapter.generation_runtime)
t = time.perf_counter()
e.adapter.prepare_generation()
print(f"int8 copy made in {time.perf_counter() - t:.1f}s")
