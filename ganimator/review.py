"""Reviewing motion in Rerun: generated samples and the real clip as animated 3-D skeletons.

Each clip becomes one entity, `skeletons/<name>`: its joint positions (forward kinematics, in
metres) on a `frame` timeline, drawn through an annotation context that holds the rig's joint
names and bones, with contact joints red while in contact. Clips stand side by side along x.
Whole sequences go in with `send_columns`, one call per clip.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rerun as rr
import torch

from .dataset import MotionDataset
from .generate import TrainedRun, load_run
from .skeleton import Skeleton

BONE, CONTACT = (200, 200, 200, 255), (230, 40, 40, 255)


@dataclass
class Clip:
    name: str
    positions: np.ndarray  # (T, J, 3) metres
    contacts: np.ndarray  # (T, C) booleans, for skeleton.contacts
    skeleton: Skeleton
    notes: str = ""  # markdown shown beside the clip: parameters, metrics


def clips_of_run(run: TrainedRun, name: str, samples: int = 1, length: int = 0, seed: int = 0,
                 notes: str = "", with_real: bool = False) -> list[Clip]:
    """`samples` generated motions of `length` frames (default: twice the clip), and optionally the real clip."""
    length = length or 2 * run.dataset.features.shape[-1]
    clips = [features_clip(run.dataset, f"{name}/sample-{k}", f, notes)
             for k, f in enumerate(run.generate(length, samples, seed))]
    return [features_clip(run.dataset, "real", run.dataset.features, "the training clip")] * with_real + clips


def features_clip(dataset: MotionDataset, name: str, features: torch.Tensor, notes: str = "") -> Clip:
    motion, contacts = dataset.decode(features)
    positions = motion.joint_positions(dataset.skeleton).numpy()
    return Clip(name, positions, contacts.numpy() > 0.5, dataset.skeleton, notes)


def log_clips(rec: rr.RecordingStream, clips: list[Clip], spacing: float = 1.5) -> None:
    key = lambda s: (s.rig, tuple(s.names), tuple(s.parents))  # noqa: E731 - runs load equal skeletons apart
    skeletons = {key(c.skeleton): c.skeleton for c in clips}
    class_of = {k: i for i, k in enumerate(skeletons)}
    rec.log("/", rr.ViewCoordinates.RIGHT_HAND_Y_UP, static=True)
    rec.log("/", rr.AnnotationContext([_class(k, s) for k, s in enumerate(skeletons.values())]), static=True)
    for index, clip in enumerate(clips):
        path = f"skeletons/{clip.name}"
        T, J, _ = clip.positions.shape
        placed = clip.positions + np.array([index * spacing, 0.0, 0.0])
        colors = np.tile(np.array(BONE, dtype=np.uint8), (T, J, 1))
        for c, joint in enumerate(clip.skeleton.contacts):
            colors[clip.contacts[:, c], joint] = CONTACT
        rec.log(path, rr.Points3D.from_fields(keypoint_ids=np.arange(J), class_ids=[class_of[key(clip.skeleton)]],
                                              radii=[0.02]), static=True)
        rec.send_columns(path, indexes=[rr.TimeColumn("frame", sequence=np.arange(T))],
                         columns=rr.Points3D.columns(positions=placed.reshape(-1, 3),
                                                     colors=colors.reshape(-1, 4)).partition([J] * T))
        if clip.notes:
            rec.log(f"{path}/info", rr.TextDocument(clip.notes, media_type=rr.MediaType.MARKDOWN), static=True)


class ValidationRecording:
    """A trainer callback: every validation's samples as skeletons in `run_dir/validation.rrd`, under
    `skeletons/stage-K/step-N/`. A resumed run starts a new file rather than overwrite the first."""

    def __init__(self, dataset: MotionDataset, run_dir: Path):
        self.dataset, self.run_dir = dataset, Path(run_dir)
        self.rec: rr.RecordingStream | None = None
        self.path: Path | None = None

    def __call__(self, event) -> None:
        if event.samples is None or not len(event.samples):
            return
        if self.rec is None:
            self.path = self.run_dir / "validation.rrd"
            if self.path.exists():
                self.path = self.run_dir / f"validation-from-{event.step}.rrd"
            self.rec = rr.RecordingStream("ganimator-validation")
            self.rec.save(self.path)
        notes = "\n".join(f"- {k}: {v:.4g}" for k, v in event.metrics.items() if "/" not in k)
        name = f"stage-{event.stage + 1}/step-{event.step:07d}"
        log_clips(self.rec, [features_clip(self.dataset, f"{name}/sample-{k}", f, f"**{name}**\n\n{notes}")
                             for k, f in enumerate(event.samples)])
        self.rec.flush()


def _class(class_id: int, skeleton: Skeleton) -> rr.ClassDescription:
    bones = [(j, p) for j, p in enumerate(skeleton.parents) if p >= 0]
    return rr.ClassDescription(
        info=rr.AnnotationInfo(id=class_id, label=skeleton.rig),
        keypoint_annotations=[rr.AnnotationInfo(id=j, label=n) for j, n in enumerate(skeleton.names)],
        keypoint_connections=bones)


def write_recording(clips: list[Clip], mode: str = "save", path: str | Path = "review.rrd") -> rr.RecordingStream:
    """mode 'save' writes an .rrd, 'spawn' opens the native viewer, 'serve' serves the web viewer."""
    rec = rr.RecordingStream("ganimator-review")
    if mode == "save":
        rec.save(path)
    elif mode == "spawn":
        rec.spawn()
    elif mode == "serve":
        url = rec.serve_grpc()
        rr.serve_web_viewer(connect_to=url, open_browser=False)
    else:
        raise ValueError(f"unknown review mode {mode!r}: save, spawn or serve")
    log_clips(rec, clips)
    rec.flush()
    return rec


def review_dirs(paths: list[Path], samples: int, length: int, seed: int) -> list[Clip]:
    """Clips for run or export folders, or a sweep's export folder (every rank in it)."""
    runs = []
    for path in map(Path, paths):
        ranks = sorted((p for p in path.iterdir() if (p / "checkpoint.pt").is_file()), key=lambda p: p.name)
        runs += ranks if not (path / "checkpoint.pt").is_file() else [path]
    if not runs:
        raise FileNotFoundError(f"no trained run or export in {', '.join(map(str, paths))}")
    clips = []
    for k, run_dir in enumerate(runs):
        run = load_run(run_dir)
        metrics_file = run_dir / "metrics.json"
        notes = _notes(run_dir, json.loads(metrics_file.read_text()) if metrics_file.is_file() else {})
        name = f"{run_dir.parent.name}-{run_dir.name}" if run_dir.name.isdigit() else run_dir.name
        clips += clips_of_run(run, name, samples, length, seed, notes, with_real=k == 0)
    return clips


def _notes(run_dir: Path, metrics: dict) -> str:
    lines = [f"**{run_dir}**", ""]
    lines += [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}"
              for k, v in metrics.get("params", {}).items()]
    lines += [f"- **{k}**: {metrics[k]:.4g}" for k in ("score", "coverage", "global_diversity", "local_diversity")
              if isinstance(metrics.get(k), float)]
    return "\n".join(lines)
