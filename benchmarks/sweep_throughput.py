"""Sweep throughput: trials finished per hour, and iterations saved by early stopping.

    python benchmarks/sweep_throughput.py [clip.bvh] [--trials 8] [--iters 40] [--population 4]

Runs the same small sweep twice on a local Ray with this machine's CPUs, with early stopping
(successive halving at stage ends) and without, and prints trials per hour for both, their ratio,
and the share of training iterations that early stopping saved. With `--population K` it runs
both again with K configurations fused in each Ray trial.
Every sweep searches the default space with `critic_steps` held at 5, so that a trial's cost does
not depend on which configurations the sampler happened to draw. Without a clip it uses the
procedural demo clip.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "sweeps" / "space.yaml"


def run(npz: Path, out: Path, name: str, args, early_stopping: bool, population: int = 1) -> dict:
    cmd = [sys.executable, str(ROOT / "sweeps" / "run.py"), f"npz_filename={npz}", f"name={name}",
           f"results_dir={out / 'results'}", f"export_dir={out / 'exports'}", f"num_samples={args.trials}",
           f"train_data_iter={args.iters}", f"validate_every={max(1, args.iters // 2)}", "validation_samples=2",
           f"early_stopping={str(early_stopping).lower()}", "retrain_iter=1", "eval_samples=1", "export_samples=0",
           f"cpus_per_trial={args.cpus_per_trial}", f"population={population}", f"space={out / 'space.yaml'}"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=out, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    with open(out / "exports" / name / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    steps = sum(int(r["steps"]) for r in rows)
    full = len(rows) * 4 * args.iters
    return {"seconds": seconds, "trials": len(rows), "per_hour": len(rows) / seconds * 3600,
            "saved": 1 - steps / full, "stopped": sum(r["status"].startswith("stopped") for r in rows)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clip", nargs="?", help="BVH clip (default: the procedural demo clip)")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--iters", type=int, default=40, help="iterations per stage")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--population", type=int, default=1, help="also run both sweeps with K configurations a trial")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = Path(args.clip).resolve() if args.clip else tmp / "demo.bvh"
        if not args.clip:
            subprocess.run(["ganimator-procedural", str(clip)], check=True, stdout=subprocess.DEVNULL)
        npz = tmp / "clip.npz"
        space = [line for line in SPACE.read_text().splitlines() if not line.startswith("critic_steps:")]
        (tmp / "space.yaml").write_text("\n".join(space) + "\n")
        subprocess.run(["ganimator-preprocess", str(clip), str(npz)], check=True, stdout=subprocess.DEVNULL)
        sweeps = {"successive halving at stage ends": run(npz, tmp, "sh", args, early_stopping=True),
                  "no early stopping": run(npz, tmp, "fifo", args, early_stopping=False)}
        if args.population > 1:
            k = args.population
            sweeps[f"population {k}, successive halving"] = run(npz, tmp, "pop-sh", args, True, k)
            sweeps[f"population {k}, no early stopping"] = run(npz, tmp, "pop-fifo", args, False, k)
    print(f"{args.trials} trials x 4 stages x {args.iters} iterations, {clip.name}, "
          f"{args.cpus_per_trial:g} CPU per trial, each sweep including Ray start-up and one tiny retrain")
    print("| sweep | wall s | trials/hour | stopped early | iterations saved |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in sweeps.items():
        print(f"| {name} | {r['seconds']:.0f} | {r['per_hour']:.0f} | {r['stopped']}/{r['trials']} | "
              f"{r['saved'] * 100:.0f}% |")
    base = sweeps["no early stopping"]["per_hour"]
    for name, r in sweeps.items():
        if name != "no early stopping":
            print(f"throughput ratio ({name} / no early stopping): {r['per_hour'] / base:.2f}x")


if __name__ == "__main__":
    main()
