"""Jitter and foot skating (ganimator/naturalness.py) on known cases of a real clip: the clip itself,
the clip with noise of growing amplitude, and time-warped copies."""
import pytest
import torch

from ganimator.dataset import MotionDataset
from ganimator.naturalness import Naturalness, kinematics, naturalness
from ganimator.pyramid import resample


@pytest.fixture(scope="module")
def salsa(clip):
    return MotionDataset.from_bvh(clip("Salsa-Dancing-6.bvh"))


def with_noise(data: MotionDataset, channels, amplitude: float, seed: int = 0) -> torch.Tensor:
    noisy = data.features.clone()
    noise = torch.randn(noisy[channels].shape, generator=torch.Generator().manual_seed(seed))
    noisy[channels] += amplitude * noise
    return noisy


def warped(data: MotionDataset, factor: float) -> torch.Tensor:
    """The clip played `factor` times as long: every channel resampled, and the root's per-frame
    velocity divided by `factor` so that the path stays the same."""
    features = resample(data.features[None], round(data.features.shape[-1] * factor))[0]
    root = data.layout.root
    features[[root.start, root.start + 2]] /= factor  # x and z velocity; height stays
    return features


def test_each_pyramid_level_is_measured_against_the_clip_at_that_level(salsa):
    levels = salsa.levels()
    for level in (levels[0], levels[3]):  # as validation measures a stage's top level
        natural = Naturalness(salsa, level)
        assert natural.fps == pytest.approx(salsa.motion.fps * level.shape[-1] / salsa.features.shape[-1])
        scores = natural(level[None])
        assert scores["jitter"].item() == pytest.approx(1.0) and scores["foot_skating"].item() == pytest.approx(1.0)
    # Read at a finer level's frame rate, the coarse clip's frames are too far apart: it looks jerky.
    assert Naturalness(salsa, levels[3])(levels[0][None])["jitter"].item() > 2


def test_the_clip_is_as_natural_as_itself_and_plants_its_feet(salsa):
    scores = naturalness(salsa.features[None], salsa)
    assert scores["jitter"].item() == pytest.approx(1.0) and scores["foot_skating"].item() == pytest.approx(1.0)
    positions, contacts = kinematics(salsa.features, salsa)
    assert contacts.any(dim=0).all()  # every contact joint is planted somewhere in the clip
    feet = positions[:, salsa.skeleton.contacts]
    speed = (feet.diff(dim=0)[..., [0, 2]].norm(dim=-1) * salsa.motion.fps)
    planted = contacts[1:] & contacts[:-1]
    assert speed[planted].mean() < 0.25 * speed[~planted].mean()  # planted feet barely move


def test_jitter_grows_with_noise_in_the_rotations(salsa):
    rotations = salsa.layout.rotations
    jitter = [naturalness(with_noise(salsa, rotations, a)[None], salsa)["jitter"].item() for a in (0.005, 0.02, 0.08)]
    assert 1.0 < jitter[0] < jitter[1] < jitter[2]
    assert jitter[2] > 10  # what an under-trained, noisy generator looks like


def test_foot_skating_grows_with_noise_in_the_roots_path(salsa):
    root = salsa.layout.root
    velocity = [root.start, root.start + 2]
    skating = [naturalness(with_noise(salsa, velocity, a)[None], salsa)["foot_skating"].item() for a in (0.002, 0.01, 0.04)]
    assert 1.0 < skating[0] < skating[1] < skating[2]


def test_slower_copies_are_smoother_and_faster_ones_jerkier(salsa):
    slow, fast = (naturalness(warped(salsa, f)[None], salsa) for f in (1.5, 0.7))
    assert slow["jitter"].item() < 0.6 < 1.5 < fast["jitter"].item()  # jerk scales as speed cubed
    assert slow["foot_skating"].item() < 1.0 < fast["foot_skating"].item()
