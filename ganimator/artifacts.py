"""What a finished run leaves in its folder besides the checkpoint: sample motions (samples/) and
a recording of them beside the real clip (review.rrd)."""
from __future__ import annotations

from pathlib import Path

from .generate import load_run
from .recording import sample_clips, write_recording
from .rundir import RunDir


def write_run_results(run_dir: Path, samples: int, seed: int = 0) -> None:
    """A finished run's `samples` motions of twice the clip's length as BVH and npz in samples/, and
    review.rrd: them beside the real clip, for the Rerun viewer (nothing when samples is 0)."""
    if not samples:
        return
    run, folder = load_run(run_dir), RunDir(run_dir)
    features = run.generate(2 * run.dataset.num_frames, samples, seed)
    run.write(features, folder.samples)
    write_recording(sample_clips(run.dataset, folder.path.name, features, with_real=True), "save", folder.review)
