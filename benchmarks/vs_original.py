"""This trainer against the original GANimator: the same clip, budget and seeds, scored alike.

Both codes train on the clip with `--iters` iterations a stage for every seed. Both are then
evaluated by the original's protocol (evaluate.py): `--samples` motions of twice the clip's
length, noise at the coarsest level only, scored with this project's coverage and global/local
diversity (the original's definitions; tests/test_metrics.py checks them against brute force)
against the same real features. The two codes' features are the same channels (the fidelity
tests check it), so one scorer serves both and only the models differ.

The original runs from a checkout the user supplies (`--original`); see benchmarks/original_code.py.
Jobs run `--jobs` at a time in fresh processes of `--threads` torch threads each. `--variant`
adds a row of this trainer with config overrides (e.g. `train_critic_masks=false`, the fixed
masks the project used before): a deviation measured beside the original and the default.

    python benchmarks/vs_original.py --original ~/ganimator clip.bvh --iters 300 --seeds 0 1 --samples 200
    python benchmarks/vs_original.py --original ~/ganimator clip.bvh --variant train_critic_masks=false
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import original_code  # noqa: E402

from ganimator.config import load_config  # noqa: E402
from ganimator.dataset import MotionDataset  # noqa: E402
from ganimator.generate import load_run  # noqa: E402
from ganimator.metrics import pose_frames, quality  # noqa: E402
from ganimator.run_hooks import train  # noqa: E402

METRICS = ("coverage", "global_diversity", "local_diversity")


def score(samples: torch.Tensor, data: MotionDataset, batch: int = 8) -> dict[str, float]:
    """Mean metrics of (S, C, L) samples against the clip, a batch at a time (memory ~ L^2)."""
    real = pose_frames(data.clips[0].features, data.layout)
    totals = dict.fromkeys(METRICS, 0.0)
    for start in range(0, len(samples), batch):
        part = samples[start:start + batch]
        for key, value in quality(pose_frames(part, data.layout), real).items():
            totals[key] += value * len(part)
    return {key: value / len(samples) for key, value in totals.items()}


def job(code: str, clip: str, original: str, work: str, iters: int, seed: int, samples: int, threads: int,
        overrides: tuple[str, ...] = ()) -> dict:
    """Train one code on the clip with one seed, then sample and score it (in a fresh process).
    `overrides` (this trainer only) are config keys a variant row sets."""
    torch.set_num_threads(threads)
    folder = Path(work) / f"{code}-seed{seed}".replace(" ", "_").replace("=", "-")
    data = MotionDataset.from_bvh(clip, seed=seed)
    length = 2 * data.clips[0].features.shape[-1]
    start = time.perf_counter()
    if code != "original":
        data.save(folder.with_suffix(".npz"))
        cfg = load_config([f"npz_filename={folder.with_suffix('.npz')}", f"run_dir={folder}", f"seed={seed}",
                           f"train_data_iter={iters}", f"validate_every={iters}", "validation_samples=0",
                           "progress=false", "clearml=off", *overrides])
        train(cfg)
        trained = time.perf_counter() - start
        run = load_run(folder)
        features = torch.cat([run.generate(length, min(8, samples - k), seed=seed * 1_000_003 + k)
                              for k in range(0, samples, 8)])
    else:
        folder.mkdir(parents=True)
        original_code.train(original, clip, folder, iters_per_stage=iters, seed=seed, threads=threads)
        trained = time.perf_counter() - start
        features = original_code.generate(original, folder, clip, length=length, samples=samples, seed=seed,
                                          threads=threads)
    if features.shape[1:] != (data.layout.channels, length):
        raise RuntimeError(f"{code} generated {tuple(features.shape)}, expected (N, {data.layout.channels}, {length})")
    return {"code": code, "seed": seed, "train_seconds": trained, **score(features, data)}


def summarise(rows: list[dict]) -> list[str]:
    codes = list(dict.fromkeys(r["code"] for r in rows))
    width = max(9, *map(len, codes))
    lines = [f"{'code':<{width}} {'seeds':>5} " + " ".join(f"{m:>22}" for m in METRICS) + f" {'train s':>9}"]
    for code in codes:
        mine = [r for r in rows if r["code"] == code]
        cells = []
        for m in METRICS:
            values = [r[m] for r in mine]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):>13.3f} +- {spread:<5.3f}")
        seconds = statistics.mean(r["train_seconds"] for r in mine)
        lines.append(f"{code:<{width}} {len(mine):>5} " + " ".join(f"{c:>22}" for c in cells) + f" {seconds:>9.0f}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clip", help="a BVH clip")
    p.add_argument("--original", required=True, help="a checkout of PeizhuoLi/ganimator")
    p.add_argument("--iters", type=int, default=300, help="iterations a stage, for both codes")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--samples", type=int, default=200, help="evaluation samples (the original uses 200)")
    p.add_argument("--jobs", type=int, default=2, help="trainings at once")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training")
    p.add_argument("--variant", nargs="+", default=[], metavar="KEY=VALUE",
                   help="also train this trainer with these config overrides, as a row of its own")
    p.add_argument("--out", help="also write every run's numbers to this JSON file")
    args = p.parse_args()
    original_code.load(args.original)  # a wrong path fails here, before any training

    with tempfile.TemporaryDirectory() as work, \
            ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        codes = {"original": (), "ours": ()}
        if args.variant:
            codes[f"ours {' '.join(args.variant)}"] = tuple(args.variant)
        futures = [pool.submit(job, code, str(Path(args.clip).resolve()), args.original, work, args.iters, seed,
                               args.samples, args.threads, overrides)
                   for seed in args.seeds for code, overrides in codes.items()]
        rows = []
        for future in futures:
            rows.append(future.result())
            r = rows[-1]
            print(f"{r['code']} seed {r['seed']}: " + ", ".join(f"{m} {r[m]:.3f}" for m in METRICS)
                  + f" (trained in {r['train_seconds']:.0f} s)", flush=True)
    print(f"\n{Path(args.clip).name}: {args.iters} iterations a stage, {args.samples} samples of twice the clip's "
          f"length, noise at the coarsest level only (mean +- standard deviation over seeds)")
    print("\n".join(summarise(rows)))
    if args.out:
        Path(args.out).write_text(json.dumps({"clip": str(args.clip), "iters": args.iters, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
