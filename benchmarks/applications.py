"""Do the applications work on real clips at a real (if short) training budget?

    python benchmarks/applications.py [--data DIR] [--iters 200] [--samples 16] [--threads 1]

Trains, at `--iters` iterations a stage with the default configuration, on the shared clips:
proud, Walk-In-Circle at ratio 1/5 and 1/30, the walk and Salsa-Dancing-6 mixed, and a
conditional run on top of the 1/5 walk; then measures each application against a baseline:

- mixing: coverage of each clip by the mixed model's samples, and by the walk-only model's;
- style transfer (proud model, normal content): the result's patch cost (global diversity) to
  each clip beside normal's own cost to proud, and how far its root path strays from normal's;
- key-frame editing (walk at 1/30): the edited joint's rotation at the edited key frame, its
  angle to the edit and to the unedited pose; the motion's quality from unedited key frames;
- trajectory: the conditional run's samples along sampled trajectories and along the clip's own
  (quality, and the largest root error), beside the unconditional run's samples;
- contact clean-up: foot skating of the walk model's samples before and after, and the clip's.

Runs and results are kept in `--out` (default bench-applications): a second call reuses them.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import roma
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ganimator.bvh import motion_to_bvh, write_bvh  # noqa: E402
from ganimator.config import load_config  # noqa: E402
from ganimator.contact_fix import fix_samples  # noqa: E402
from ganimator.dataset import MotionDataset  # noqa: E402
from ganimator.edit import KeyFrames, read_clip, transfer_style  # noqa: E402
from ganimator.generate import load_run  # noqa: E402
from ganimator.metrics import Scorer  # noqa: E402
from ganimator.contact_fix import skating  # noqa: E402
from ganimator.naturalness import CONTACT, kinematics  # noqa: E402
from ganimator.run_hooks import train  # noqa: E402


def trained(out: Path, name: str, data: MotionDataset, iters: int, *overrides: str):
    """The run `name`, trained now unless a finished one is there (of the same budget)."""
    run_dir = out / name
    try:
        run = load_run(run_dir)
    except (FileNotFoundError, ValueError):
        pass
    else:
        if run.cfg.scheduling.train_data_iter != iters:
            sys.exit(f"{run_dir} was trained {run.cfg.scheduling.train_data_iter} iterations a stage, not {iters}: "
                     "choose another --out")
        return run
    data.save(out / f"{name}.npz")
    cfg = load_config([f"npz_filename={out / f'{name}.npz'}", f"run_dir={run_dir}", f"train_data_iter={iters}",
                       f"validate_every={iters}", "clearml=off", "progress=false", "artifact_samples=0", *overrides])
    print(f"training {name} ({iters} iterations a stage)", flush=True)
    train(cfg)
    return load_run(run_dir)


def per_clip(scores: dict, clips: int) -> list[dict]:
    """Scorer's values split by clip (they come clip after clip) and averaged."""
    return [{k: v.chunk(clips)[c].mean().item() for k, v in scores.items()} for c in range(clips)]


def mixing(out, clips, iters, samples) -> list[str]:
    walk = MotionDataset.from_bvh(clips / "Walk-In-Circle.bvh")
    mixed = MotionDataset.from_bvhs([clips / "Walk-In-Circle.bvh", clips / "Salsa-Dancing-6.bvh"])
    scorer = Scorer(mixed)
    rows = ["| model | coverage of the walk | coverage of the salsa | global diversity (walk, salsa) |",
            "| --- | --- | --- | --- |"]
    for name, data in (("walk", walk), ("walk+salsa", mixed)):
        run = trained(out, name, data, iters)
        a, b = per_clip(scorer(run.generate(2 * mixed.num_frames, samples)), 2)
        rows.append(f"| {name} | {a['coverage']:.2f} | {b['coverage']:.2f} | "
                    f"{a['global_diversity']:.2f}, {b['global_diversity']:.2f} |")
    return rows


def style(out, clips, iters) -> list[str]:
    run = trained(out, "proud", MotionDataset.from_bvh(clips / "proud.bvh"), iters)
    content, start = read_clip(run, clips / "normal.bvh")
    styled = transfer_style(run, content)
    both = MotionDataset.from_bvhs([clips / "proud.bvh", clips / "normal.bvh"])
    scorer = Scorer(both)
    got, own = per_clip(scorer(styled), 2), per_clip(scorer(content[None]), 2)
    (path, _), (want, _) = run.dataset.clips[0].decode(styled[0]), run.dataset.clips[0].decode(content)
    stray = (path.root_positions - want.root_positions)[:, [0, 2]].norm(dim=-1)
    walked = want.root_positions[1:, [0, 2]].sub(want.root_positions[:-1, [0, 2]]).norm(dim=-1).sum()
    return ["| motion | patch cost to proud (style) | patch cost to normal (content) |", "| --- | --- | --- |",
            f"| normal, as recorded | {own[0]['global_diversity']:.2f} | {own[1]['global_diversity']:.2f} |",
            f"| normal in proud's style | {got[0]['global_diversity']:.2f} | {got[1]['global_diversity']:.2f} |",
            "", f"Root path of the result against normal's: {stray.mean():.3f} m on average, {stray.max():.3f} m "
            f"at most, over a path of {walked:.2f} m."]


def keyframes(out, clips, iters) -> list[str]:
    run = trained(out, "walk-keys", MotionDataset.from_bvh(clips / "Walk-In-Circle.bvh", ratio=1 / 30), iters)
    d = run.dataset
    editor = KeyFrames(run)
    keys = editor.motion()
    write_bvh(out / "keys.bvh", motion_to_bvh(keys, d.skeleton))
    arm, k = d.skeleton.names.index("LeftArm"), keys.num_frames // 2
    before = keys.rotations[k, arm].clone()
    keys.rotations[k, arm] = before @ roma.rotvec_to_rotmat(torch.tensor([1.5708, 0.0, 0.0]))
    write_bvh(out / "keys-edited.bvh", motion_to_bvh(keys, d.skeleton))
    edited = editor.edit(out / "keys-edited.bvh")
    motion, _ = d.clips[0].decode(edited[0])
    at = editor.frame(k)
    got = motion.rotations[at, arm]
    angle = lambda a, b: roma.rotmat_geodesic_distance(a, b).rad2deg().item()  # noqa: E731
    quality = Scorer(d)(editor.edit(out / "keys.bvh"))
    return [f"Key frame {k} of {keys.num_frames} with LeftArm turned 90 degrees: at frame {at} of the result the arm "
            f"is {angle(got, keys.rotations[k, arm]):.0f} degrees from the edit and {angle(got, before):.0f} from "
            f"the unedited pose.",
            f"From the unedited key frames: coverage {quality['coverage'].mean():.2f}, "
            f"jitter {quality['jitter'].mean():.2f}x the clip's."]


def trajectory(out, clips, iters, samples) -> list[str]:
    walk = MotionDataset.from_bvh(clips / "Walk-In-Circle.bvh")
    base = trained(out, "walk", walk, iters)
    cond = trained(out, "walk-cond", walk, iters, f"trajectory_run={out / 'walk'}")
    scorer, length = Scorer(walk), 2 * walk.num_frames
    own, _ = read_clip(cond, clips / "Walk-In-Circle.bvh")
    cases = {"unconditional run": base.generate(length, samples),
             "conditional, sampled trajectories": cond.generate(length, samples),
             "conditional, the clip's trajectory": cond.generate(0, samples, trajectory=own)}
    rows = ["| samples | coverage | global diversity | jitter | largest root error (m) |", "| --- | --- | --- | --- | --- |"]
    for name, features in cases.items():
        q = {k: v.mean().item() for k, v in scorer(features).items()}
        error = "-"
        if "clip's" in name:
            got, _ = walk.clips[0].decode(features)
            error = f"{(got.root_positions - walk.clips[0].motion.root_positions.float()).abs().max():.1e}"
        rows.append(f"| {name} | {q['coverage']:.2f} | {q['global_diversity']:.2f} | {q['jitter']:.2f} | {error} |")
    return rows


def contact(out, clips, iters, samples) -> list[str]:
    rows = ["| clip | the clip's own (m/s) | samples before | after | time a sample |", "| --- | --- | --- | --- | --- |"]
    for name, clip in (("walk", "Walk-In-Circle.bvh"), ("proud", "proud.bvh")):
        run = trained(out, name, MotionDataset.from_bvh(clips / clip), iters)
        d = run.dataset
        real = d.clips[0].features.double()
        positions, planted = kinematics(real, d, 0), d.clips[0].decode(real)[1] > CONTACT
        own = skating(positions, planted, d.skeleton.contacts, d.fps).item()
        start = time.perf_counter()
        fix = fix_samples(d, run.generate(2 * d.num_frames, samples))
        seconds = (time.perf_counter() - start) / samples
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        rows.append(f"| {name} | {own:.3f} | {mean(fix.skating_before):.3f} | {mean(fix.skating_after):.3f} | "
                    f"{seconds:.1f} s ({2 * d.num_frames} frames) |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "bvh"), help="folder of the shared clips")
    p.add_argument("--iters", type=int, default=200, help="iterations a stage of every training")
    p.add_argument("--samples", type=int, default=16, help="samples each measure averages over")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="bench-applications")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out, clips = Path(args.out), Path(args.data)
    out.mkdir(parents=True, exist_ok=True)
    report = [f"# Applications at {args.iters} iterations a stage ({args.samples} samples a measure, "
              f"{args.threads} thread{'s' * (args.threads > 1)})"]
    sections = {"Motion mixing (Walk-In-Circle + Salsa-Dancing-6)": lambda: mixing(out, clips, args.iters, args.samples),
                "Style transfer (proud model, normal content)": lambda: style(out, clips, args.iters),
                "Key-frame editing (walk at 1/30)": lambda: keyframes(out, clips, args.iters),
                "Trajectory (walk)": lambda: trajectory(out, clips, args.iters, args.samples),
                "Foot-contact clean-up": lambda: contact(out, clips, args.iters, min(args.samples, 4))}
    for title, measure in sections.items():
        lines = ["", f"## {title}", "", *measure()]
        print("\n".join(lines), flush=True)
        report += lines
    text = "\n".join(report) + "\n"
    (out / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
