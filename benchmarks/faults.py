"""Faults injected into small sweeps on a local multi-node Ray cluster, and what each cost.

    python benchmarks/faults.py [clip.bvh] [--faults worker-node,trial-process,...] [--iters 30] [--population 2]
                                [--optuna-storage postgresql://...]

The harness and its scenarios are `cluster/faults.py`; this prints one table row per fault: trials
started, finished, failed with a reason, lost (must be 0), and the seconds from the fault until the
hit trial reported again. Without a clip it uses the procedural demo clip.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's cluster/, not in the wheel
from cluster import faults  # noqa: E402


def main() -> None:
    names = list(faults.SCENARIOS)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clip", nargs="?", help="BVH clip (default: the procedural demo clip)")
    p.add_argument("--faults", default=",".join(names), help=f"comma-separated, from {', '.join(names)}")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--iters", type=int, default=30, help="iterations per stage")
    p.add_argument("--population", type=int, default=1, help="configurations per Tune trial, trained fused")
    p.add_argument("--optuna-storage", default="", help="the study's database URL, e.g. postgresql://... "
                   "(default: SQLite in each sweep's folder)")
    args = p.parse_args()
    chosen = args.faults.split(",")
    if unknown := set(chosen) - set(names):
        p.error(f"unknown fault(s) {sorted(unknown)}: choose from {', '.join(names)}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        npz = faults.clip_npz(Path(args.clip).resolve() if args.clip else None, tmp)
        print(f"{'fault':<20} {'started':>7} {'finished':>8} {'failed':>6} {'lost':>4} {'recover s':>9}  reasons")
        for fault in chosen:
            o = faults.run_fault(fault, npz, tmp / fault, args.iters, args.trials, args.population,
                                 args.optuna_storage)
            print(f"{fault:<20} {o.started:>7} {o.finished:>8} {len(o.failed):>6} {o.lost:>4} {o.recover_s:>9.1f}  "
                  + "; ".join(f"{n} x {reason}" for reason, n in Counter(r.split(";")[0] for r in o.failed).items()),
                  flush=True)


if __name__ == "__main__":
    main()
