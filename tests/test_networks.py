import pytest
import torch

from ganimator.config import load_config
from ganimator.dataset import MotionDataset
from ganimator.networks import SkeletonConv1d
from ganimator.trainer import Trainer, build_models


@pytest.fixture(scope="module")
def walk(clip):
    return MotionDataset.from_bvh(clip("Walk-In-Circle.bvh"))


def test_skeleton_aware_convolutions_only_connect_nearby_joints(walk):
    cfg = load_config(["skeleton_aware=true", "neighbour_distance=2"])
    pyramid, critics = build_models(cfg, walk)
    conv = pyramid.generators[0].net[0]
    assert isinstance(conv, SkeletonConv1d)
    names = walk.skeleton.names
    hand, toe, foot = names.index("RightHand"), names.index("LeftToe_End"), names.index("LeftFoot")
    x = torch.zeros(1, walk.layout.channels, 20, requires_grad=True)
    out = conv(x)
    joint_of_hidden = torch.arange(conv.out_channels) * walk.skeleton.num_joints // conv.out_channels
    (grad,) = torch.autograd.grad(out[:, joint_of_hidden == toe].sum(), x)
    assert grad[0, 6 * hand:6 * hand + 6].abs().sum() == 0  # 8 bones away: no weight connects them
    assert grad[0, 6 * foot:6 * foot + 6].abs().sum() > 0  # 2 bones away: connected
    assert isinstance(critics[0].net[-1], torch.nn.Conv1d) and critics[0].net[-1].out_channels == 1


def test_skeleton_aware_training_runs(clip, tmp_path):
    MotionDataset.from_bvh(clip("proud.bvh")).save(tmp_path / "proud.npz")
    cfg = load_config([f"npz_filename={tmp_path / 'proud.npz'}", f"run_dir={tmp_path / 'run'}", "progress=false",
                       "skeleton_aware=true", "train_data_iter=2", "validation_samples=0"])
    trainer = Trainer(cfg)
    assert trainer.fit().finished
    first = trainer.pyramid.generators[6].net[0]
    x = torch.zeros(1, first.in_channels, 30, requires_grad=True)
    (grad,) = torch.autograd.grad(first(x).sum(), x, torch.ones(()))
    jac = torch.stack([torch.autograd.grad(first(x)[0, o].sum(), x)[0][0].abs().sum(-1) for o in range(first.out_channels)])
    assert (jac[first.mask[:, :, 0] == 0] == 0).all()  # after training, masked weights still connect nothing
    assert (jac[first.mask[:, :, 0] == 1] > 0).float().mean() > 0.99


def test_noise_amplitude_scales_apply_per_stage(walk):
    cfg = load_config(["noise_amp_scale=2", "stage_noise_amp_scale=[1,0.5,0,3]"])
    pyramid, _ = build_models(cfg, walk)
    factors = torch.tensor([2, 2, 1, 1, 0, 0, 6], dtype=torch.float32)
    assert torch.allclose(pyramid.amplitudes, walk.noise_amplitudes * factors)
    rng = torch.Generator().manual_seed(0)
    assert pyramid.noise(4, 2, 50, rng).abs().max() == 0
    shared = pyramid.noise(0, 2, 50, rng)
    assert torch.equal(shared[:, 0], shared[:, 5])  # one noise value per frame, shared by channels
    full, _ = build_models(load_config(["full_noise=true"]), walk)
    independent = full.noise(0, 1, 50, rng)
    assert not torch.equal(independent[:, 0], independent[:, 5])
