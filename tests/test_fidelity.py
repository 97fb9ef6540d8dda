"""The model is the published GANimator: features, skeleton graph, networks and sampling are
checked against facts taken from the original code (PeizhuoLi/ganimator). The fixture
tests/data/original_fixtures.json was written by running the original's own code on the shared
clips (`python benchmarks/original_code.py fixtures --original PATH`)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ganimator.bvh import BVH, write_bvh
from ganimator.config import load_config
from ganimator.dataset import MotionDataset
from ganimator.networks import SkeletonConv1d
from ganimator.procedural import procedural_dance
from ganimator.networks import build_models
from ganimator.step import train_iteration
from ganimator.run_hooks import train
from ganimator.trainer import Trainer

from benchmarks import original_code  # its functions that run this project only: the original's code is not needed here

ORIGINAL = json.loads((Path(__file__).parent / "data" / "original_fixtures.json").read_text())
CLIPS = ["Salsa-Dancing-6", "Crab-dance-long", "proud"]


@pytest.fixture(scope="module")
def datasets(clip):
    return {name: MotionDataset.from_bvh(clip(f"{name}.bvh")) for name in CLIPS}


def nonzero_weights(stack) -> list[int]:
    return [int((m.effective_weight if isinstance(m, SkeletonConv1d) else m.weight).ne(0).sum())
            for m in stack if isinstance(m, torch.nn.Conv1d)]


def widths(stack) -> list[int]:
    convs = [m for m in stack if isinstance(m, torch.nn.Conv1d)]
    return [convs[0].in_channels] + [m.out_channels for m in convs]


@pytest.mark.parametrize("name", CLIPS)
def test_skeleton_and_graph_are_the_originals(datasets, name):
    data, original = datasets[name], ORIGINAL[name]
    s = data.skeleton
    assert s.names == original["joint_names"] and s.parents == original["parents"]
    assert s.contacts == original["contact_joint_ids"]
    assert s.node_neighbours(2) == original["neighbour_lists"]


@pytest.mark.parametrize("name", CLIPS)
def test_networks_are_the_originals(datasets, name):
    """Same widths and the same number of weights that can be nonzero, layer by layer."""
    data, original = datasets[name], ORIGINAL[name]
    pyramid, critics = build_models(load_config([]), data)
    generator, critic = pyramid.generators[0].net, critics[0].net
    assert widths(generator) == original["generator_channels"]
    assert widths(critic) == original["critic_channels"]
    assert nonzero_weights(generator) == original["generator_nonzero"]
    assert nonzero_weights(critic) == original["critic_nonzero"]


@pytest.mark.parametrize("name", CLIPS)
def test_features_and_pyramid_are_the_originals(datasets, name):
    data, original = datasets[name], ORIGINAL[name]
    assert data.layout.channels == original["n_channels"]
    assert data.clips[0].features.shape[1] == original["num_frames"] and data.clips[0].level_lengths == original["level_lengths"]
    assert torch.allclose(data.clips[0].noise_amplitudes, torch.tensor(original["amplitudes"]), rtol=1e-4, atol=1e-6)
    f = data.clips[0].features.double()
    assert torch.allclose(f.mean(1), torch.tensor(original["channel_mean"], dtype=torch.float64), atol=2e-5)
    assert torch.allclose(f.std(1), torch.tensor(original["channel_std"], dtype=torch.float64), atol=2e-5)
    labels = f[data.layout.contacts]
    assert labels[:, 0].tolist() == original["frame0_contacts"]
    assert torch.allclose(labels.mean(1), torch.tensor(original["contact_rate"], dtype=torch.float64), atol=1e-6)


def test_frozen_stages_draw_a_fresh_output_for_every_sub_step(datasets, tmp_path):
    """As the original: every critic step and the adversarial step see their own sample of the
    frozen levels, and those levels run once per iteration, batched, without autograd."""
    datasets["proud"].save(tmp_path / "proud.npz")
    cfg = load_config([f"npz_filename={tmp_path / 'proud.npz'}", f"run_dir={tmp_path / 'run'}", "progress=false"])
    trainer = Trainer(cfg)
    trainer.begin()
    trainer.stage = 1
    levels = trainer.begin_stage()  # levels 2 and 3; 0 and 1 are frozen
    seen = []
    hook = trainer.member.pyramid.generators[1].net.register_forward_hook(  # the net: populations fuse it
        lambda module, args, out: seen.append((out.detach().clone(), torch.is_grad_enabled())))
    train_iteration([trainer.member], levels)
    hook.remove()
    random_calls = [(out, grad) for out, grad in seen if out.shape[0] > 1]
    assert len(random_calls) == 1  # one batched call for all the sub-steps
    out, grad = random_calls[0]
    assert out.shape[0] == cfg.optim.critic_steps + 1 and not grad
    flat = out.flatten(1)
    distance = torch.cdist(flat, flat) + torch.eye(len(flat)) * 1e9
    assert distance.min() > 1e-3  # every sub-step's draw differs from every other


def test_a_generic_rig_trains_skeleton_aware(tmp_path):
    """A rig the project does not know keeps every joint, has no contact nodes, and still gets the
    original's graph: each joint its 2-bone neighbourhood, the root node the root joint's."""
    bvh = procedural_dance(seconds=4)
    bvh.names = [f"bone{j}" for j in range(len(bvh.names))]
    write_bvh(tmp_path / "generic.bvh", bvh)
    data = MotionDataset.from_bvh(tmp_path / "generic.bvh")
    assert data.skeleton.rig == "generic" and data.layout.channels == 6 * (len(bvh.names) + 1)
    neighbours = data.skeleton.node_neighbours(2)
    root = len(bvh.names)
    assert neighbours[root] == sorted(set(neighbours[0]) - {root} | {root})
    data.save(tmp_path / "generic.npz")
    cfg = load_config([f"npz_filename={tmp_path / 'generic.npz'}", f"run_dir={tmp_path / 'run'}", "progress=false",
                       "train_data_iter=1", "validation_samples=0"])
    assert train(cfg).finished


@pytest.mark.parametrize("name", list(ORIGINAL["skeleton_database"]))
def test_every_rig_of_the_original_is_ours(name, tmp_path):
    """Each rig of the original's skeleton database (its bvh/skeleton_database.py, recorded in the
    fixture) is read as the original reads it: a file with its joints (here a synthetic one,
    every joint a child of the root, in a namespace, with an extra joint the rig drops) keeps them
    in the rig's order, labels the same contact joints with the same threshold, and gets the
    original's channel count: 6 per joint, per contact node and for the root block."""
    rig = ORIGINAL["skeleton_database"][name]
    joints = rig["joints"]
    names = [f"ns:{n}" for n in [joints[0], "ExtraJoint", *reversed(joints[1:])]]
    frames = 20  # the shortest clip the pyramid takes is 15 frames
    rng = np.random.default_rng(0)
    motion = np.concatenate([rng.normal(0, 0.05, (frames, 3)) + [0, 100, 0],
                             rng.normal(0, 5, (frames, 3 * len(names)))], axis=1)
    channels = [("Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation", "Yrotation")] + \
               [("Zrotation", "Xrotation", "Yrotation")] * (len(names) - 1)
    bvh = BVH(names=names, parents=[-1] + [0] * (len(names) - 1), offsets=rng.normal(0, 10, (len(names), 3)),
              channels=channels, frame_time=1 / 30, motion=motion)
    write_bvh(tmp_path / "rig.bvh", bvh)
    data = MotionDataset.from_bvh(tmp_path / "rig.bvh")
    s = data.skeleton
    assert s.names == joints and s.parents == [-1] + [0] * (len(joints) - 1)
    assert [s.names[c] for c in s.contacts] == rig["contacts"]
    assert s.contact_threshold == rig["contact_threshold"]
    assert data.layout.channels == 6 * (len(joints) + len(rig["contacts"]) + 1)


ITERATION = np.load(Path(__file__).parent / "data" / "original_iteration.npz")


@pytest.mark.parametrize("stage", ITERATION["stages"].tolist())
def test_one_training_iteration_is_the_originals(stage, clip, tmp_path):
    """One full iteration (five critic steps, the adversarial and the reconstruction step) of
    stages [0, 1] and [4, 5] (levels 0-3 frozen), in float64, equals the original's, which
    tests/data/original_iteration.npz records (benchmarks/original_code.py fixtures
    --iteration-out): the original was given this project's initial weights, z*, levels,
    amplitudes and random draws, and trained its critics' masks. Every loss and every trained
    tensor (probed at 128 positions, and its whole update by L1 norm and a projection) agrees to
    1e-6; the two codes were 2e-10 apart when it was recorded. A change to what an iteration
    computes fails here."""
    assert str(ITERATION["clip"]) == original_code.ITERATION_CLIP and int(ITERATION["seed"]) == original_code.ITERATION_SEED
    short = original_code.trimmed_clip(clip(original_code.ITERATION_CLIP), int(ITERATION["frames"]), tmp_path / "short.bvh")
    trainer, levels = original_code.our_trainer(short, stage, original_code.ITERATION_SEED, tmp_path)
    nets = lambda: ([g.net for g in trainer.member.pyramid.generators], [c.net for c in trainer.member.critics])  # noqa: E731
    before = {k: t.detach().clone() for k, t in original_code.trained_tensors(*nets(), levels).items()}
    for key, tensor in before.items():  # the start the original was given is this project's
        positions = torch.from_numpy(ITERATION[f"{stage}/{key}/positions"]).long()
        assert torch.equal(tensor.flatten()[positions], torch.from_numpy(ITERATION[f"{stage}/{key}/initial"])), \
            f"{key}: initial weights changed since the fixture was recorded; record it again"

    [losses] = train_iteration([trainer.member], levels)
    for l in levels:
        for name in ("critic", "gp", "adversarial", "contact", "reconstruction"):
            expected = float(ITERATION[f"{stage}/loss/{l}/{name}"])
            assert abs(losses[f"{l}/{name}"] - expected) < 1e-6, (f"{l}/{name}", losses[f"{l}/{name}"], expected)
    after = original_code.trained_tensors(*nets(), levels)
    assert after.keys() == before.keys()
    for key, tensor in after.items():
        positions = torch.from_numpy(ITERATION[f"{stage}/{key}/positions"]).long()
        probed = tensor.detach().flatten()[positions]
        assert (probed - torch.from_numpy(ITERATION[f"{stage}/{key}/updated"])).abs().max() < 1e-6, key
        delta = tensor.detach() - before[key]
        l1 = float(ITERATION[f"{stage}/{key}/l1"])
        assert abs(float(delta.abs().sum()) - l1) <= 1e-6 * l1 + 1e-9, (key, float(delta.abs().sum()), l1)
        assert abs(original_code.projection(delta) - float(ITERATION[f"{stage}/{key}/projection"])) < 1e-6, key
