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


def _tokens(lines, i):
    """Next non-empty line from index i: (index, tokens), or (len(lines), None) at the end."""
    while i < len(lines):
        tokens = lines[i].split()
        if tokens:
            return i, tokens
        i += 1
    return i, None


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

    i, tok = _tokens(lines, 0)
    if tok != ["HIERARCHY"]:
        raise BVHError(path, i + 1, "expected 'HIERARCHY' on the first line")

    names, parents, offsets, channels, end_sites = [], [], [], [], {}
    stack: list[int] = []  # open joints; -2 marks an open End Site block
    pending = None  # (name, parent) of a joint whose '{' comes next
    i += 1
    while True:
        i, tok = _tokens(lines, i)
        if tok is None:
            raise BVHError(path, i, "file ends inside the HIERARCHY section (no MOTION section)")
        line, head = i + 1, tok[0]
        if head in ("ROOT", "JOINT"):
            if (head == "ROOT" and (stack or names)) or (head == "JOINT" and (not stack or stack[-1] < 0)):
                raise BVHError(path, line, f"unexpected '{head}' (one ROOT, then JOINTs inside it)")
            if len(tok) < 2:
                raise BVHError(path, line, f"'{head}' needs a joint name")
            pending = (" ".join(tok[1:]), stack[-1] if stack else -1)
        elif head == "End":
            if not stack or stack[-1] < 0:
                raise BVHError(path, line, "'End Site' outside a joint")
            pending = ("End Site", stack[-1])
        elif head == "{":
            if pending is None:
                raise BVHError(path, line, "'{' without a joint")
            name, parent = pending
            if name == "End Site":
                stack.append(-2 - parent)  # remember whose end site this is
            else:
                names.append(name)
                parents.append(parent)
                offsets.append(None)
                channels.append(())
                stack.append(len(names) - 1)
            pending = None
        elif head == "}":
            if not stack:
                raise BVHError(path, line, "unbalanced '}'")
            stack.pop()
        elif head == "OFFSET":
            if not stack:
                raise BVHError(path, line, "'OFFSET' outside a joint")
            try:
                value = np.array([float(v) for v in tok[1:]])
            except ValueError:
                raise BVHError(path, line, f"non-numeric OFFSET {' '.join(tok[1:])!r}") from None
            if value.shape != (3,):
                raise BVHError(path, line, f"OFFSET needs 3 values, got {len(tok) - 1}")
            if stack[-1] >= 0:
                offsets[stack[-1]] = value
            else:
                end_sites[-2 - stack[-1]] = value
        elif head == "CHANNELS":
            if not stack or stack[-1] < 0:
                raise BVHError(path, line, "'CHANNELS' outside a joint")
            try:
                count = int(tok[1])
            except (IndexError, ValueError):
                raise BVHError(path, line, "CHANNELS needs a count") from None
            chans = tuple(tok[2:])
            if count != len(chans):
                raise BVHError(path, line, f"CHANNELS says {count} but names {len(chans)}")
            unknown = [c for c in chans if c not in POSITION_CHANNELS + ROTATION_CHANNELS]
            if unknown:
                raise BVHError(path, line, f"unknown channel {unknown[0]!r}")
            if len(set(chans)) != len(chans):
                raise BVHError(path, line, "a channel is listed twice")
            rotations = sum(c in ROTATION_CHANNELS for c in chans)
            if rotations not in (0, 3):  # one or two rotation axes have no Euler order to read back
                raise BVHError(path, line, f"{rotations} rotation channels; joints need 0 or 3")
            channels[stack[-1]] = chans
        elif head == "MOTION":
            if stack or not names:
                raise BVHError(path, line, "'MOTION' before the hierarchy is closed")
            break
        else:
            raise BVHError(path, line, f"unexpected {head!r} in HIERARCHY")
        i += 1

    missing = [n for n, o in zip(names, offsets) if o is None]
    if missing:
        raise BVHError(path, None, f"joint {missing[0]!r} has no OFFSET")

    i, tok = _tokens(lines, i + 1)
    if tok is None or tok[0] != "Frames:" or len(tok) != 2 or not tok[1].isdigit():
        raise BVHError(path, i + 1, "expected 'Frames: <count>' after MOTION")
    num_frames = int(tok[1])
    i, tok = _tokens(lines, i + 1)
    try:
        assert tok is not None and tok[:2] == ["Frame", "Time:"] and len(tok) == 3
        frame_time = float(tok[2])
        assert frame_time > 0
    except (AssertionError, ValueError):
        raise BVHError(path, i + 1, "expected 'Frame Time: <seconds>' after 'Frames:'") from None

    width = sum(len(c) for c in channels)
    rows = [k for k in range(i + 1, len(lines)) if lines[k].strip()]
    if len(rows) < num_frames:  # counted before allocating: 'Frames:' may claim anything
        raise BVHError(path, len(lines), f"file ends after {len(rows)} of {num_frames} frames (truncated?)")
    if len(rows) > num_frames:
        raise BVHError(path, rows[num_frames] + 1, f"more frames than 'Frames: {num_frames}'")
    motion = np.empty((num_frames, width))
    for frame, i in enumerate(rows):
        values = lines[i].split()
        if len(values) != width:
            raise BVHError(path, i + 1, f"frame {frame} has {len(values)} values, the hierarchy has {width} channels")
        try:
            motion[frame] = np.array(values, dtype=np.float64)
        except ValueError:
            bad = next(v for v in values if not _is_float(v))
            raise BVHError(path, i + 1, f"non-numeric value {bad!r} in frame {frame}") from None
    # Training is float32: a value past its range (1e300) would become inf in the features.
    bad = ~(np.abs(motion) <= np.finfo(np.float32).max)
    if bad.any():
        frame, channel = np.argwhere(bad)[0]
        raise BVHError(path, rows[frame] + 1, f"frame {frame} holds {motion[frame, channel]:g}, "
                                              "not a finite float32 value")
    return BVH(names, parents, np.stack(offsets), channels, frame_time, motion, end_sites)


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
