"""Motion in Rerun: generated samples, the real clip and BVH files as animated 3-D skeletons.

Each clip becomes one entity, `skeletons/<name>`: its joint positions (forward kinematics, in
metres) on a `frame` timeline, drawn through an annotation context that holds the rig's joint
names and bones, with contact joints red while in contact and footprints where they stood. Whole
sequences go in with `send_columns`, one call per clip. Every recording carries the layout it
opens on (`review_blueprint`): a 3-D view per group of clips (a run's samples side by side along
x), the notes beside them, the timeline playing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rerun as rr
import rerun.blueprint as rrb
import torch

from .bvh import BVHError, load_motion
from .dataset import MotionDataset
from .features import decode
from .kinematics import contact_labels
from .skeleton import Skeleton

# Joints light grey, bones blue (the class colour), a contact joint red while planted, where planted
# feet stood orange (footprints): red and orange appear only where the feet touch the ground.
JOINT, BONE, CONTACT, TRAIL = (225, 225, 225, 255), (70, 130, 230, 255), (255, 50, 30, 255), (255, 170, 0, 255)
TRAIL_FRAMES = 30  # a second of footprints at 30 fps
WIDEST = 8.0  # metres of a clip's travel that a 3-D view frames whole


@dataclass
class ReviewClip:
    """A motion as the viewer draws it: joint positions and planted contacts, with notes."""

    name: str
    positions: np.ndarray  # (T, J, 3) metres
    contacts: np.ndarray  # (T, C) booleans, for skeleton.contacts
    skeleton: Skeleton
    notes: str = ""  # markdown shown beside the clip: parameters, metrics


def sample_clips(dataset: MotionDataset, name: str, samples: torch.Tensor, notes: str = "",
                 with_real: bool = False) -> list[ReviewClip]:
    """Generated (N, C, T) `samples` as clips `<name>/sample-K`, starting where the first training
    clip starts, after the training clips if `with_real`."""
    clips = [features_clip(dataset, f"{name}/sample-{k}", f, notes, begin_xz=dataset.clips[0].begin_xz)
             for k, f in enumerate(samples)]
    real = [features_clip(dataset, "real" if len(dataset.clips) == 1 else f"real/{Path(c.source).stem}", c.features,
                          f"the training clip {c.source}", begin_xz=c.begin_xz) for c in dataset.clips]
    return real * with_real + clips


def features_clip(dataset: MotionDataset, name: str, features: torch.Tensor, notes: str = "", *,
                  begin_xz: torch.Tensor) -> ReviewClip:
    """(C, T) features of the dataset's skeleton as a clip whose root starts at `begin_xz`."""
    motion, contacts = decode(features, dataset.layout, begin_xz, dataset.fps)
    positions = motion.joint_positions(dataset.skeleton).numpy()
    return ReviewClip(name, positions, contacts.numpy() > 0.5, dataset.skeleton, notes)


def bvh_clip(path: str | Path, name: str) -> ReviewClip:
    """A BVH file as a clip, read as training reads a clip: the joints of the rig detected from its
    joint names, about 30 frames a second, contacts labelled by the rig's speed threshold."""
    skeleton, motion = load_motion(path)
    if motion.num_frames == 0:
        raise BVHError(path, None, "no frames to review")
    positions = motion.joint_positions(skeleton).numpy()
    contacts = contact_labels(motion, skeleton).numpy() > 0.5
    notes = f"**{path}**\n\n- rig: {skeleton.rig}\n- {motion.num_frames} frames at {motion.fps:.3g} fps"
    return ReviewClip(name, positions, contacts, skeleton, notes)


def log_clips(rec: rr.RecordingStream, clips: list[ReviewClip], spacing: float = 1.5) -> list[Group]:
    """Every clip as a skeleton on the `frame` timeline; returns the groups the viewer lays out
    (`review_blueprint`): a run's samples stand side by side along x in their group's view."""
    key = lambda s: (s.rig, tuple(s.names), tuple(s.parents))  # noqa: E731 - runs load equal skeletons apart
    skeletons = {key(c.skeleton): c.skeleton for c in clips}
    class_of = {k: i for i, k in enumerate(skeletons)}
    rec.log("/", rr.ViewCoordinates.RIGHT_HAND_Y_UP, static=True)
    rec.log("/", rr.AnnotationContext([_class(k, s) for k, s in enumerate(skeletons.values())]), static=True)
    groups: dict[str, Group] = {}
    for clip in clips:
        group = groups.setdefault(_group(clip.name), Group(_group(clip.name)))
        path = f"skeletons/{clip.name}"
        T, J, _ = clip.positions.shape
        placed = clip.positions + np.array([len(group.clips) * spacing, 0.0, 0.0])
        group.add(clip.name, placed, clip.notes)
        colors = np.tile(np.array(JOINT, dtype=np.uint8), (T, J, 1))
        for c, joint in enumerate(clip.skeleton.contacts):
            colors[clip.contacts[:, c], joint] = CONTACT
        # Joint names stay in the annotation context (hover shows them) but are not drawn: 25 labels
        # a skeleton hid the bones.
        rec.log(path, rr.Points3D.from_fields(keypoint_ids=np.arange(J), class_ids=[class_of[key(clip.skeleton)]],
                                              radii=[0.025], show_labels=False), static=True)
        frames = [rr.TimeColumn("frame", sequence=np.arange(T))]
        rec.send_columns(path, indexes=frames, columns=rr.Points3D.columns(
            positions=placed.reshape(-1, 3), colors=colors.reshape(-1, 4)).partition([J] * T))
        if clip.skeleton.contacts:
            trails, counts = _footprints(placed[:, clip.skeleton.contacts], clip.contacts)
            rec.log(f"{path}/footprints", rr.Points3D.from_fields(colors=[TRAIL], radii=[0.012]), static=True)
            rec.send_columns(f"{path}/footprints", indexes=frames,
                             columns=rr.Points3D.columns(positions=trails).partition(counts))
        if clip.notes:
            rec.log(f"{path}/info", rr.TextDocument(clip.notes, media_type=rr.MediaType.MARKDOWN), static=True)
    return list(groups.values())


@dataclass
class Group:
    """Clips shown in one 3-D view: a run's samples, the real clip, a folder of BVH files, a validation."""
    name: str
    clips: list[str] = field(default_factory=list)
    notes: str | None = None  # the entity of the first clip's notes
    lo: np.ndarray = field(default_factory=lambda: np.full(3, np.inf))
    hi: np.ndarray = field(default_factory=lambda: np.full(3, -np.inf))

    def add(self, name: str, positions: np.ndarray, notes: str) -> None:
        self.clips.append(name)
        if notes and self.notes is None:
            self.notes = f"skeletons/{name}/info"
        # The camera frames where the skeletons go over the whole clip (a walk in a circle stays in
        # view), all but the farthest 2% each way. Motion that travels further than WIDEST (an
        # under-trained model's samples drift off) would shrink to a dot: its first 3 s are framed.
        every = positions.reshape(-1, 3)
        lo, hi = np.percentile(every, 2, axis=0), np.percentile(every, 98, axis=0)
        if (hi - lo).max() > WIDEST:
            lo, hi = positions[:90].reshape(-1, 3).min(0), positions[:90].reshape(-1, 3).max(0)
        self.lo, self.hi = np.minimum(self.lo, lo), np.maximum(self.hi, hi)


def _group(name: str) -> str:
    return name.rsplit("/", 1)[0] if "/" in name else name


def _footprints(feet: np.ndarray, planted: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Per frame, where each contact joint stood while planted over the last TRAIL_FRAMES frames: a
    planted foot leaves one dot, a sliding one a streak. feet (T, C, 3), planted (T, C) booleans."""
    points, counts = [], []
    for t in range(len(feet)):
        window = slice(max(0, t - TRAIL_FRAMES + 1), t + 1)
        points.append(feet[window][planted[window]])
        counts.append(len(points[-1]))
    return np.concatenate(points).reshape(-1, 3), counts


def review_blueprint(groups: list[Group], fps: float = 30.0) -> rrb.Blueprint:
    """What the viewer opens on: a 3-D view per group taking the space (a grid; tabs, the newest
    shown, past 9), each named and framed on its skeletons; the notes in a narrow column; the frame
    timeline playing from frame 0 in a loop."""
    views = [rrb.Spatial3DView(origin=f"skeletons/{g.name}", name=g.name, eye_controls=_eye(g)) for g in groups]
    shown = rrb.Grid(*views) if len(views) <= 9 else rrb.Tabs(*views, active_tab=len(views) - 1)
    described = [g for g in groups if g.notes]
    if described:  # a run's notes open first: the real clip's only name its file
        first = next((k for k, g in enumerate(described) if g.name != "real"), 0)
        notes = rrb.Tabs(*[rrb.TextDocumentView(origin=g.notes, name=f"{g.name}: notes") for g in described],
                         active_tab=first)
        shown = rrb.Horizontal(shown, notes, column_shares=[4, 1])
    return rrb.Blueprint(shown, rrb.BlueprintPanel(state="collapsed"), rrb.SelectionPanel(state="collapsed"),
                         rrb.TimePanel(state="collapsed", timeline="frame", fps=fps, play_state="playing",
                                       loop_mode="all"),
                         auto_views=False)


def _eye(group: Group) -> rrb.EyeControls3D:
    """A camera in front of the group (+z, y up), a little above, far enough to see all of it."""
    centre, size = (group.lo + group.hi) / 2, group.hi - group.lo
    distance = max(size[0], 1.4 * size[1], 1.0) + size[2] / 2
    return rrb.EyeControls3D(kind="Orbital", look_target=centre, eye_up=[0, 1, 0],
                             position=centre + np.array([0.0, 0.35 * distance, distance]))


class ValidationRecording:
    """A trainer callback: every validation's samples as skeletons in `run_dir/validation.rrd`, under
    `skeletons/stage-K/step-N/`. A resumed run starts a new file rather than overwrite the first."""

    def __init__(self, dataset: MotionDataset, run_dir: Path):
        self.dataset, self.run_dir = dataset, Path(run_dir)
        self.rec: rr.RecordingStream | None = None
        self.path: Path | None = None
        self.groups: list[Group] = []

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
        notes = f"**{name}**: validation, {len(event.samples)} samples\n\n{notes}"
        self.groups += log_clips(self.rec, sample_clips(self.dataset, name, event.samples, notes))
        self.rec.send_blueprint(review_blueprint(self.groups))  # a view for each validation so far
        self.rec.flush()


def _class(class_id: int, skeleton: Skeleton) -> rr.ClassDescription:
    bones = [(j, p) for j, p in enumerate(skeleton.parents) if p >= 0]
    return rr.ClassDescription(
        info=rr.AnnotationInfo(id=class_id, label=skeleton.rig, color=BONE),
        keypoint_annotations=[rr.AnnotationInfo(id=j, label=n) for j, n in enumerate(skeleton.names)],
        keypoint_connections=bones)


def write_recording(clips: list[ReviewClip], mode: str = "save", path: str | Path = "review.rrd") -> rr.RecordingStream:
    """mode 'save' writes an .rrd, 'spawn' opens the native viewer. To serve the web viewer, use ReviewServer:
    the data is served only while its recording stream lives."""
    rec = rr.RecordingStream("ganimator-review")
    if mode == "save":
        _check_writable(Path(path))
        rec.save(path)
    elif mode == "spawn":
        rec.spawn()
    else:
        raise ValueError(f"unknown review mode {mode!r}: save or spawn (serve: ReviewServer)")
    rec.send_blueprint(review_blueprint(log_clips(rec, clips)))
    rec.flush()
    return rec


def _check_writable(path: Path) -> None:
    """An OSError naming `path` if it cannot be written: Rerun's own is a RuntimeError without the reason."""
    existed = path.exists()
    with open(path, "ab"):
        pass
    if not existed:
        path.unlink()
