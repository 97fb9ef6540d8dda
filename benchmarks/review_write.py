"""Time to write a Rerun review recording of 10 trials x 600 frames (decode, forward kinematics, logging).

    python benchmarks/review_write.py [clip.bvh] [--trials 10] [--frames 600]

Each "trial" is the clip resampled to 600 frames with a little noise, so no training is needed;
the work per clip is what `ganimator-review` does per generated motion. Without a clip it uses
the procedural demo clip.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ganimator.bvh import write_bvh
from ganimator.dataset import MotionDataset
from ganimator.procedural import procedural_dance
from ganimator.pyramid import resample
from ganimator.recording import features_clip, write_recording


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clip", nargs="?")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--frames", type=int, default=600)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(args.clip) if args.clip else Path(tmp) / "demo.bvh"
        if not args.clip:
            write_bvh(clip, procedural_dance(12.0))
        data = MotionDataset.from_bvh(clip)
        motions = [resample(data.clips[0].features[None], args.frames)[0] + 0.01 * torch.randn(1).item()
                   for _ in range(args.trials)]
        start = time.perf_counter()
        clips = [features_clip(data, f"trial-{k}/sample-0", m, begin_xz=data.clips[0].begin_xz)
                 for k, m in enumerate(motions)]
        prepared = time.perf_counter()
        write_recording(clips, "save", Path(tmp) / "review.rrd")
        done = time.perf_counter()
        size = (Path(tmp) / "review.rrd").stat().st_size
    print(f"{args.trials} trials x {args.frames} frames, {data.skeleton.num_joints} joints ({clip.name})")
    print(f"decode + forward kinematics {prepared - start:.2f} s, Rerun logging {done - prepared:.2f} s, "
          f"total {done - start:.2f} s, recording {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
