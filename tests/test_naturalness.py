"""Jitter, foot skating, penetration, ground contact and foot motion (ganimator/naturalness.py) on
known cases of a real clip: the clip itself, the clip with noise of growing amplitude, time-warped
copies, a root drifting over planted feet, the clip lowered below its floor or raised above it,
feet that stand still while the body moves, and contact channels that lie."""
import math

import pytest
import torch

from ganimator.dataset import MotionDataset
from ganimator.features import NODE
from ganimator.metrics import PUBLISHED
from ganimator.naturalness import TRAVEL_FLOOR, Naturalness, kinematics, naturalness
from ganimator.pyramid import resample

from conftest import CLIPS


@pytest.fixture(scope="module")
def salsa(clip):
    return MotionDataset.from_bvh(clip("Salsa-Dancing-6.bvh"))


def with_noise(data: MotionDataset, channels, amplitude: float, seed: int = 0) -> torch.Tensor:
    noisy = data.clips[0].features.clone()
    noise = torch.randn(noisy[channels].shape, generator=torch.Generator().manual_seed(seed))
    noisy[channels] += amplitude * noise
    return noisy


def warped(data: MotionDataset, factor: float) -> torch.Tensor:
    """The clip played `factor` times as long: every channel resampled, and the root's per-frame
    velocity divided by `factor` so that the path stays the same."""
    features = resample(data.clips[0].features[None], round(data.clips[0].features.shape[-1] * factor))[0]
    root = data.layout.root
    features[[root.start, root.start + 2]] /= factor  # x and z velocity; height stays
    return features


def test_each_pyramid_level_is_measured_against_the_clip_at_that_level(salsa):
    levels = salsa.clips[0].levels()
    for level in (levels[0], levels[3]):  # as validation measures a stage's top level
        natural = Naturalness(salsa, level)
        assert natural.fps == pytest.approx(salsa.fps * level.shape[-1] / salsa.clips[0].features.shape[-1])
        scores = natural(level[None])
        assert scores["jitter"].item() == pytest.approx(1.0) and scores["foot_skating"].item() == pytest.approx(1.0)
    # Read at a finer level's frame rate, the coarse clip's frames are too far apart: it looks jerky.
    assert Naturalness(salsa, levels[3])(levels[0][None])["jitter"].item() > 2


def test_the_clip_is_as_natural_as_itself_and_its_ground_is_where_its_feet_stand(salsa):
    scores = naturalness(salsa.clips[0].features[None], salsa)
    assert scores["jitter"].item() == pytest.approx(1.0) and scores["foot_skating"].item() == pytest.approx(1.0)
    assert 0 <= scores["penetration"].item() < 0.01  # the floor is where the clip's lowest foot stands
    assert scores["ground_contact"].item() == pytest.approx(1.0) and scores["foot_motion"].item() == pytest.approx(1.0)
    ground = Naturalness(salsa).ground
    feet = kinematics(salsa.clips[0].features, salsa, 0)[:, salsa.skeleton.contacts, 1]
    below = (feet.amin(dim=1) < ground.floor).double().mean().item()  # frames whose lowest foot is under it
    assert 0 < below <= 0.011 and (ground.rest >= 0).all()
    assert (0.01 <= ground.band).all() and (ground.band < 0.1).all()  # centimetres, not the swing of a step


def smooth_rotation_error(data: MotionDataset, degrees: float, samples: int = 8, seed: int = 0) -> torch.Tensor:
    """(samples, C, T) copies of the clip whose joints' rotations are off by `degrees` (standard
    deviation), drifting over about a sixth of a second: the error of a pose nobody sees at 1 degree."""
    features = data.clips[0].features
    rotations, T = data.layout.rotations, features.shape[-1]
    noise = torch.randn(samples * rotations.stop, 1, T, generator=torch.Generator().manual_seed(seed))
    t = torch.arange(-15, 16, dtype=noise.dtype)
    kernel = torch.exp(-0.5 * (t / 5) ** 2)
    noise = torch.nn.functional.conv1d(noise, (kernel / kernel.sum()).view(1, 1, -1), padding=15)
    copies = features.expand(samples, *features.shape).clone()
    copies[:, rotations] += (noise / noise.std() * math.radians(degrees)).view(samples, rotations.stop, T)
    return copies


@pytest.mark.parametrize("name", ["Walk-In-Circle.bvh", "proud.bvh", "Salsa-Dancing-6.bvh", "Crab-dance-long.bvh"])
def test_a_root_drifting_over_planted_feet_skates_more(clip, name):
    """The body sways sideways (0.6 leg lengths a second at most, 12% of a leg each way) over feet
    that stood still in the clip: they slide with it, outside the band. Salsa's dancer pivots and
    slides on the floor (0.36 leg lengths a second of its own), so the same sway adds less to it
    than to a walk (0.12), proud's or the crab's still feet (0.003-0.007, below SLIDING_FLOOR)."""
    data = MotionDataset.from_bvh(clip(name))
    drifting = data.clips[0].features.clone()
    sway = 0.02 * data.skeleton.reach() * torch.sin(2 * torch.pi * torch.arange(drifting.shape[-1]) / 40)
    drifting[data.layout.root.start] += sway  # the root's x velocity a frame
    assert naturalness(drifting[None], data)["foot_skating"].item() > (1.1 if name.startswith("Salsa") else 1.5)


@pytest.mark.parametrize("name", CLIPS)
def test_an_error_nobody_sees_keeps_the_feet_in_the_band(clip, name):
    """Rotations off by 1 degree move the feet a little. Foot skating: against its own sliding
    alone, a clip whose feet barely slide (proud, normal, the crab) read a quarter of a degree as
    1.6-2.5x, outside the band, and 2 degrees as 8-30x; against SLIDING_FLOOR 1 degree reads
    1.0-1.35 on every clip, and 2 degrees more, outside the band where feet stand still. Ground
    contact at one band read a quarter of a degree as 0.70 on the crab, whose feet stand at the
    band's top (CONTACT_BANDS); foot motion read 1 degree as 1.85 there (TRAVEL_FLOOR)."""
    data = MotionDataset.from_bvh(clip(name))
    one, two, quarter = (naturalness(smooth_rotation_error(data, d), data) for d in (1, 2, 0.25))
    assert one["foot_skating"].mean().item() < PUBLISHED.foot_skating[1]
    assert one["foot_skating"].mean().item() < two["foot_skating"].mean().item()
    if name in ("proud.bvh", "Crab-dance-long.bvh"):
        assert two["foot_skating"].mean().item() > PUBLISHED.foot_skating[1]
    assert quarter["ground_contact"].mean().item() > 0.95
    assert one["ground_contact"].mean().item() > PUBLISHED.ground_contact[0]
    assert PUBLISHED.foot_motion[0] < one["foot_motion"].mean().item() < PUBLISHED.foot_motion[1]


def test_the_clip_lowered_by_10_cm_penetrates_the_floor(salsa):
    lowered = salsa.clips[0].features.clone()
    lowered[salsa.layout.root.start + 1] -= 0.10  # the root's height channel, in metres
    scores = naturalness(lowered[None], salsa)
    band = Naturalness(salsa).ground.band.mean().item()
    assert scores["penetration"].item() > 0.5 * 0.10 / band  # most contact frames sink most of 10 cm
    assert scores["foot_skating"].item() >= 1.0  # feet below the floor count as planted


@pytest.mark.parametrize("name", ["Walk-In-Circle.bvh", "proud.bvh", "Salsa-Dancing-6.bvh", "Crab-dance-long.bvh"])
def test_feet_that_hover_above_the_floor_lose_their_ground_contact(clip, name):
    """Raised by 2% of a leg (2 cm on a human), the clip's feet never sink and barely slide on the
    floor, so foot skating and penetration read it as perfect; ground contact does not."""
    data = MotionDataset.from_bvh(clip(name))
    raised = data.clips[0].features.clone()
    raised[data.layout.root.start + 1] += 0.02 * data.skeleton.reach()  # the root's height channel, raw
    scores = naturalness(raised[None], data)
    assert scores["penetration"].item() < 0.01 and scores["foot_skating"].item() < 1.0
    assert scores["ground_contact"].item() < 0.4 < PUBLISHED.ground_contact[0]  # outside the band


def test_contact_channels_are_not_read(salsa):
    """A model that never labels a foot planted used to score 0 foot skating: the labels are its
    guess, and the measure reads positions only."""
    noisy = with_noise(salsa, [salsa.layout.root.start, salsa.layout.root.start + 2], 0.01)
    never = noisy.clone()
    never[salsa.layout.contacts] = 0.0
    always = noisy.clone()
    always[salsa.layout.contacts] = 1.0
    scores = [naturalness(f[None], salsa)["foot_skating"].item() for f in (noisy, never, always)]
    assert scores[0] > 1.0 and scores[0] == scores[1] == scores[2]


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
    # The same path in more time: the speeds' ratio, above the floor both gain.
    travel, floor = Naturalness(salsa).travel.item(), TRAVEL_FLOOR * salsa.skeleton.reach()  # the clip's, with it
    for scores, factor in ((slow, 1.5), (fast, 0.7)):
        assert scores["foot_motion"].item() == pytest.approx(((travel - floor) / factor + floor) / travel, rel=0.02)


@pytest.mark.parametrize("name", ["Walk-In-Circle.bvh", "proud.bvh", "Salsa-Dancing-6.bvh", "Crab-dance-long.bvh"])
def test_feet_that_stand_still_while_the_body_moves_lose_their_foot_motion(clip, name):
    """The upper body as in the clip, the legs held in their first frame's pose and the root in
    place: the feet stand on the ground, neither slide nor sink, and the body jerks as the clip's.
    Only foot motion sees that nothing walks (a skating loss taught proud's model this)."""
    data = MotionDataset.from_bvh(clip(name))
    standing = data.clips[0].features.clone()
    root, skeleton = data.layout.root, data.skeleton
    standing[[root.start, root.start + 2]] = 0  # the root goes nowhere
    standing[root.start + 1] = standing[root.start + 1, :1]  # nor up or down
    for contact in skeleton.contacts:  # every joint from the root down to each foot
        j = contact
        while j >= 0:
            standing[NODE * j:NODE * (j + 1)] = standing[NODE * j:NODE * (j + 1), :1]
            j = skeleton.parents[j]
    scores = naturalness(standing[None], data)
    # Nothing but the floor both gain (TRAVEL_FLOOR): 0.1 where feet travel as a walk's or a
    # dance's do, 0.51 on the crab's, whose feet barely travel.
    assert scores["foot_motion"].item() < 0.55 < PUBLISHED.foot_motion[0]  # outside the band
    assert scores["foot_skating"].item() < 0.01 and scores["penetration"].item() < 0.25  # inside it


def test_coarse_levels_use_the_clips_own_ground(salsa):
    """Validation measures a stage's top level: its feet stand where the clip's do."""
    fine = Naturalness(salsa).ground
    for level in salsa.clips[0].levels()[:3]:
        natural = Naturalness(salsa, level)
        assert torch.equal(natural.ground.band, fine.band) and natural.ground.floor == fine.floor
        scores = natural(level[None])
        assert scores["foot_skating"].item() == pytest.approx(1.0) and scores["penetration"].item() < 0.01
        assert scores["ground_contact"].item() == pytest.approx(1.0) and scores["foot_motion"].item() == pytest.approx(1.0)


def test_a_rig_without_contact_joints_scores_no_sliding_and_no_penetration(tmp_path):
    """The generic rig: validation, evaluation and sweeps score it like any other."""
    import dataclasses

    from ganimator.bvh import write_bvh
    from ganimator.metrics import Scorer
    from ganimator.procedural import procedural_dance

    dance = procedural_dance(3.0)
    write_bvh(tmp_path / "generic.bvh", dataclasses.replace(dance, names=[f"bone{j}" for j in range(len(dance.names))]))
    generic = MotionDataset.from_bvh(tmp_path / "generic.bvh")
    assert generic.skeleton.contacts == []
    scores = Scorer(generic)(with_noise(generic, generic.layout.rotations, 0.02)[None])
    assert scores["foot_skating"].item() == 0.0 and scores["penetration"].item() == 0.0
    assert scores["ground_contact"].item() == 1.0 and scores["foot_motion"].item() == 1.0  # no feet: nothing to see
    assert scores["jitter"].item() > 1.0 and 0 <= scores["coverage"].item() <= 1
