"""How many minutes of training until a configuration makes motion of published quality, on this clip?

    python benchmarks/time_to_quality.py clip.bvh [--config NAME=key=value,key=value ...]
        [--seeds 3] [--default-seeds N] [--minutes 20] [--every 2] [--threads 2] [--eval-samples 200]

Each configuration (every `--config`, given as overrides or as a YAML config file:
`fast=lr_g=4e-4,lr_d=4e-4` or `mine=mine.yaml`; then the original's defaults, `default`, always,
with `--default-seeds` of them if given) trains on the clip with each seed for `--minutes` of
training time (the trainer's clock: its iterations,
not validation), one run at a time on `--threads` cores. At every stage end and every `--every`
minutes the model as it stands is evaluated by the final protocol (`--eval-samples` samples of
twice the clip's length, noise at the coarsest level), off the clock. `--minutes` can end a
configuration mid-stage: the levels not trained yet then add their initial, untrained detail,
which is what a user stopping there would get (one with `budget_minutes` of as much ends its
last stage there instead).

Prints, per configuration, the minute each seed first entered the quality band
(ganimator.metrics.PUBLISHED) and each metric's mean over seeds at every checkpoint minute, side
by side with the defaults'; writes `curves.jsonl` (one line per evaluation), `report.md` and
`time_to_quality.png` (each metric against minutes: a line per configuration, the seeds' range
shaded, the band's bounds dashed) into `--out` (default `bench-time-to-quality/<clip>`).
A second call with the same `--out` reuses every evaluation already in `curves.jsonl`.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ganimator.config import load_config  # noqa: E402
from ganimator.dataset import MotionDataset  # noqa: E402
from ganimator.errors import UserError  # noqa: E402
from ganimator.generate import TrainedRun  # noqa: E402
from ganimator.metrics import PUBLISHED, Quality  # noqa: E402
from ganimator.run_hooks import RunOutputs  # noqa: E402
from ganimator.trainer import EventKind, OnEvent, TrainEvent, Trainer  # noqa: E402

SHOWN = ("coverage", "global_diversity", "jitter", "foot_skating", "penetration", "ground_contact", "foot_motion")
ABBREVIATED = dict(zip(SHOWN, ("cov", "div", "jit", "skate", "pen", "ground", "feet")))  # the checkpoint table's cells


@dataclass
class Point:
    """One evaluation of a run as it stood after `minutes` of training."""

    config: str
    seed: int
    minutes: float
    stage: int  # stages finished
    step: int
    quality: Quality
    in_band: bool = field(init=False)

    def __post_init__(self):
        self.in_band = PUBLISHED.contains(self.quality)

    def record(self) -> dict:
        return {"config": self.config, "seed": self.seed, "minutes": self.minutes, "stage": self.stage,
                "step": self.step, **self.quality.as_dict(), "in_band": self.in_band}

    @classmethod
    def of(cls, record: dict) -> "Point":
        return cls(record["config"], record["seed"], record["minutes"], record["stage"], record["step"],
                   Quality.from_dict(record))


class Clock:
    """A function of each event (trainer.OnEvent): evaluates at every stage end and every `every`
    seconds of training, and stops the run at `budget` seconds. Training time is the trainer's own
    clock (`Trainer.seconds`: its iterations, not validation or these evaluations), the one a
    `budget_minutes` run spends, so a configuration with a budget of `budget` ends as it planned."""

    def __init__(self, trainer: Trainer, name: str, seed: int, budget: float, every: float, samples: int):
        self.trainer, self.name, self.seed = trainer, name, seed
        self.budget, self.every, self.samples = budget, every, samples
        self.next = every
        self.points: list[Point] = []

    def trained(self) -> float:
        return self.trainer.seconds

    def __call__(self, event: TrainEvent) -> bool:
        trained = self.trained()
        over = trained >= self.budget
        if event.kind == EventKind.STAGE_END or trained >= self.next or over:
            self.evaluate(trained, event)
            self.next = (trained // self.every + 1) * self.every
        return over

    def evaluate(self, trained: float, event: TrainEvent) -> None:
        t = self.trainer
        run = TrainedRun(t.run_dir, t.cfg, t.dataset, t.member.pyramid)
        quality = run.evaluate(self.samples, seed=self.seed)
        self.points.append(Point(self.name, self.seed, trained / 60, event.stages_done, event.step, quality))
        p = self.points[-1]
        print(f"  {self.name} seed {self.seed}: {p.minutes:5.1f} min, stage {p.stage}, step {p.step}: "
              + ", ".join(f"{k} {getattr(quality, k):.3g}" for k in SHOWN)
              # the fields it misses, named: coverage 0.9497 prints as 0.95
              + ("  IN BAND" if p.in_band else f"  (misses {', '.join(PUBLISHED.misses(quality))})"),
              flush=True)


def train(npz: Path, name: str, overrides: list[str], seed: int, args) -> list[Point]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config([f"npz_filename={npz}", f"run_dir={tmp}/run", f"seed={seed}", f"num_threads={args.threads}",
                           "progress=false", "validation_samples=0", f"validate_every={args.check_every}",
                           f"checkpoint_every={10**9}", "clearml=off", *overrides])
        trainer = Trainer(cfg)
        clock = Clock(trainer, name, seed, args.minutes * 60, args.every * 60, args.eval_samples)
        trainer.fit([RunOutputs(), OnEvent(clock)])
        return clock.points


def parse_config(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition("=")
    if not name or not rest:
        raise SystemExit(f"--config {text!r}: expected NAME=key=value,key=value or NAME=file.yaml")
    if rest.endswith((".yaml", ".yml")):
        return name, [f"config={rest}"]
    return name, re.split(r",(?=[\w.]+=)", rest)  # commas inside a value (a list) stay


def entered(points: list[Point]) -> float | None:
    """The first minute at which the run was in the band."""
    return next((p.minutes for p in sorted(points, key=lambda p: p.minutes) if p.in_band), None)


def report(points: list[Point], configs: list[str], args) -> str:
    seeds = sorted({p.seed for p in points})
    lines = [f"# Time to quality on {args.clip.name}", "",
             f"{args.minutes:g} minutes of training a run, {args.threads} threads, seeds {seeds}, "
             f"{args.eval_samples} samples of twice the clip's length per evaluation.",
             f"The band: {PUBLISHED.describe()}.", "",
             "| configuration | minute in the band, per seed | at the end (mean over seeds) |", "| --- | --- | --- |"]
    for name in configs:
        mine = [p for p in points if p.config == name]
        own = sorted({p.seed for p in mine})  # the defaults may have fewer (--default-seeds)
        minutes = [entered([p for p in mine if p.seed == s]) for s in own]
        shown = ", ".join("-" if m is None else f"{m:.1f}" for m in minutes) or "not measured"
        last = [max((p for p in mine if p.seed == s), key=lambda p: p.minutes) for s in own]
        final = ", ".join(f"{k} {statistics.mean(getattr(p.quality, k) for p in last):.3g}" for k in SHOWN) if last else ""
        lines.append(f"| {name} | {shown} | {final} |")
    lines += ["", "Each metric's mean over seeds at the checkpoint minutes (each seed's latest evaluation by then):", "",
              "| minute | " + " | ".join(configs) + " |", "| --- |" + " --- |" * len(configs)]
    for minute in checkpoint_minutes(args):
        cells = []
        for name in configs:
            # An evaluation falls due at the minute and is taken at the next clock reading: half an interval late at most.
            now = [max((p for p in points if p.config == name and p.seed == s and p.minutes <= minute + args.every / 2),
                       key=lambda p: p.minutes, default=None) for s in seeds]
            now = [p for p in now if p is not None]
            means = (f"{ABBREVIATED[k]} {statistics.mean(getattr(p.quality, k) for p in now):.3g}" for k in SHOWN)
            cells.append("; ".join(means) + f" ({sum(p.in_band for p in now)}/{len(now)} in band)" if now else "-")
        lines.append(f"| {minute:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def checkpoint_minutes(args) -> list[float]:
    count = max(1, math.floor(args.minutes / args.every + 1e-9))
    return [round(args.every * (k + 1), 6) for k in range(count)]


def held(run: list[tuple[float, float]], minute: float) -> float:
    """A run's value at `minute` of the plot's grid (minutes to 3 decimals): its latest evaluation by
    then, since a run holds its quality until evaluated again; NaN before its first. The last
    evaluation of a 60-minute run falls at 60.0004, on the grid's 60.0."""
    return next((v for m, v in sorted(run, reverse=True) if round(m, 3) <= minute), math.nan)


def plot(points: list[Point], configs: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SHOWN), figsize=(4 * len(SHOWN), 3.6), constrained_layout=True)
    for ax, metric in zip(axes, SHOWN):
        for k, name in enumerate(configs):
            runs = {}
            for p in points:
                if p.config == name:
                    runs.setdefault(p.seed, []).append((p.minutes, getattr(p.quality, metric)))
            grid = sorted({round(m, 3) for run in runs.values() for m, _ in run})  # seeds' near-equal minutes as one
            if not grid:
                continue
            values = [[held(run, t) for t in grid] for run in runs.values()]
            columns = list(zip(*values))
            mean = [statistics.fmean([v for v in c if v == v]) if any(v == v for v in c) else math.nan for c in columns]
            low = [min((v for v in c if v == v), default=math.nan) for c in columns]
            high = [max((v for v in c if v == v), default=math.nan) for c in columns]
            color = f"C{k}"
            ax.plot(grid, mean, color=color, label=name, marker="o", markersize=3)
            ax.fill_between(grid, low, high, color=color, alpha=0.2, linewidth=0)
        lo, hi = getattr(PUBLISHED, metric)
        for bound in (lo, hi):
            if bound is not None:
                ax.axhline(bound, color="black", linestyle="--", linewidth=0.8)
        ax.set_title(metric.replace("_", " "))
        ax.set_xlabel("minutes of training")
        if metric in ("jitter", "foot_skating"):
            ax.set_yscale("log")
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(f"{path.parent.name}: quality against training time (mean over seeds, their range shaded; "
                 "dashed: the band)", fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def check_settings(out: Path, args, configs: dict[str, list[str]]) -> None:
    """`out` reuses its measurements only for the same clip, budget and protocol, and the same
    overrides under each name: anything else is a new measurement, in another folder."""
    path = out / "settings.json"
    settings = {"clip": str(args.clip.resolve()), "minutes": args.minutes, "every": args.every,
                "threads": args.threads, "check_every": args.check_every, "eval_samples": args.eval_samples,
                "configs": configs}
    if path.exists():
        old = json.loads(path.read_text())
        same = all(old.get(k) == v for k, v in settings.items() if k != "configs")
        if not same or any(old["configs"].get(n, o) != o for n, o in configs.items()):
            raise SystemExit(f"error: {out} holds measurements taken with other settings ({path}): choose another --out")
        settings["configs"] = {**old["configs"], **configs}
    path.write_text(json.dumps(settings, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("clip", type=Path)
    p.add_argument("--config", action="append", default=[], help="NAME=key=value,key=value or NAME=file.yaml")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--default-seeds", type=int,
                   help="seeds of the original's defaults (default: --seeds); they cost as many minutes each and are far "
                        "from the band at minutes, so fewer may do")
    p.add_argument("--minutes", type=float, default=20.0, help="training wall time of each run")
    p.add_argument("--every", type=float, default=2.0, help="minutes between evaluations (and at every stage end)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--check-every", type=int, default=25,
                   help="iterations between clock readings (each a validation without samples: one forward pass)")
    p.add_argument("--eval-samples", type=int, default=200)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = [("default", []), *map(parse_config, args.config)]
    if len({n for n, _ in configs}) != len(configs):
        raise SystemExit("--config names must differ from each other and from 'default'")
    out = args.out or Path("bench-time-to-quality") / args.clip.stem
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, args, dict(configs))
    npz = out / "clip.npz"
    if not npz.exists():
        MotionDataset.from_bvh(args.clip).save(npz)
    curves = out / "curves.jsonl"
    points = [Point.of(json.loads(line)) for line in curves.read_text().splitlines()] if curves.exists() else []
    seeds = {name: args.seeds for name, _ in configs}
    if args.default_seeds is not None:
        seeds["default"] = args.default_seeds
    for name, overrides in configs[1:] + configs[:1]:  # the configurations asked about first, the defaults last
        for seed in range(seeds[name]):
            if any(p.config == name and p.seed == seed for p in points):
                continue  # measured by an earlier call
            print(f"{name}, seed {seed}: training {args.minutes:g} minutes", flush=True)
            new = train(npz, name, overrides, seed, args)
            with open(curves, "a") as f:
                f.writelines(json.dumps(p.record()) + "\n" for p in new)
            points += new
    names = [n for n, _ in configs]
    text = report(points, names, args)
    (out / "report.md").write_text(text)
    plot(points, names, out / "time_to_quality.png")
    print("\n" + text + f"\n{out / 'time_to_quality.png'}, {out / 'report.md'}, {curves}")


if __name__ == "__main__":
    try:
        main()
    except UserError as e:  # a bad override or clip: one line, as the commands say it
        sys.exit(f"error: {e}")
