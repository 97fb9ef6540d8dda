"""Skeletons as values: which joints of a rig the features keep, and which touch the ground.
Reading one from a BVH file: bvh.select_joints."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIXAMO_JOINTS = (
    "Hips", "LeftUpLeg", "LeftLeg", "LeftFoot", "LeftToeBase", "LeftToe_End",
    "RightUpLeg", "RightLeg", "RightFoot", "RightToeBase", "RightToe_End",
    "Spine", "Spine1", "Spine2", "Neck", "Head",
    "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand",
    "RightShoulder", "RightArm", "RightForeArm", "RightHand",
)  # fmt: skip


@dataclass(frozen=True)
class Rig:
    """How to read one family of BVH skeletons (the original's skeleton database, as data)."""

    name: str
    signature: tuple[str, ...]  # joint names that identify the rig
    joints: tuple[str, ...] | None  # the subset the features keep; None keeps every joint
    contacts: tuple[str, ...]  # joints whose ground contact is labelled
    contact_threshold: float  # metres per frame at 30 fps under which a joint is in contact
    scale: float | None = None  # file units to metres; None: 0.01 if the root sits above 10 units

    def matches(self, names) -> bool:
        return set(self.signature) <= set(names)


MIXAMO = Rig("mixamo", MIXAMO_JOINTS, MIXAMO_JOINTS,
             ("LeftToe_End", "RightToe_End", "LeftToeBase", "RightToeBase"), 0.018)
ELEPHANT_JOINTS = (
    "Hips", "Bip01_Pelvis", "BN_Tail_01", "BN_Tail_02", "BN_Tail_03", "BN_Tail_04", "Bip01_Spine",
    "Bip01_R_Thigh", "Bip01_R_Calf", "Bip01_R_Foot", "Bip01_R_Toe0",
    "Bip01_L_Thigh", "Bip01_L_Calf", "Bip01_L_Foot", "Bip01_L_Toe0",
    "Bip01_Spine1", "Bip01_Spine2", "Bip01_Neck", "Bip01_Head", "BN_Eyebrow_L", "BN_Eyebrow_R",
    "BN_Ear_L_01", "BN_Ear_L_02", "BN_Mouth_01", "BN_Ear_R_01", "BN_Ear_R_02",
    "BN_Nose_01", "BN_Nose_02", "BN_Nose_03", "BN_Nose_04", "BN_Nose_05", "BN_Nose_06",
    "Bip01_R_Clavicle", "Bip01_R_UpperArm", "Bip01_R_Forearm", "Bip01_R_Hand",
    "Bip01_L_Clavicle", "Bip01_L_UpperArm", "Bip01_L_Forearm", "Bip01_L_Hand",
)  # fmt: skip
# The original's elephant (its skeleton_database.py): contacts are the joints named Hand, Toe or
# Foot, in the joint list's order, which is the order of the contact nodes in the features.
ELEPHANT = Rig("elephant", ELEPHANT_JOINTS, ELEPHANT_JOINTS,
               tuple(n for n in ELEPHANT_JOINTS if any(part in n for part in ("Hand", "Toe", "Foot"))), 0.018)
# The original's joint lists (its corps names) and contacts, in its order: a file's joints are
# reduced to the list and reordered as it; contact nodes follow the order of their list.
CRAB_JOINTS = (
    "ORG_Hips", "ORG_BN_Bip01_Pelvis", "DEF_BN_Eye_L_01", "DEF_BN_Eye_L_02", "DEF_BN_Eye_L_03",
    "DEF_BN_Eye_L_03_end", "DEF_BN_Eye_R_01", "DEF_BN_Eye_R_02", "DEF_BN_Eye_R_03",
    "DEF_BN_Eye_R_03_end", "DEF_BN_Leg_L_11", "DEF_BN_Leg_L_12", "DEF_BN_Leg_L_13",
    "DEF_BN_Leg_L_14", "DEF_BN_Leg_L_15", "DEF_BN_Leg_L_15_end", "DEF_BN_Leg_R_11",
    "DEF_BN_Leg_R_12", "DEF_BN_Leg_R_13", "DEF_BN_Leg_R_14", "DEF_BN_Leg_R_15",
    "DEF_BN_Leg_R_15_end", "DEF_BN_leg_L_01", "DEF_BN_leg_L_02", "DEF_BN_leg_L_03",
    "DEF_BN_leg_L_04", "DEF_BN_leg_L_05", "DEF_BN_leg_L_05_end", "DEF_BN_leg_L_06",
    "DEF_BN_Leg_L_07", "DEF_BN_Leg_L_08", "DEF_BN_Leg_L_09", "DEF_BN_Leg_L_10",
    "DEF_BN_Leg_L_10_end", "DEF_BN_leg_R_01", "DEF_BN_leg_R_02", "DEF_BN_leg_R_03",
    "DEF_BN_leg_R_04", "DEF_BN_leg_R_05", "DEF_BN_leg_R_05_end", "DEF_BN_leg_R_06",
    "DEF_BN_Leg_R_07", "DEF_BN_Leg_R_08", "DEF_BN_Leg_R_09", "DEF_BN_Leg_R_10",
    "DEF_BN_Leg_R_10_end", "DEF_BN_Bip01_Pelvis", "DEF_BN_Bip01_Pelvis_end", "DEF_BN_Arm_L_01",
    "DEF_BN_Arm_L_02", "DEF_BN_Arm_L_03", "DEF_BN_Arm_L_03_end", "DEF_BN_Arm_R_01",
    "DEF_BN_Arm_R_02", "DEF_BN_Arm_R_03", "DEF_BN_Arm_R_03_end",
)  # fmt: skip
XIA_JOINTS = (
    "Hips", "LHipJoint", "LeftUpLeg", "LeftLeg", "LeftFoot", "LeftToeBase", "RHipJoint",
    "RightUpLeg", "RightLeg", "RightFoot", "RightToeBase", "LowerBack", "Spine", "Spine1", "Neck",
    "Neck1", "Head", "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand", "LeftFingerBase",
    "LeftHandIndex1", "LThumb", "RightShoulder", "RightArm", "RightForeArm", "RightHand",
    "RightFingerBase", "RightHandIndex1", "RThumb",
)  # fmt: skip
CRAB_CONTACTS = ("DEF_BN_Leg_L_15_end", "DEF_BN_Leg_R_15_end", "DEF_BN_leg_L_05_end",
                 "DEF_BN_Leg_L_10_end", "DEF_BN_leg_R_05_end", "DEF_BN_Leg_R_10_end")
CRAB = Rig("crab", CRAB_CONTACTS, CRAB_JOINTS, CRAB_CONTACTS, 0.006)
XIA = Rig("xia", ("LHipJoint", "RHipJoint", "LowerBack", "LeftToeBase", "RightToeBase"), XIA_JOINTS,
          ("LeftToeBase", "RightToeBase"), 0.018, scale=0.14)
GENERIC = Rig("generic", (), None, (), 0.018)
RIGS = (MIXAMO, ELEPHANT, CRAB, XIA)  # every rig of the original's skeleton database, in its order


def strip_namespace(name: str) -> str:
    """'mixamorig7:Hips' -> 'Hips'."""
    return name.rsplit(":", 1)[-1]


def detect_rig(names) -> Rig:
    names = [strip_namespace(n) for n in names]
    return next((rig for rig in RIGS if rig.matches(names)), GENERIC)


@dataclass
class Skeleton:
    names: list[str]
    parents: list[int]
    offsets: np.ndarray  # (J, 3) metres
    end_sites: np.ndarray  # (J, 3) metres, NaN where the source had no End Site
    rotation_orders: list[str]  # per joint, kept so exported BVH matches the source's channels
    contacts: list[int]  # joint indices with contact labels
    contact_threshold: float
    scale: float  # source units to metres
    rig: str

    @property
    def num_joints(self) -> int:
        return len(self.names)

    def reach(self) -> float:
        """The mean length of the bone chains from the root to the contact joints (a leg's, on a
        biped): how far a rotation error moves a foot, whatever the pose (0 without contact joints)."""
        lengths = []
        for j in self.contacts:
            length = 0.0
            while self.parents[j] >= 0:
                length, j = length + float(np.linalg.norm(self.offsets[j])), self.parents[j]
            lengths.append(length)
        return float(np.mean(lengths)) if lengths else 0.0

    def tree_distances(self) -> np.ndarray:
        """(J, J) number of bones between joints."""
        J = self.num_joints
        dist = np.full((J, J), J, dtype=np.int64)
        np.fill_diagonal(dist, 0)
        for j, p in enumerate(self.parents):
            if p >= 0:
                dist[j, p] = dist[p, j] = 1
        for k in range(J):  # Floyd-Warshall: J is a few dozen
            dist = np.minimum(dist, dist[:, k:k + 1] + dist[k:k + 1, :])
        return dist

    def node_neighbours(self, distance: int) -> list[list[int]]:
        """Which input nodes each output node of a skeleton-aware convolution reads (sorted).

        Nodes are the feature layout's: J joints, then one per contact label, then the root
        block. The original's construction (its `BVH_file.get_neighbor` with enforce_contact):
        a joint reads the joints within `distance` bones; a contact node reads its joint's
        neighbourhood and the root node, and its joint reads it back; the root node reads the
        root joint's neighbourhood and every contact node, and each of those reads the root node.
        The graph is not symmetric: a contact joint's parent does not read the contact node.
        """
        J, C = self.num_joints, len(self.contacts)
        contact_nodes, root_node = list(range(J, J + C)), J + C
        near = self.tree_distances() <= distance
        lists = [set(np.flatnonzero(near[j]).tolist()) for j in range(J)]
        for node, joint in zip(contact_nodes, self.contacts):
            lists[joint].add(node)
        lists += [set(lists[joint]) for joint in self.contacts]
        root_reads = lists[0] | set(contact_nodes)
        for node in root_reads:
            lists[node].add(root_node)
        lists.append(root_reads | {root_node})
        return [sorted(n) for n in lists]
