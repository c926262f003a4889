"""Run every benchmark in this folder (``bench_*.py``, then ``gpu_throughput.py``) and print their figures.

``make bench`` runs this. Each script runs in its own process with its default arguments (``gpu_throughput.py``
with 4 demo images: on a machine without CUDA it prints CPU figures and says so). Unless ``OMP_NUM_THREADS`` is
already set, every script gets ``OMP_NUM_THREADS=1``: on a shared machine, OpenMP workers spin-waiting for a core
that another job holds make model code many times slower and the figures meaningless; one thread per process
is also what Ray gives a worker on a small machine. The whole run takes about 10 minutes on 2 cores.

    .venv/bin/python benchmarks/run_all.py [--only read plan ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scripts() -> list[tuple[Path, list[str]]]:
    found = [(p, []) for p in sorted(HERE.glob("bench_*.py"))]
    return found + [(HERE / "gpu_throughput.py", ["--images", "4"])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", help="run only the scripts whose name contains one of these words")
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", env["OMP_NUM_THREADS"])
    print(f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}", flush=True)
    failed, walls = [], []
    start_all = time.perf_counter()
    for script, extra in scripts():
        if args.only and not any(word in script.stem for word in args.only):
            continue
        print(f"== {script.name} {' '.join(extra)}".rstrip(), flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(script), *extra], env=env)
        wall = time.perf_counter() - start
        walls.append((script.name, wall, code))
        print(f"-- {script.name}: exit {code}, {wall:.1f} s wall\n", flush=True)
        if code != 0:
            failed.append(script.name)
    print("== summary")
    for name, wall, code in walls:
        print(f"{name:<28} {wall:7.1f} s  {'ok' if code == 0 else f'exit {code}'}")
    print(f"{'total':<28} {time.perf_counter() - start_all:7.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
