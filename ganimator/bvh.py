"""BVH files: parse into arrays, write back, and convert to and from the Skeleton and Motion types
(fairmotion's data/bvh: format <-> type; the rotation arithmetic is conversions.py's).

A small reader of our own rather than bvhio: bvhio turns every frame into per-joint glm objects
and, on a truncated or malformed file, fails with an IndexError that names neither the file nor
the line. Here the motion block stays one float64 array and every error names both.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .conversions import euler_to_matrix, matrix_to_euler
from .errors import UserError
from .files import atomic_write_text
from .motion import Motion
from .skeleton import Rig, Skeleton, detect_rig, strip_namespace

TARGET_FPS = 30  # the frame rate clips are read at for training, unless asked otherwise
POSITION_CHANNELS = ("Xposition", "Yposition", "Zposition")
ROTATION_CHANNELS = ("Xrotation", "Yrotation", "Zrotation")


class BVHError(UserError, ValueError):
    """A malformed BVH file; the message names the file and the line."""

    def __init__(self, path, line: int | None, message: str):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path, self.line = str(path), line


@dataclass
class BVH:
    names: list[str]
    parents: list[int]  # -1 for the root; a parent always precedes its children
    offsets: np.ndarray  # (J, 3) in file units
    channels: list[tuple[str, ...]]  # per joint, in file order
    frame_time: float
    motion: np.ndarray  # (T, total channels), float64, degrees for rotations
    end_sites: dict[int, np.ndarray] = field(default_factory=dict)  # joint -> End Site offset

    @property
    def num_frames(self) -> int:
        return self.motion.shape[0]

    def channel_starts(self) -> list[int]:
        return np.cumsum([0] + [len(c) for c in self.channels[:-1]]).tolist()

    def rotation_order(self, joint: int) -> str:
        """Intrinsic rotation order of a joint, e.g. 'ZXY' for 'Zrotation Xrotation Yrotation'."""
        order = "".join(c[0] for c in self.channels[joint] if c in ROTATION_CHANNELS)
        return order or "XYZ"

    def local_rotations(self) -> torch.Tensor:
        """(T, J, 3, 3) float64 local rotation matrices; joints without rotation channels get I."""
        T, J = self.num_frames, len(self.names)
        out = torch.eye(3, dtype=torch.float64).repeat(T, J, 1, 1)
        for j, (start, chans) in enumerate(zip(self.channel_starts(), self.channels)):
            idx = [start + k for k, c in enumerate(chans) if c in ROTATION_CHANNELS]
            if len(idx) == 3:
                angles = torch.from_numpy(self.motion[:, idx])
                out[:, j] = euler_to_matrix(self.rotation_order(j), angles)
        return out

    def local_translations(self) -> np.ndarray:
        """(T, J, 3): each joint's offset, replaced by its position channels where it has them."""
        out = np.repeat(self.offsets[None].astype(np.float64), self.num_frames, axis=0)
        for j, (start, chans) in enumerate(zip(self.channel_starts(), self.channels)):
            for axis, name in enumerate(POSITION_CHANNELS):
                if name in chans:
                    out[:, j, axis] = self.motion[:, start + chans.index(name)]
        return out


def frame_header(path: str | os.PathLike) -> tuple[int, float] | None:
    """(frames, frame time) from a BVH's MOTION header, read line by line: what reading the whole
    file would cost can be judged before it is read. None where the header is not as expected
    (read_bvh then says where)."""
    try:
        with open(path, errors="replace") as f:
            for line in f:
                line = line.strip()
                if line.startswith("Frames:"):
                    frames, time = int(line.split()[1]), float(next(f, "").split()[2])
                    return (frames, time) if frames >= 0 and 0 < time < math.inf else None
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_bvh(path: str | os.PathLike) -> BVH:
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as e:
        raise BVHError(path, None, f"not a text file ({e.reason})") from None
    cursor = _Cursor(path, lines)
    joints = _Hierarchy(cursor).read()
    num_frames, frame_time = _read_motion_header(cursor)
    motion = _read_frames(cursor, num_frames, width=sum(len(c) for c in joints.channels))
    return BVH(joints.names, joints.parents, np.stack(joints.offsets), joints.channels, frame_time, motion,
               joints.end_sites)


class _Cursor:
    """The file's lines, read one non-blank line at a time, so that every error can name its line."""

    def __init__(self, path: Path, lines: list[str]):
        self.path, self.lines = path, lines
        self.index = -1  # of the current line; len(lines) once past the end

    def next(self) -> list[str] | None:
        """The tokens of the next non-blank line, or None at the end of the file."""
        self.index += 1
        while self.index < len(self.lines):
            tokens = self.lines[self.index].split()
            if tokens:
                return tokens
            self.index += 1
        return None

    def rest(self) -> list[tuple[int, str]]:
        """(line number, text) of every non-blank line after the current one."""
        return [(k + 1, text) for k, text in enumerate(self.lines[self.index + 1:], self.index + 1) if text.strip()]

    def error(self, message: str) -> BVHError:
        return BVHError(self.path, self.index + 1, message)


class _Hierarchy:
    """The HIERARCHY section, read line by line: one method per keyword, each checking where it may stand."""

    def __init__(self, cursor: _Cursor):
        self.cursor = cursor
        self.names, self.parents, self.offsets, self.channels, self.end_sites = [], [], [], [], {}
        self.stack: list[int] = []  # open joints; -2 - j marks joint j's open End Site block
        self.pending = None  # (name, parent) of a joint whose '{' comes next

    def read(self) -> _Hierarchy:
        if self.cursor.next() != ["HIERARCHY"]:
            raise self.cursor.error("expected 'HIERARCHY' on the first line")
        keywords = {"ROOT": self.joint, "JOINT": self.joint, "End": self.end_site, "{": self.open, "}": self.close,
                    "OFFSET": self.offset, "CHANNELS": self.channel_names}
        while True:
            tok = self.cursor.next()
            if tok is None:  # the message names the last line, not the one past it
                raise BVHError(self.cursor.path, len(self.cursor.lines),
                               "file ends inside the HIERARCHY section (no MOTION section)")
            if tok[0] == "MOTION":
                break
            if tok[0] not in keywords:
                raise self.cursor.error(f"unexpected {tok[0]!r} in HIERARCHY")
            keywords[tok[0]](tok)
        if self.stack or not self.names:
            raise self.cursor.error("'MOTION' before the hierarchy is closed")
        missing = [n for n, o in zip(self.names, self.offsets) if o is None]
        if missing:
            raise BVHError(self.cursor.path, None, f"joint {missing[0]!r} has no OFFSET")
        return self

    def in_joint(self) -> bool:
        return bool(self.stack) and self.stack[-1] >= 0

    def joint(self, tok: list[str]) -> None:
        head = tok[0]
        if (head == "ROOT" and (self.stack or self.names)) or (head == "JOINT" and not self.in_joint()):
            raise self.cursor.error(f"unexpected '{head}' (one ROOT, then JOINTs inside it)")
        if len(tok) < 2:
            raise self.cursor.error(f"'{head}' needs a joint name")
        self.pending = (" ".join(tok[1:]), self.stack[-1] if self.stack else -1)

    def end_site(self, tok: list[str]) -> None:
        if not self.in_joint():
            raise self.cursor.error("'End Site' outside a joint")
        self.pending = ("End Site", self.stack[-1])

    def open(self, tok: list[str]) -> None:
        if self.pending is None:
            raise self.cursor.error("'{' without a joint")
        name, parent = self.pending
        if name == "End Site":
            self.stack.append(-2 - parent)  # remember whose end site this is
        else:
            self.names.append(name)
            self.parents.append(parent)
            self.offsets.append(None)
            self.channels.append(())
            self.stack.append(len(self.names) - 1)
        self.pending = None

    def close(self, tok: list[str]) -> None:
        if not self.stack:
            raise self.cursor.error("unbalanced '}'")
        self.stack.pop()

    def offset(self, tok: list[str]) -> None:
        if not self.stack:
            raise self.cursor.error("'OFFSET' outside a joint")
        try:
            value = np.array([float(v) for v in tok[1:]])
        except ValueError:
            raise self.cursor.error(f"non-numeric OFFSET {' '.join(tok[1:])!r}") from None
        if value.shape != (3,):
            raise self.cursor.error(f"OFFSET needs 3 values, got {len(tok) - 1}")
        if self.in_joint():
            self.offsets[self.stack[-1]] = value
        else:
            self.end_sites[-2 - self.stack[-1]] = value

    def channel_names(self, tok: list[str]) -> None:
        if not self.in_joint():
            raise self.cursor.error("'CHANNELS' outside a joint")
        try:
            count = int(tok[1])
        except (IndexError, ValueError):
            raise self.cursor.error("CHANNELS needs a count") from None
        chans = tuple(tok[2:])
        if count != len(chans):
            raise self.cursor.error(f"CHANNELS says {count} but names {len(chans)}")
        unknown = [c for c in chans if c not in POSITION_CHANNELS + ROTATION_CHANNELS]
        if unknown:
            raise self.cursor.error(f"unknown channel {unknown[0]!r}")
        if len(set(chans)) != len(chans):
            raise self.cursor.error("a channel is listed twice")
        rotations = sum(c in ROTATION_CHANNELS for c in chans)
        if rotations not in (0, 3):  # one or two rotation axes have no Euler order to read back
            raise self.cursor.error(f"{rotations} rotation channels; joints need 0 or 3")
        self.channels[self.stack[-1]] = chans


def _read_motion_header(cursor: _Cursor) -> tuple[int, float]:
    """'Frames: <count>' and 'Frame Time: <seconds>', the lines after MOTION."""
    tok = cursor.next()
    if tok is None or tok[0] != "Frames:" or len(tok) != 2 or not tok[1].isdigit():
        raise cursor.error("expected 'Frames: <count>' after MOTION")
    num_frames = int(tok[1])
    tok = cursor.next()
    if not (tok is not None and tok[:2] == ["Frame", "Time:"] and len(tok) == 3 and _is_float(tok[2])
            and float(tok[2]) > 0):
        raise cursor.error("expected 'Frame Time: <seconds>' after 'Frames:'")
    return num_frames, float(tok[2])


def _read_frames(cursor: _Cursor, num_frames: int, width: int) -> np.ndarray:
    """The motion block: one row of `width` channel values per frame, to the end of the file."""
    rows = cursor.rest()
    if len(rows) < num_frames:  # counted before allocating: 'Frames:' may claim anything
        raise BVHError(cursor.path, len(cursor.lines),
                       f"file ends after {len(rows)} of {num_frames} frames (truncated?)")
    if len(rows) > num_frames:
        raise BVHError(cursor.path, rows[num_frames][0], f"more frames than 'Frames: {num_frames}'")
    motion = np.empty((num_frames, width))
    for frame, (line, text) in enumerate(rows):
        values = text.split()
        if len(values) != width:
            raise BVHError(cursor.path, line,
                           f"frame {frame} has {len(values)} values, the hierarchy has {width} channels")
        try:
            motion[frame] = np.array(values, dtype=np.float64)
        except ValueError:
            bad = next(v for v in values if not _is_float(v))
            raise BVHError(cursor.path, line, f"non-numeric value {bad!r} in frame {frame}") from None
    # Training is float32: a value past its range (1e300) would become inf in the features.
    bad = ~(np.abs(motion) <= np.finfo(np.float32).max)
    if bad.any():
        frame, channel = np.argwhere(bad)[0]
        raise BVHError(cursor.path, rows[frame][0], f"frame {frame} holds {motion[frame, channel]:g}, "
                                                    "not a finite float32 value")
    return motion


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def write_bvh(path: str | os.PathLike, bvh: BVH) -> None:
    """Write atomically, so an interrupted export never leaves half a file."""
    children = {j: [c for c, p in enumerate(bvh.parents) if p == j] for j in range(len(bvh.names))}
    out = io.StringIO()
    out.write("HIERARCHY\n")

    # Depth-first with an explicit stack: a long chain (1500 joints) is deeper than Python's recursion limit.
    stack = [(0, 0, True)]  # (joint, depth, opening?)
    while stack:
        j, depth, opening = stack.pop()
        pad = "\t" * depth
        if not opening:
            if not children[j]:  # Blender and most readers expect an End Site on every leaf
                end = bvh.end_sites.get(j, np.zeros(3))
                out.write(f"{pad}\tEnd Site\n{pad}\t{{\n")
                out.write(f"{pad}\t\tOFFSET {' '.join(f'{v:.6f}' for v in end)}\n{pad}\t}}\n")
            out.write(f"{pad}}}\n")
            continue
        kind = "ROOT" if bvh.parents[j] < 0 else "JOINT"
        out.write(f"{pad}{kind} {bvh.names[j]}\n{pad}{{\n")
        out.write(f"{pad}\tOFFSET {' '.join(f'{v:.6f}' for v in bvh.offsets[j])}\n")
        out.write(f"{pad}\tCHANNELS {len(bvh.channels[j])} {' '.join(bvh.channels[j])}\n")
        stack.append((j, depth, False))
        stack.extend((c, depth + 1, True) for c in reversed(children[j]))
    out.write(f"MOTION\nFrames: {bvh.num_frames}\nFrame Time: {bvh.frame_time:.6f}\n")
    np.savetxt(out, bvh.motion, fmt="%.6f", delimiter=" ")
    atomic_write_text(path, out.getvalue())


def select_joints(bvh: BVH, rig: Rig | None = None) -> tuple[Skeleton, list[int]]:
    """The rig's joint subset of a BVH: the skeleton and the subset's indices in the file."""
    rig = rig or detect_rig(bvh.names)
    short = [strip_namespace(n) for n in bvh.names]
    wanted = rig.joints or tuple(short)
    missing = [n for n in wanted + rig.contacts if n not in short]
    if missing:
        raise ValueError(f"rig {rig.name!r}: joint {missing[0]!r} is not in the file")
    missing = [n for n in rig.contacts if n not in wanted]
    if missing:
        raise ValueError(f"rig {rig.name!r}: contact joint {missing[0]!r} is not among its joints")
    index = [short.index(n) for n in wanted]
    position = {j: k for k, j in enumerate(index)}
    parents = []
    for k, j in enumerate(index):
        p = bvh.parents[j]
        if p >= 0 and p not in position:
            raise ValueError(f"rig {rig.name!r}: parent {short[p]!r} of {short[j]!r} is not kept; "
                             "the joint subset must be closed under parents")
        parents.append(position[p] if p >= 0 else -1)
        if k > 0 and parents[-1] >= k:
            raise ValueError(f"rig {rig.name!r}: joint {short[j]!r} comes before its parent")
    # centimetres if the root stands more than 10 units high, in its OFFSET or in the first frame
    root_height = max(bvh.offsets[0, 1], bvh.local_translations()[0, 0, 1] if bvh.num_frames else 0.0)
    scale = rig.scale if rig.scale is not None else (0.01 if root_height > 10 else 1.0)
    end_sites = np.full((len(index), 3), np.nan)
    for k, j in enumerate(index):
        if j in bvh.end_sites:
            end_sites[k] = bvh.end_sites[j] * scale
    skeleton = Skeleton(
        names=[short[j] for j in index],
        parents=parents,
        offsets=bvh.offsets[index] * scale,
        end_sites=end_sites,
        rotation_orders=[bvh.rotation_order(j) for j in index],
        contacts=[wanted.index(n) for n in rig.contacts],
        contact_threshold=rig.contact_threshold,
        scale=scale,
        rig=rig.name,
    )
    return skeleton, index


def motion_from_bvh(bvh: BVH, rig: Rig | None = None, fps: float | None = TARGET_FPS) -> tuple[Skeleton, Motion]:
    """The rig's joints of a BVH clip, in metres, subsampled to about `fps` frames a second (None:
    every frame)."""
    skeleton, index = select_joints(bvh, rig)
    stride = 1 if fps is None else max(1, round(1.0 / (fps * bvh.frame_time)))
    rotations = bvh.local_rotations()[::stride][:, index]
    root = torch.from_numpy(bvh.local_translations()[::stride, index[0]] * skeleton.scale)
    return skeleton, Motion(rotations, root, fps=1.0 / (bvh.frame_time * stride))


def load_motion(path, rig: Rig | None = None, fps: float | None = TARGET_FPS) -> tuple[Skeleton, Motion]:
    try:
        return motion_from_bvh(read_bvh(path), rig, fps)
    except ValueError as e:
        if isinstance(e, BVHError):
            raise
        raise BVHError(path, None, str(e)) from None


def motion_to_bvh(motion: Motion, skeleton: Skeleton) -> BVH:
    """A BVH of the skeleton in the source's units and rotation orders (Blender opens it)."""
    columns, channels = [motion.root_positions.double() / skeleton.scale], []
    for j, order in enumerate(skeleton.rotation_orders):
        rot_channels = tuple(f"{axis}rotation" for axis in order)
        channels.append((POSITION_CHANNELS if j == 0 else ()) + rot_channels)
        columns.append(matrix_to_euler(order, motion.rotations[:, j].double()))
    end_sites = {j: s / skeleton.scale for j, s in enumerate(skeleton.end_sites) if np.isfinite(s).all()}
    return BVH(names=list(skeleton.names), parents=list(skeleton.parents), offsets=skeleton.offsets / skeleton.scale,
               channels=channels, frame_time=1.0 / motion.fps, motion=torch.cat(columns, dim=1).numpy(),
               end_sites=end_sites)
