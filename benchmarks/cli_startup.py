"""How long ``yollava --help`` takes, and what it loads: the median wall and CPU time of ``--runs`` fresh processes,
beside the load average (the command is CPU-bound, so a busy machine stretches its wall time, not its CPU time).

    python benchmarks/cli_startup.py --runs 7
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    exe = Path(sys.executable).with_name("yollava")
    walls, cpus = [], []
    for _ in range(args.runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([str(exe), "--help"], check=True, capture_output=True, timeout=60)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    probe = "import sys, yollava.cli; print(sorted(m for m in ('torch', 'numpy', 'PIL', 'transformers', 'fastapi') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    print(f"yollava --help, {args.runs} runs: median wall {statistics.median(walls):.3f} s (min {min(walls):.3f}), "
          f"median CPU {statistics.median(cpus):.3f} s; load average {os.getloadavg()[0]:.1f}; heavy modules loaded: {loaded}")


if __name__ == "__main__":
    main()
