"""Rotation conversions, pure functions named source_to_target (fairmotion's ops/conversions):
Euler angles and the 6D representation to and from rotation matrices. roma does the arithmetic.

The 6D representation is the original GANimator's (`quat2repr6d` / `repr6d2mat`): the first two
ROWS of the matrix, (..., 6); back to a matrix by Gram-Schmidt on those rows.
"""
from __future__ import annotations

import roma
import torch


def euler_to_matrix(order: str, degrees: torch.Tensor) -> torch.Tensor:
    """(..., 3) intrinsic Euler angles in degrees, in `order` (e.g. 'ZXY', as a BVH's channels
    list them) -> (..., 3, 3)."""
    return roma.euler_to_rotmat(order, degrees, degrees=True)


def matrix_to_euler(order: str, matrices: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3) intrinsic Euler angles in degrees, in `order`."""
    return roma.rotmat_to_euler(order, matrices, degrees=True)


def matrix_to_rot6d(matrices: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two rows."""
    return matrices[..., :2, :].flatten(-2)


def rot6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """(..., 6) first two rows -> (..., 3, 3): Gram-Schmidt on the rows (roma's works on columns)."""
    rows = rot6d.unflatten(-1, (2, 3))
    return roma.special_gramschmidt(rows.transpose(-1, -2)).transpose(-1, -2)
