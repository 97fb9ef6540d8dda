"""Does the sweep find a configuration that makes better motion than the default, on this clip?

    python benchmarks/sweep_value.py clip.bvh [--trials 12] [--iters 25] [--retrain-iters 50] [--seeds 3]
    python benchmarks/sweep_value.py clip.bvh --budget-iters 400 [--trials 8] [--seeds 3] [--objective band]

With `--budget-iters N` it runs in budget mode: every trial costs N iterations in all, split across the
stages as each configuration chooses, over the budget space (`sweeps/space-budget.yaml`: stage
weights, learning rates and their schedule, critic steps, noise, lambda_rec); the best and the
default (the original's values at the same budget, spent evenly) are retrained at N too, and the
report gives each one's training time beside its quality (the space's critic steps reach the
default's 5 at most, so no configuration costs more per iteration than the original's; a split
heavier on the fine stages can cost more time, which the report shows).

1. A sweep of `--trials` configurations at `--iters` iterations a stage, without early stopping,
   so that every configuration has a final score (its own retrain is skipped: step 3 does it).
2. Every finished trial's checkpoint evaluated by the final protocol (`--eval-samples` samples of
   twice the clip's length, noise at the coarsest level only).
3. The sweep's best configuration (by the default objective) and the default configuration, each
   retrained with every seed at `--retrain-iters` and evaluated alike: each metric's mean and
   spread, which wins and by how much. Run folders and evaluations are named by their iterations,
   so a second call with other `--retrain-iters` or `--seeds` reuses the sweep and adds to them.
4. The checks the sweep rests on:
   - trial scores (the validation protocol: few samples) against the full evaluation of the same
     checkpoints, Spearman over the finished trials;
   - each stage end's score against the final score (the rung correlation early stopping trusts);
   - the objective's known cases: the default retrained must outscore the default trained a
     tenth as long, and outscore itself sampled with `--noise-scale` times the noise.

`--objective band` ranks by the quality band instead of the score (sweeps/objective.py): the sweep,
the best and every score column of the report.

Everything is kept in `--out` (default `bench-sweep-value/<clip>`): a second call reuses the
finished sweep, trainings and evaluations, and prints the report again (report.md beside them).
Processes take `--threads` cores each; two clips at once on 2 cores: `--threads 1` for each. `--jobs J`
runs J trials and J retrains at once (J x `--threads` cores).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ganimator.metrics import Quality  # noqa: E402
from sweeps.objective import KINDS, Objective  # noqa: E402
from sweeps.results import importances, rung_correlations, spearman, study_rows  # noqa: E402

SHOWN = ("score", *Quality.NAMES)


def sh(*cmd: str, log: Path) -> None:
    with open(log, "a") as f:
        if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode:
            sys.exit(f"{' '.join(cmd[:3])}... failed: see {log}")


def cached(path: Path, compute) -> dict:
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(compute(), indent=1) + "\n")
    return json.loads(path.read_text())


def evaluation(run_dir: Path, samples: int, noise_scale: float = 1.0) -> dict:
    from ganimator.generate import load_run

    from ganimator.rundir import load_checkpoint_file

    run = load_run(run_dir)
    seconds = load_checkpoint_file(run_dir / "checkpoint.pt").get("seconds", math.nan)  # its training time
    return {**run.evaluate(samples, noise_scale=noise_scale).as_dict(), **run.sampling(samples, noise_scale=noise_scale),
            "train_seconds": seconds}


def scored(metrics: dict, objective: Objective) -> dict:
    """An evaluation with its score by the objective (evaluations are kept; the objective may change)."""
    return {**metrics, "score": objective.score(Quality.from_dict(metrics))}


def mean_spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clip")
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--iters", type=int, default=25, help="iterations a stage in the sweep")
    p.add_argument("--retrain-iters", type=int, default=50, help="iterations a stage of the retrains")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--eval-samples", type=int, default=200)
    p.add_argument("--noise-scale", type=float, default=2.0, help="the amplified-noise known case")
    p.add_argument("--budget-iters", type=int, default=0,
                   help="budget mode: each trial and retrain costs this many iterations in all (--iters, --retrain-iters unused)")
    p.add_argument("--objective", choices=[kind.kind for kind in KINDS if kind.prunable], default="score",
                   help="what the sweep ranks by and the report's score column is (sweeps/objective.py)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--jobs", type=int, default=1, help="trials and retrains at once, --threads each")
    p.add_argument("--out", default="")
    args = p.parse_args()
    clip = Path(args.clip).resolve()
    mode = f"-budget-{args.budget_iters}" if args.budget_iters else ""
    mode += "" if args.objective == "score" else f"-{args.objective}"
    objective = Objective.named(args.objective)
    out = Path(args.out or f"bench-sweep-value/{clip.stem}{mode}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    import torch

    torch.set_num_threads(args.threads)
    npz, name = out / f"{clip.stem}.npz", clip.stem
    if not npz.is_file():
        sh("ganimator-preprocess", str(clip), str(npz), log=log)
    trainer = [f"npz_filename={npz}", "clearml=off"]

    budget = args.budget_iters

    def cost(iters: int) -> list[str]:
        """A training's length: `iters` a stage, or in budget mode `iters` in all (validated at stage ends only)."""
        return [f"budget_iters={iters}" if budget else f"train_data_iter={iters}", f"validate_every={iters}"]

    def train(run: Path, iters: int, seed: int, params: dict) -> Path:
        if not (run / "samples").is_dir():  # written when the last stage ends
            print(f"training {run.relative_to(out)} ({iters} iterations {'in all' if budget else 'a stage'})", flush=True)
            sh("ganimator-train", *trainer, *(f"{k}={v}" for k, v in params.items()), f"run_dir={run}",
               f"seed={seed}", *cost(iters), f"num_threads={args.threads}",
               "progress=false", f"resume={str(run.exists()).lower()}", log=log)
        return run

    def evaluated(key: str, run: Path, noise_scale: float = 1.0) -> dict:
        def evaluate() -> dict:
            print(f"evaluating {key} ({args.eval_samples} samples)", flush=True)
            return evaluation(run, args.eval_samples, noise_scale)

        return scored(cached(out / "evals" / f"{key}.json", evaluate), objective)

    # 1. The sweep (its own retrain, a single iteration, is skipped in effect; in budget mode it
    # costs the whole budget once more, which the retrains below make up for).
    results = out / "results" / name
    sweep_iters = budget or args.iters
    if not (out / "exports" / name).is_dir():
        print(f"sweep: {args.trials} trials x {sweep_iters} iterations {'in all' if budget else 'a stage'} "
              f"(log: {log})", flush=True)
        space = ["space=budget"] if budget else []
        sh(sys.executable, "sweeps/run.py", *trainer, *cost(sweep_iters), *space, f"name={name}",
           f"results_dir={out / 'results'}", f"export_dir={out / 'exports'}", f"num_samples={args.trials}",
           "early_stopping=false", f"objective={args.objective}", f"num_cpus={args.threads * args.jobs}",
           f"cpus_per_trial={args.threads}", "retrain_iter=1", "eval_samples=1", "export_samples=0", log=log)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{results / 'optuna.db'}")
    rows = study_rows(study, list(study.trials[0].params), objective)

    # 2. Every finished trial's checkpoint by the full evaluation (trial 0 is the default configuration).
    finished = {t.number: t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))}
    full = {n: evaluated(f"trial-{n}", next(results.glob(f"*/members/{n}"))) for n in sorted(finished)}

    # 3. The best and the default retrained with every seed; the known cases on the default.
    best = max((r for r in rows if r.finished), key=lambda r: r.score)
    configurations = {"default": ("default", {})}  # role: (folder name, searched values)
    if number(best):
        configurations["best"] = (f"trial-{number(best)}", finished[number(best)].params)
    retrained = {"best": {}, "default": {}, "short": {}, "noisy": {}}
    iters = budget or args.retrain_iters
    short_iters = max(4 if budget else 1, iters // 10)
    trainings = [(out / f"{folder}-{iters}" / f"seed-{seed}", iters, seed, params)
                 for seed in range(args.seeds) for folder, params in configurations.values()]
    trainings += [(out / f"default-{short_iters}" / f"seed-{seed}", short_iters, seed, {}) for seed in range(args.seeds)]
    with ThreadPoolExecutor(args.jobs) as pool:  # `--jobs` trainings at once, each its own process and threads
        list(pool.map(lambda job: train(*job), trainings))
    for seed in range(args.seeds):
        for role, (folder, params) in configurations.items():
            run = train(out / f"{folder}-{iters}" / f"seed-{seed}", iters, seed, params)  # trained above: found
            retrained[role][seed] = evaluated(f"{folder}-{iters}-{seed}", run)
        retrained["noisy"][seed] = evaluated(f"default-{iters}-{seed}-noise-{args.noise_scale:g}",
                                             out / f"default-{iters}" / f"seed-{seed}", args.noise_scale)
        short = train(out / f"default-{short_iters}" / f"seed-{seed}", short_iters, seed, {})
        retrained["short"][seed] = evaluated(f"default-{short_iters}-{seed}", short)
    if "best" not in configurations:
        retrained["best"] = retrained["default"]

    report = render(args, short_iters, rows, best, retrained, full, study, objective)
    (out / "report.md").write_text(report)
    print(report)


def verdict_of(better: float, worse: float) -> str:
    if math.isclose(better, worse, rel_tol=1e-9, abs_tol=1e-12):
        return "tie (equal scores: with no coverage, a score is minus the reconstruction error)"
    return "yes" if better > worse else "NO"


def number(row) -> int:
    """A row's Optuna trial number (its id is `<Ray trial id>-<number>`); 0 is the default configuration."""
    return int(row.trial_id.rsplit("-", 1)[1])


def render(args, short_iters, rows, best_row, retrained, full, study, objective: Objective) -> str:
    best, default = retrained["best"], retrained["default"]
    default_row = next(r for r in rows if number(r) == 0)
    length = (f"a budget of {args.budget_iters} iterations in all (`space=budget`)" if args.budget_iters
              else f"{args.iters} iterations a stage")
    retrain = f"{args.budget_iters} iterations in all" if args.budget_iters else f"{args.retrain_iters} iterations a stage"
    short = f"{short_iters} iterations {'in all' if args.budget_iters else 'a stage'}"
    lines = [f"# Sweep value on {Path(args.clip).name}", "",
             f"{args.trials} trials at {length} (no early stopping); the best "
             f"({best_row.trial_id}) and the default ({default_row.trial_id}) each retrained with seeds "
             f"{sorted(default)} at {retrain}, {args.threads} threads, evaluated on {args.eval_samples} samples "
             f"of twice the clip's length (the final protocol). Score: {objective.description}.", "",
             "| metric | best: mean | spread | default: mean | spread | best - default |",
             "| --- | --- | --- | --- | --- | --- |"]
    for k in (*SHOWN, "train_seconds"):
        (bm, bs), (dm, ds) = (mean_spread([m.get(k, math.nan) for m in x.values()]) for x in (best, default))
        lines.append(f"| {k} | {bm:.4f} | {bs:.4f} | {dm:.4f} | {ds:.4f} | {bm - dm:+.4f} |")
    verdicts = []
    for k in ("score", "coverage"):
        (bm, bs), (dm, ds) = (mean_spread([m[k] for m in x.values()]) for x in (best, default))
        spread = math.hypot(bs, ds)
        verdicts.append(f"in {k} the {'best' if bm > dm else 'default'} configuration wins by {abs(bm - dm):.4f}, "
                        f"{'more' if abs(bm - dm) > spread else 'less'} than the seeds' combined spread ({spread:.4f})")
    verdict = "the default itself was the sweep's best" if best_row is default_row else "; ".join(verdicts)
    lines += ["", f"**Verdict**: {verdict}.", "", "## The objective's known cases (default configuration, mean over seeds)", "",
              "| case | score | coverage | diversity | jitter | foot skating |", "| --- | --- | --- | --- | --- | --- |"]
    cases = {f"trained {retrain}": default, f"trained {short}": retrained["short"],
             f"trained {retrain}, sampled with {args.noise_scale:g}x noise": retrained["noisy"]}
    mean = {case: {k: statistics.fmean(m[k] for m in runs.values()) for k in SHOWN} for case, runs in cases.items()}
    for case, m in mean.items():
        lines.append(f"| {case} | {m['score']:.4f} | {m['coverage']:.3f} | "
                     f"{(m['global_diversity'] + m['local_diversity']) / 2:.3f} | {m['jitter']:.2f} | {m['foot_skating']:.2f} |")
    trained, short, noisy = (m["score"] for m in mean.values())
    lines += ["", f"- ten times longer training ranks higher: {verdict_of(trained, short)}",
              f"- the model as trained ranks above its amplified noise: {verdict_of(trained, noisy)}"]
    numbers = sorted(full)
    trial_scores = {number(r): r.score for r in rows}
    rho, pv = spearman([trial_scores[n] for n in numbers], [full[n]["score"] for n in numbers])
    lines += ["", "## Do the sweep's scores rank configurations as the final evaluation does?", "",
              f"- trial scores (validation protocol) vs the {args.eval_samples}-sample evaluation of the same "
              f"checkpoints: Spearman rho {rho:.2f} (p {pv:.2g}) over {len(numbers)} configurations"]
    stages = max(len(r.stage_scores) for r in rows)
    for c in rung_correlations(rows, stages):
        lines.append(f"- stage {c.stage} score vs final score: rho {c.rho:.2f} (p {c.pvalue:.2g}) over "
                     f"{c.configurations} configurations")
    weights = importances(study, objective)
    if weights:
        lines += ["", "## Importances (Optuna's default evaluator)", "", *(f"- {k}: {v:.3f}" for k, v in weights.items())]
    lines += ["", "## Trials", "", "| trial | score (validation) | score (full eval) | coverage | diversity | jitter | "
              "foot skating |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for n in numbers:
        f = full[n]
        lines.append(f"| {n} | {trial_scores[n]:.4f} | {f['score']:.4f} | {f['coverage']:.3f} | "
                     f"{(f['global_diversity'] + f['local_diversity']) / 2:.3f} | {f['jitter']:.2f} | {f['foot_skating']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
