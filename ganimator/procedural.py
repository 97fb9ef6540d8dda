"""A procedural dance clip on the 24-joint Mixamo skeleton, so a fresh install can train on
motion the project makes itself (no downloaded data)."""
from __future__ import annotations

import numpy as np

from .bvh import BVH
from .skeleton import MIXAMO_JOINTS

# parent, offset in centimetres (y up, z forward), as a Mixamo character in T-pose
_TREE = {
    "Hips": (None, (0, 100, 0)),
    "LeftUpLeg": ("Hips", (9, -6, 0)), "LeftLeg": ("LeftUpLeg", (0, -42, 0)),
    "LeftFoot": ("LeftLeg", (0, -42, -2)), "LeftToeBase": ("LeftFoot", (0, -8, 12)),
    "LeftToe_End": ("LeftToeBase", (0, 0, 8)),
    "RightUpLeg": ("Hips", (-9, -6, 0)), "RightLeg": ("RightUpLeg", (0, -42, 0)),
    "RightFoot": ("RightLeg", (0, -42, -2)), "RightToeBase": ("RightFoot", (0, -8, 12)),
    "RightToe_End": ("RightToeBase", (0, 0, 8)),
    "Spine": ("Hips", (0, 10, 0)), "Spine1": ("Spine", (0, 11, 0)), "Spine2": ("Spine1", (0, 12, 0)),
    "Neck": ("Spine2", (0, 14, 0)), "Head": ("Neck", (0, 10, 2)),
    "LeftShoulder": ("Spine2", (6, 11, 0)), "LeftArm": ("LeftShoulder", (12, 0, 0)),
    "LeftForeArm": ("LeftArm", (27, 0, 0)), "LeftHand": ("LeftForeArm", (26, 0, 0)),
    "RightShoulder": ("Spine2", (-6, 11, 0)), "RightArm": ("RightShoulder", (-12, 0, 0)),
    "RightForeArm": ("RightArm", (-27, 0, 0)), "RightHand": ("RightForeArm", (-26, 0, 0)),
}  # fmt: skip
_END_SITES = {"Head": (0, 18, 0), "LeftToe_End": (0, 0, 4), "RightToe_End": (0, 0, 4),
              "LeftHand": (8, 0, 0), "RightHand": (-8, 0, 0)}


def procedural_dance(seconds: float = 12.0, fps: int = 30, seed: int = 0) -> BVH:
    """Stepping, swaying and arm swings along a slow circle, with seeded slow variations so that
    the clip is not a pure loop."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fps)) / fps
    step = 2 * np.pi * t / rng.uniform(0.9, 1.1)  # about one step cycle a second

    def vary(period: float) -> np.ndarray:  # slowly drifting amplitude, 0.6..1.4
        return 1 + 0.4 * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))

    heading = 2 * np.pi * t / 10.0
    root = np.stack([150 * np.sin(heading), 104 + 3 * np.sin(2 * step) * vary(5), 150 * np.cos(heading)], 1)
    angles = {name: np.zeros((len(t), 3)) for name in MIXAMO_JOINTS}  # X, Y, Z degrees
    angles["Hips"][:, 1] = np.degrees(heading) + 90 + 15 * np.sin(step / 2) * vary(7)
    angles["Hips"][:, 2] = 5 * np.sin(step)
    for side, phase in (("Left", 0.0), ("Right", np.pi)):
        swing = np.sin(step + phase)
        angles[f"{side}UpLeg"][:, 0] = -25 * swing * vary(6)
        angles[f"{side}Leg"][:, 0] = 35 * (1 - np.cos(step + phase)) / 2 * vary(4)
        angles[f"{side}Foot"][:, 0] = -10 * swing
        sign = 1 if side == "Left" else -1
        angles[f"{side}Arm"][:, 2] = sign * (-70 + 12 * np.sin(2 * step) * vary(3))
        angles[f"{side}Arm"][:, 1] = 30 * swing * vary(8)
        angles[f"{side}ForeArm"][:, 1] = sign * (25 + 20 * np.sin(step + phase + 1) * vary(5))
    angles["Spine"][:, 1] = 10 * np.sin(step) * vary(9)
    angles["Spine1"][:, 0] = 5 * np.sin(2 * step)
    angles["Head"][:, 0] = 6 * np.sin(2 * step + 1) * vary(4)

    names = list(MIXAMO_JOINTS)
    parents = [-1 if _TREE[n][0] is None else names.index(_TREE[n][0]) for n in names]
    rot = ("Xrotation", "Yrotation", "Zrotation")
    channels = [("Xposition", "Yposition", "Zposition") + rot] + [rot] * (len(names) - 1)
    motion = np.concatenate([root] + [angles[n] for n in names], axis=1)
    return BVH(names=[f"mixamorig:{n}" for n in names], parents=parents,
               offsets=np.array([_TREE[n][1] for n in names], dtype=np.float64), channels=channels,
               frame_time=1.0 / fps, motion=motion,
               end_sites={names.index(n): np.array(o, dtype=np.float64) for n, o in _END_SITES.items()})
