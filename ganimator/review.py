"""Reviewing motion in Rerun: generated samples, the real clip and BVH files as animated 3-D skeletons.

Each clip becomes one entity, `skeletons/<name>`: its joint positions (forward kinematics, in
metres) on a `frame` timeline, drawn through an annotation context that holds the rig's joint
names and bones, with contact joints red while in contact and footprints where they stood. Whole
sequences go in with `send_columns`, one call per clip. Every recording carries the layout it
opens on (`review_blueprint`): a 3-D view per group of clips (a run's samples side by side along
x), the notes beside them, the timeline playing.

`ReviewServer` serves the clips to a browser: Rerun's gRPC data server inside this process (alive as
long as its recording stream is), and the web viewer's files from a `rerun --serve-web` child, both
bound to one address, loopback by default.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rerun as rr
import rerun.blueprint as rrb
import torch

from .bvh import BVHError
from .dataset import MotionDataset
from .errors import UserError
from .features import contact_labels, decode, load_motion
from .generate import TrainedRun, load_run
from .metrics import Quality
from .rundir import RunDir
from .skeleton import Skeleton

# Joints light grey, bones blue (the class colour), a contact joint red while planted, where planted
# feet stood orange (footprints): red and orange appear only where the feet touch the ground.
JOINT, BONE, CONTACT, TRAIL = (225, 225, 225, 255), (70, 130, 230, 255), (255, 50, 30, 255), (255, 170, 0, 255)
TRAIL_FRAMES = 30  # a second of footprints at 30 fps
WIDEST = 8.0  # metres of a clip's travel that a 3-D view frames whole


@dataclass
class Clip:
    name: str
    positions: np.ndarray  # (T, J, 3) metres
    contacts: np.ndarray  # (T, C) booleans, for skeleton.contacts
    skeleton: Skeleton
    notes: str = ""  # markdown shown beside the clip: parameters, metrics


def clips_of_run(run: TrainedRun, name: str, samples: torch.Tensor, notes: str = "",
                 with_real: bool = False) -> list[Clip]:
    """A run's generated (N, C, T) `samples` as clips `<name>/sample-K`, after the real clip if `with_real`."""
    clips = [features_clip(run.dataset, f"{name}/sample-{k}", f, notes) for k, f in enumerate(samples)]
    clips_of_data = run.dataset.clips
    real = [features_clip(run.dataset, "real" if len(clips_of_data) == 1 else f"real/{Path(c.source).stem}", c.features,
                          f"the training clip {c.source}", c.begin_xz) for c in clips_of_data]
    return real * with_real + clips


def features_clip(dataset: MotionDataset, name: str, features: torch.Tensor, notes: str = "",
                  begin_xz: torch.Tensor | None = None) -> Clip:
    motion, contacts = decode(features, dataset.layout, dataset.begin_xz if begin_xz is None else begin_xz)
    positions = motion.joint_positions(dataset.skeleton).numpy()
    return Clip(name, positions, contacts.numpy() > 0.5, dataset.skeleton, notes)


def log_clips(rec: rr.RecordingStream, clips: list[Clip], spacing: float = 1.5) -> list[Group]:
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


def write_run_results(run_dir: Path, samples: int, seed: int = 0) -> None:
    """A finished run's `samples` motions of twice the clip's length as BVH and npz in samples/, and
    review.rrd: them beside the real clip, for the Rerun viewer (nothing when samples is 0)."""
    if not samples:
        return
    run, folder = load_run(run_dir), RunDir(run_dir)
    features = run.generate(2 * run.dataset.num_frames, samples, seed)
    run.write(features, folder.samples)
    write_recording(clips_of_run(run, folder.path.name, features, with_real=True), "save", folder.review)


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
        self.groups += log_clips(self.rec, [features_clip(self.dataset, f"{name}/sample-{k}", f, notes)
                                            for k, f in enumerate(event.samples)])
        self.rec.send_blueprint(review_blueprint(self.groups))  # a view for each validation so far
        self.rec.flush()


def _class(class_id: int, skeleton: Skeleton) -> rr.ClassDescription:
    bones = [(j, p) for j, p in enumerate(skeleton.parents) if p >= 0]
    return rr.ClassDescription(
        info=rr.AnnotationInfo(id=class_id, label=skeleton.rig, color=BONE),
        keypoint_annotations=[rr.AnnotationInfo(id=j, label=n) for j, n in enumerate(skeleton.names)],
        keypoint_connections=bones)


def write_recording(clips: list[Clip], mode: str = "save", path: str | Path = "review.rrd") -> rr.RecordingStream:
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


DEFAULT_HOST, DEFAULT_GRPC_PORT, DEFAULT_WEB_PORT = "127.0.0.1", 9876, 9090


class ServeError(UserError, RuntimeError):
    """The review could not be served (a port in use, the web viewer did not start or stopped)."""


class ReviewServer:
    """Clips served to the Rerun web viewer until `close()` (or the end of a `with` block).

    The gRPC data server runs in this process, owned by `self.rec`: Rerun shuts it down when that
    recording stream is dropped, so the server holds it. The SDK's own web-viewer server cannot be
    told an address (it binds 0.0.0.0), so the viewer's files come from the `rerun` CLI shipped
    with the SDK, `rerun --serve-web --bind HOST`, given the data server's URL (it then hosts no
    data server of its own). Port 0 picks a free port.
    """

    def __init__(self, clips: list[Clip], host: str = DEFAULT_HOST, grpc_port: int = DEFAULT_GRPC_PORT,
                 web_port: int = DEFAULT_WEB_PORT, start_timeout: float = 30.0):
        self.host = host
        self.web: subprocess.Popen | None = None
        self.rec: rr.RecordingStream | None = None
        grpc_port, web_port = _free_port(host, grpc_port, "gRPC"), _free_port(host, web_port, "web viewer")
        if grpc_port == web_port:
            raise ServeError(f"the gRPC and web viewer ports must differ (both {grpc_port})")
        self.grpc_port, self.web_port = grpc_port, web_port
        shown = _url_host(host)
        self.grpc_url = f"rerun+http://{shown}:{grpc_port}/proxy"
        self.viewer_url = f"http://{shown}:{web_port}/?url={urllib.parse.quote(self.grpc_url, safe='')}"
        self._web_log = tempfile.TemporaryFile()  # the child's messages, read if it fails (a pipe could fill up)
        try:
            self.rec = rr.RecordingStream("ganimator-review")
            # The page comes from the web port; its requests to the gRPC port must pass CORS.
            origins = [f"http://{h}:{web_port}" for h in dict.fromkeys([shown, *_other_names(host)])]
            self.rec.set_sinks(rr.GrpcServerSink(host, grpc_port, cors_allow_origin=origins))
            _wait_listening(host, grpc_port, start_timeout, lambda: None, "the gRPC data server")
            self.rec.send_blueprint(review_blueprint(log_clips(self.rec, clips)))
            self.rec.flush()
            # Its own session: a Ctrl-C in the terminal reaches this process, which stops the child.
            self.web = subprocess.Popen(
                [_rerun_cli(), "--serve-web", "--bind", host, "--web-viewer-port", str(web_port), self.grpc_url],
                stdin=subprocess.DEVNULL, stdout=self._web_log, stderr=subprocess.STDOUT,
                start_new_session=True)
            _wait_listening(host, web_port, start_timeout, self._web_exited, "the web viewer")
        except BaseException:
            self.close()
            raise

    def _web_exited(self) -> None:
        if self.web is not None and self.web.poll() is not None:
            self._web_log.seek(0)
            err = self._web_log.read().decode(errors="replace").strip().splitlines()
            err = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in err]  # no terminal colours
            last = next((line for line in reversed(err) if "ERROR" in line), err[-1] if err else "")
            raise ServeError(f"the Rerun web viewer exited with code {self.web.returncode}"
                             + (f": {last.strip()}" if last else ""))

    def wait(self) -> None:
        """Block until the web viewer ends (an error: ServeError); Ctrl-C or a signal handler ends it sooner."""
        assert self.web is not None
        self.web.wait()
        self._web_exited()

    def close(self) -> None:
        """Stop the web viewer and the data server; safe to call twice."""
        web, self.web = self.web, None
        if web is not None:
            if web.poll() is None:
                web.terminate()
                try:
                    web.wait(5)
                except subprocess.TimeoutExpired:
                    web.kill()
                    web.wait()
        rec, self.rec = self.rec, None
        if rec is not None:
            rec.disconnect()
        self._web_log.close()

    def __enter__(self) -> ReviewServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _rerun_cli() -> str:
    """The `rerun` executable shipped with the SDK (as `python -m rerun_cli` finds it), else on PATH."""
    if os.environ.get("RERUN_CLI_PATH"):
        return os.environ["RERUN_CLI_PATH"]
    try:
        import rerun_cli

        base = Path(rerun_cli.__file__).parent
        for candidate in (base / "Rerun.app" / "Contents" / "MacOS" / "Rerun", base / "rerun", base / "rerun.exe"):
            if candidate.is_file():
                return str(candidate)
    except ImportError:
        pass
    found = shutil.which("rerun", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if not found:
        raise ServeError("the `rerun` command (from rerun-sdk) was not found: it serves the web viewer")
    return found


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _free_port(host: str, port: int, what: str) -> int:
    """`port` if it can be bound on `host`, a free one if it is 0; else ServeError."""
    try:
        with socket.socket(_family(host), socket.SOCK_STREAM) as s:
            # As the servers bind: without it, a port our last --serve just closed (its connections in
            # TIME_WAIT for up to a minute) reads as taken although the servers could take it.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            return s.getsockname()[1]
    except OSError as e:
        hint = " (choose another with --grpc-port / --web-port, or 0 for a free one)" if e.errno == 98 else ""
        raise ServeError(f"cannot serve the {what} on {host} port {port}: {e.strerror}{hint}") from None


def _url_host(host: str) -> str:
    """How a URL names `host`: bound to every interface, this machine's name; IPv6 in brackets."""
    if host in ("", "0.0.0.0", "::"):
        host = socket.getfqdn()
        host = socket.gethostname() if host.startswith("localhost") else host
    return f"[{host}]" if ":" in host else host


def _other_names(host: str) -> list[str]:
    """Other names a browser may use for a wildcard `host` (the page's origin must be allowed)."""
    return [socket.gethostname(), "127.0.0.1", "localhost"] if host in ("", "0.0.0.0", "::") else []


def _wait_listening(host: str, port: int, timeout: float, check, what: str) -> None:
    target = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    deadline = time.monotonic() + timeout
    while True:
        check()
        try:
            socket.create_connection((target, port), timeout=1).close()
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ServeError(f"{what} did not start listening on {host} port {port} within {timeout:.0f} s")
        time.sleep(0.1)


class ReviewError(UserError, FileNotFoundError):
    """A path given to review that is not a run, an export, a sweep's exports or BVH; it names the path.
    A FileNotFoundError too, as review reported such paths before."""


def review_dirs(paths: list[Path], samples: int, length: int, seed: int) -> list[Clip]:
    """Clips for every path, in order: a run or export folder (its generated motions; the real clip
    comes before the first run's), a sweep's export folder (every rank in it), a BVH file (one clip
    named after the file) or a folder of BVH files that is not a run, e.g. a run's generated/ (every
    *.bvh in it, sorted, as `<folder>/<stem>`). Every path is checked, and every BVH read, before
    any run generates: a path that is none of these is a ReviewError, a BVH that does not parse a
    BVHError, each naming the file. Clips that would share a name get -2, -3, ... after it."""
    plan = [entry for path in map(Path, paths) for entry in _review_entries(path)]
    bvh = {k: bvh_clip(path, name) for k, (kind, path, name) in enumerate(plan) if kind == "bvh"}
    clips, first_run = [], True
    for k, (kind, run_dir, _) in enumerate(plan):
        if kind == "bvh":
            clips.append(bvh[k])
            continue
        run = load_run(run_dir)
        notes = _notes(run_dir, _metrics(run_dir))
        name = f"{run_dir.parent.name}-{run_dir.name}" if run_dir.name.isdigit() else run_dir.name
        features = run.generate(length or 2 * run.dataset.num_frames, samples, seed)
        clips += clips_of_run(run, name, features, notes, with_real=first_run)
        first_run = False
    return _unique_names(clips)


def _review_entries(path: Path) -> list[tuple[str, Path, str]]:
    """What one review path holds: ("run", folder, "") for each run or export, ("bvh", file, clip
    name) for each BVH file."""
    if path.is_file():
        if path.suffix.lower() == ".bvh":
            return [("bvh", path, rr.escape_entity_path_part(path.stem))]
        raise ReviewError(f"{path} is not a .bvh file, a run or export folder, or a sweep's export folder")
    if not path.is_dir():
        raise ReviewError(f"{path}: no such file or folder")
    folder = RunDir(path)
    if folder.checkpoint.is_file():
        return [("run", path, "")]
    if folder.config.is_file():
        raise ReviewError(f"{path} is a run folder without {RunDir.CHECKPOINT} yet: nothing trained to review")
    ranks = sorted((p for p in path.iterdir() if RunDir(p).checkpoint.is_file()), key=lambda p: p.name)
    files = sorted((p for p in path.iterdir() if p.suffix.lower() == ".bvh" and p.is_file()), key=lambda p: p.name)
    if not ranks and not files:
        raise ReviewError(f"no trained run or export, and no .bvh file, in {path}")
    part = rr.escape_entity_path_part(path.resolve().name or "bvh")
    return [("run", p, "") for p in ranks] + [("bvh", p, f"{part}/{rr.escape_entity_path_part(p.stem)}")
                                              for p in files]


def bvh_clip(path: str | Path, name: str) -> Clip:
    """A BVH file as a clip, read as training reads a clip: the joints of the rig detected from its
    joint names, about 30 frames a second, contacts labelled by the rig's speed threshold."""
    skeleton, motion = load_motion(path)
    if motion.num_frames == 0:
        raise BVHError(path, None, "no frames to review")
    positions = motion.joint_positions(skeleton).numpy()
    contacts = contact_labels(motion, skeleton).numpy() > 0.5
    notes = f"**{path}**\n\n- rig: {skeleton.rig}\n- {motion.num_frames} frames at {motion.fps:.3g} fps"
    return Clip(name, positions, contacts, skeleton, notes)


def _unique_names(clips: list[Clip]) -> list[Clip]:
    """Two clips of one name would draw into one entity: later ones get -2, -3, ... after it."""
    taken: set[str] = set()
    for clip in clips:
        name, n = clip.name, 1
        while name in taken:
            n += 1
            name = f"{clip.name}-{n}"
        clip.name = name
        taken.add(name)
    return clips


def _metrics(run_dir: Path) -> dict:
    """An export's metrics.json, else the newest ganimator-evaluate result, else nothing."""
    run = RunDir(run_dir)
    if run.metrics.is_file():
        return json.loads(run.metrics.read_text())
    lines = run.evaluations.read_text().splitlines() if run.evaluations.is_file() else []
    return json.loads(lines[-1]) if lines else {}


def _notes(run_dir: Path, metrics: dict) -> str:
    """The run's parameters and its scores, each block saying what measured it: an export's numbers
    come from the retrain's final evaluation, its sweep's from the trial's validation during the
    search (fewer samples, a shorter training), and the two differ for the same configuration."""
    lines = [f"**{run_dir}**", ""]
    lines += [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}"
              for k, v in metrics.get("params", {}).items()]
    if any(isinstance(metrics.get(k), float) for k in Quality.NAMES):
        how = f", {metrics['samples']} samples of {metrics['length']} frames" if "samples" in metrics else ""
        what = (f"final evaluation (the retrain, seed {metrics.get('seed', '?')}{how})" if "sweep_metrics" in metrics
                else f"evaluation (ganimator-evaluate{how})")
        lines += ["", f"**{what}**", "", *_scores(metrics)]
    if metrics.get("sweep_metrics"):
        lines += ["", f"**the sweep's validation** (trial {metrics.get('trial_id', '?')}, during the search: the "
                  "score the study shows)", "", *_scores(metrics["sweep_metrics"])]
    return "\n".join(lines)


def _scores(metrics: dict) -> list[str]:
    return [f"- {k}: {metrics[k]:.4g}" for k in ("score", *Quality.NAMES) if isinstance(metrics.get(k), float)]
