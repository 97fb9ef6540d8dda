"""Command-line entry points: ganimator-{procedural,preprocess,train,generate,evaluate,review}."""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from fractions import Fraction
from pathlib import Path

from .bvh import motion_to_bvh, write_bvh
from .config import load_config, npz_filename, to_yaml
from .dataset import MotionDataset
from .errors import UserError
from .errors import run_command as _run
from .generate import GenerationError, TrainedRun, free_path, load_run, new_or_empty
from .rundir import RunDir
from .skeleton import RIGS


def procedural() -> None:
    p = argparse.ArgumentParser(description="Write a procedural dance clip on the 24-joint Mixamo skeleton.")
    p.add_argument("out", help="BVH file to write")
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from .procedural import procedural_dance

    def main():
        write_bvh(args.out, procedural_dance(args.seconds, seed=args.seed))
        print(f"wrote {args.out}")

    _run(main)


def preprocess() -> None:
    p = argparse.ArgumentParser(description="BVH clip(s) -> training npz (features, pyramid, noise amplitudes, z*). "
                                            "Two or more clips of one skeleton train one model that mixes them.")
    p.add_argument("bvh", nargs="+", help="one clip, or several of one skeleton for motion mixing")
    p.add_argument("out", help="npz file to write")
    p.add_argument("--rig", choices=["auto"] + [r.name for r in RIGS], default="auto",
                   help="joint subset and contact joints (auto: detected from joint names)")
    p.add_argument("--seed", type=int, default=0, help="seed of z*, the reconstruction noise")
    p.add_argument("--ratio", type=_ratio, default="1/5",
                   help="the coarsest level's share of the clip, e.g. 1/5 (the default) or 1/30 for key-frame editing")
    args = p.parse_args()

    def main():
        replacing = _check_npz_output(args.out, args.bvh)
        rig = None if args.rig == "auto" else next(r for r in RIGS if r.name == args.rig)
        data = MotionDataset.from_bvhs(args.bvh, rig, seed=args.seed, ratio=args.ratio)
        if replacing:
            print(f"note: replacing {args.out}, an earlier ganimator-preprocess output", file=sys.stderr)
        data.save(args.out)
        s = data.skeleton
        print(f"rig {s.rig}, {s.num_joints} joints, {len(s.contacts)} contacts, {data.layout.channels} channels, "
              f"{data.fps:g} fps")
        for path, clip in zip(args.bvh, data.clips):
            print(f"{path}: {clip.num_frames} frames, levels {clip.level_lengths}")
        print(f"wrote {args.out}")

    _run(main)


def _check_npz_output(out: str, inputs: list[str]) -> bool:
    """Refuse an output that would destroy something: an input, a BVH (`a.bvh b.bvh` with the npz
    forgotten), any file that is not an earlier output. Returns whether an earlier npz is replaced."""
    path = Path(out)
    if path.suffix.lower() == ".bvh":
        raise UserError(f"{out} is a BVH file, not the npz to write: name the output last")
    duplicate = next((a for i, a in enumerate(inputs) if any(_same_file(a, b) for b in inputs[:i])), None)
    if duplicate:
        raise UserError(f"{duplicate} is given twice: mixing a clip with itself only weighs it double")
    if any(_same_file(out, a) for a in inputs):
        raise UserError(f"{out} is one of the input clips, not the npz to write: name a new output last")
    if not path.exists():
        return False
    if path.is_dir():
        raise IsADirectoryError(f"{out} is a folder: name the npz file to write")
    try:
        MotionDataset.load(path)
    except UserError:
        raise UserError(f"{out} exists and is not a ganimator-preprocess npz: it is left alone; name a new "
                        "output") from None
    return True


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).samefile(b)
    except OSError:  # one does not exist: not the same
        return False


def _ratio(text: str) -> float:
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a fraction such as 1/30") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must lie between 0 and 1")
    return value


def train() -> None:
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print("usage: ganimator-train [config=FILE.yaml] [key=value ...] [--print-config]\n\n"
              "Trains every stage of GANimator on a ganimator-preprocess npz, e.g.\n"
              "  ganimator-train npz_filename=clip.npz train_data_iter=2000\n"
              "  ganimator-train npz_filename=clip.npz preset=fast            # a budget of minutes, not hours\n"
              "Keys may be bare (lambda_rec=20) or qualified (optim.lambda_rec=20); --print-config\n"
              "prints every key with its value. Continue a stopped run with run_dir=DIR resume=true.")
        return
    args = [a for a in sys.argv[1:] if a != "--print-config"]

    def main():
        from .run_hooks import RunOutputs, build_trainer
        from .tracking import Tracking

        cfg = load_config(_with_run_config(args))
        if "--print-config" in sys.argv:
            print(to_yaml(cfg), end="")
            return
        if not cfg.util.run_dir:
            cfg.util.run_dir = f"runs/{Path(npz_filename(cfg)).stem}-{datetime.now():%Y%m%d-%H%M%S}"
        trainer = build_trainer(cfg)
        print(f"device: {trainer.device}" + (" (device=auto)" if cfg.util.device == "auto" else "")
              + (f", {trainer.precision}" if cfg.util.precision != "fp32" else "")
              + (" (precision=auto)" if cfg.util.precision == "auto" else ""), flush=True)
        print(f"stages: {trainer.schedule.describe()}", flush=True)
        if cfg.data.root_scale:
            units = trainer.dataset.layout.root_units
            print(f"root: height centred at {units.offset:.3g}, root block x{units.scale:.3g} "
                  f"(root_scale={cfg.data.root_scale:g})", flush=True)
        with Tracking(cfg, len(trainer.stages), tags=["train"]) as tracking:
            result = trainer.fit([RunOutputs(), tracking])
        state = "finished" if result.finished else "stopped"
        print(f"{state}: {result.run_dir} (generate with: ganimator-generate {result.run_dir})")

    _run(main)


def _with_run_config(args: list[str]) -> list[str]:
    """`run_dir=D resume=true` continues D with D's own config, plus any explicit overrides."""
    values = dict(a.partition("=")[::2] for a in args)
    run_dir = values.get("run_dir", values.get("util.run_dir"))
    resume = values.get("resume", values.get("util.resume", "false")).lower() == "true"
    if resume and run_dir and RunDir(run_dir).config.is_file():
        return [f"config={RunDir(run_dir).config}", f"npz_filename={RunDir(run_dir).data}", *args]
    return args


def generate() -> None:
    args = _generate_parser().parse_args()

    def main():
        samples = _check_generate_args(args)
        run = load_run(args.run_dir)
        if args.fix_contact and not run.dataset.skeleton.contacts:  # before anything is written
            raise GenerationError(f"--fix-contact: {args.run_dir}'s rig ({run.dataset.skeleton.rig}) has no contact "
                                  "joints, so there are no feet to pin")
        if args.write_keyframes:
            return _write_keyframes(run, args.write_keyframes, args.clip)
        out = _generate_out_dir(args)
        outputs = [_generate_motion(run, args, samples)]
        if args.reconstruct:
            outputs += [(run.reconstruct(k), "reconstruction" if k == 0 else f"reconstruction-clip{k}", c.begin_xz)
                        for k, c in enumerate(run.dataset.clips)]
        _write_outputs(run, outputs, out, args.fix_contact)  # after all are computed: a failed one writes nothing

    _run(main)


def _generate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Generate new motion from a trained run (or exported) folder: at random, "
                                            "from edited key frames, in the style of the run's clip, or along a "
                                            "root trajectory (a conditional run).")
    p.add_argument("run_dir")
    p.add_argument("--length", type=int, help="frames per random sample (default 600); the other modes take the "
                                              "length of their input")
    p.add_argument("--samples", type=int, help="default 5 at random, 1 from key frames or content (which give one "
                                               "motion unless --detail-noise varies it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--detail-noise", type=float, default=0.0, help="noise scale on levels above the coarsest")
    p.add_argument("--out", help="output folder, new or empty (default: RUN_DIR/generated, or generated-2... "
                                 "beside an earlier one)")
    p.add_argument("--reconstruct", action="store_true", help="also write the reconstruction of the clip from z*")
    p.add_argument("--fix-contact", action="store_true",
                   help="also write each motion with its feet pinned while in contact (inverse kinematics), as "
                        "<name>-fixed.bvh, and print the foot skating before and after")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--keyframes", metavar="FILE.bvh",
                        help="edited key frames: the coarsest level as --write-keyframes writes it (a run trained "
                             "with ganimator-preprocess --ratio 1/30 has sparse ones); motion of the clip's length")
    source.add_argument("--content", metavar="FILE.bvh",
                        help="style transfer: a clip of the run's skeleton whose coarse motion is kept, in the style "
                             "of the run's clip, for the content's length")
    source.add_argument("--trajectory", metavar="FILE.bvh",
                        help="a conditional run follows this clip's root rotation and path, for its length "
                             "(without it: a trajectory sampled from the run's trajectory_run)")
    source.add_argument("--write-keyframes", metavar="FILE.bvh",
                        help="write the clip's coarsest level as key frames to edit, and nothing else")
    p.add_argument("--clip", type=int, help="the training clip whose key frames --write-keyframes and --keyframes "
                                            "edit, counted from 0 (a run that mixes clips must say)")
    return p


def _check_generate_args(args: argparse.Namespace) -> int:
    """Refuse option combinations that would be ignored or give one motion repeated, before the run
    is loaded. Returns the number of samples."""
    if not 0 <= args.seed < 2**63 or not args.detail_noise >= 0:
        raise GenerationError(f"--seed must lie in [0, 2**63) and --detail-noise must not be negative, "
                              f"got {args.seed} and {args.detail_noise}")
    edit = args.keyframes or args.content
    if args.length is not None and (edit or args.trajectory or args.write_keyframes):
        raise GenerationError("--length sets random samples' length; with --keyframes, --content or --trajectory "
                              "the motion has its input's length")
    if args.clip is not None and not (args.keyframes or args.write_keyframes):
        raise GenerationError("--clip names the clip whose key frames --keyframes or --write-keyframes edit")
    samples = args.samples if args.samples is not None else 1 if edit else 5
    if edit and samples > 1 and args.detail_noise == 0:
        raise GenerationError(f"--samples {samples} from one {'key-frame file' if args.keyframes else 'content clip'} "
                              "without --detail-noise would be one motion repeated: add --detail-noise 1")
    return samples


def _write_keyframes(run: TrainedRun, path: str, clip: int | None) -> None:
    """The clip's coarsest level as a BVH of key frames to edit and pass back with --keyframes."""
    from .edit import KeyFrames

    if Path(path).exists():
        raise FileExistsError(f"--write-keyframes {path} exists: choose a new file")
    editor = KeyFrames(run, clip)
    keys = editor.motion()
    write_bvh(path, motion_to_bvh(keys, run.dataset.skeleton))
    print(f"wrote {path}: {keys.num_frames} key frames, one every {editor.spacing:.3g} frames; edit them and run "
          "--keyframes")


def _generate_out_dir(args: argparse.Namespace) -> Path:
    out = Path(args.out) if args.out else free_path(Path(args.run_dir) / "generated")
    if not new_or_empty(out):
        raise FileExistsError(f"--out {out} exists and is not an empty folder: choose a new one")
    return out


def _generate_motion(run: TrainedRun, args: argparse.Namespace, samples: int) -> tuple:
    """(features, file name prefix, start) of the motion asked for: edited key frames, the content
    clip in the run's style, or samples (along a trajectory where given). `start` is where the root
    begins in x and z: the input's, or None for the first training clip's."""
    from .edit import KeyFrames, read_clip, transfer_style

    common = dict(samples=samples, seed=args.seed, detail_noise=args.detail_noise)
    if args.keyframes:
        return KeyFrames(run, args.clip).edit(args.keyframes, **common), "edited", None
    if args.content:
        content, start = read_clip(run, args.content)  # the content's path, from where it starts
        return transfer_style(run, content, **common), "styled", start
    trajectory, start = read_clip(run, args.trajectory) if args.trajectory else (None, None)
    return run.generate(args.length or 600, trajectory=trajectory, **common), "sample", start


def _write_outputs(run: TrainedRun, outputs: list[tuple], out: Path, fix_contact: bool) -> None:
    """Each output's BVH files, and with fix_contact their feet-pinned copies; prints every path."""
    for features, prefix, start in outputs:
        for path in run.write(features, out, prefix, start):
            print(path)
        if fix_contact:
            paths, fix = run.write_fixed(features, out, prefix, start)
            print(*paths, sep="\n")
            print(f"{prefix}: {fix.summary()} (pinned by inverse kinematics)")


def evaluate() -> None:
    p = argparse.ArgumentParser(description="Coverage, global and local diversity of a trained run, as the original "
                                            "evaluates them (200 samples of twice the clip's length), and the "
                                            "samples' jitter and foot skating relative to the clip's.")
    p.add_argument("run_dir")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--length-factor", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=8, help="samples scored at once (memory grows with it)")
    p.add_argument("--noise-scale", type=float, default=1.0,
                   help="multiply the sampling noise (above 1: the model's motion with amplified noise)")
    p.add_argument("--levels", action="store_true",
                   help="also score the same samples at every level of the pyramid, each against the clip at that "
                        "level: which stage wins or loses quality")
    args = p.parse_args()

    def main():
        from .generate import load_run

        run = load_run(args.run_dir)
        finest = run.dataset.num_levels - 1
        levels = run.evaluate_levels(args.samples, args.length_factor, args.seed, args.batch, progress=True,
                                     noise_scale=args.noise_scale, levels=None if args.levels else [finest])
        if args.levels:
            print(level_table(run, levels))
        q = levels[finest]
        record = {**q.as_dict(), **run.sampling(args.samples, args.length_factor, args.seed, args.noise_scale)}
        with open(RunDir(args.run_dir).evaluations, "a") as f:  # appended: an export's metrics.json is not ours
            f.write(json.dumps(record) + "\n")
        print(f"coverage {q.coverage * 100:.1f}%  global diversity {q.global_diversity:.3f}  "
              f"local diversity {q.local_diversity:.3f}  reconstruction L1 {q.rec_error:.4f}  "
              f"jitter {q.jitter:.2f}x  foot skating {q.foot_skating:.2f}x (of the clip's)  "
              f"penetration {q.penetration:.2f} (contact bands below the clip's floor)  "
              f"ground contact {q.ground_contact:.2f}x  foot motion {q.foot_motion:.2f}x (of the clip's)")

    _run(main)


def level_table(run: TrainedRun, levels: dict) -> str:
    """`ganimator-evaluate --levels`' table: a row per level, with the stage that trained it."""
    from .config import stage_levels

    stage_of = {l: k + 1 for k, stage in enumerate(stage_levels(run.cfg.model, run.dataset.num_levels)) for l in stage}
    lengths = run.dataset.clips[0].level_lengths
    rows = ["level  stage  frames  coverage  global div  local div  rec L1   jitter  foot skating  penetration  "
            "ground contact  foot motion"]
    for l, q in levels.items():
        rows.append(f"{l:5d}  {stage_of[l]:5d}  {lengths[l]:6d}  {q.coverage * 100:7.1f}%  {q.global_diversity:10.3f}  "
                    f"{q.local_diversity:9.3f}  {q.rec_error:6.4f}  {q.jitter:5.2f}x  {q.foot_skating:11.2f}x  "
                    f"{q.penetration:11.2f}  {q.ground_contact:13.2f}x  {q.foot_motion:10.2f}x")
    return "\n".join(rows)


def review() -> None:
    args = _review_parser().parse_args()

    def main():
        try:
            from .recording import write_recording
            from .review_server import review_dirs

            clips = review_dirs(args.paths, args.samples, args.length, args.seed)
            if args.serve:
                return _serve_review(clips, args.host, args.grpc_port, args.web_port)
            mode = "spawn" if args.spawn else "save"
            write_recording(clips, mode, args.save)
        except KeyboardInterrupt:  # nothing to keep (not _run's checkpoint message)
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        print(f"{len(clips)} clips" + (f" written to {args.save}" if mode == "save" else f" sent ({mode})"))

    _run(main)


def _review_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Show trained runs' or exports' generated motions, and BVH files, beside "
                                            "the real clip as animated skeletons in Rerun.")
    p.add_argument("paths", nargs="+", help="run folders, export folders, a sweep's export folder (all ranks), "
                                            "BVH files, or folders of BVH files (e.g. RUN/generated)")
    p.add_argument("--samples", type=int, default=1, help="generated motions per run")
    p.add_argument("--length", type=int, default=0, help="frames per motion (default: twice the clip)")
    p.add_argument("--seed", type=int, default=0)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--save", metavar="FILE.rrd", default="review.rrd", help="write a recording (the default)")
    mode.add_argument("--spawn", action="store_true", help="open the Rerun viewer")
    mode.add_argument("--serve", action="store_true",
                      help="serve the Rerun web viewer and the data until Ctrl-C (or SIGTERM)")
    serve = p.add_argument_group("--serve")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address both servers bind (default 127.0.0.1: this machine only; 0.0.0.0: every "
                            "interface, reachable by anyone on the network, without authentication)")
    serve.add_argument("--grpc-port", type=int, default=9876, help="the data (gRPC) port (default 9876; 0: a free one)")
    serve.add_argument("--web-port", type=int, default=9090, help="the web viewer's port (default 9090; 0: a free one)")
    return p


def _serve_review(clips, host: str, grpc_port: int, web_port: int) -> None:
    import signal

    from .review_server import ReviewServer, ServeError

    # _run made SIGINT and SIGTERM raise KeyboardInterrupt, even where SIGINT came ignored.
    if not _is_loopback(host):
        print(f"warning: --host {host} serves the recording to every machine that can reach this one, "
              "without authentication", file=sys.stderr)
    try:
        server = ReviewServer(clips, host, grpc_port, web_port)
    except ServeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        print(f"{len(clips)} clips served: open {server.viewer_url}\n"
              f"  (data: {server.grpc_url}); Ctrl-C stops", flush=True)
        server.wait()  # returns only if the web viewer ends on its own: ServeError
    except KeyboardInterrupt:
        print("stopped serving", file=sys.stderr)
    except ServeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        server.close()


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
