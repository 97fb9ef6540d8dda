import pytest
import torch

from ganimator.config import ConfigError, load_config
from ganimator.dataset import MotionDataset
from ganimator.networks import SkeletonConv1d, build_models, check_fits
from ganimator.run_hooks import RunOutputs
from ganimator.step import train_iteration
from ganimator.trainer import Trainer


@pytest.fixture(scope="module")
def walk(walk_npz):
    return MotionDataset.load(walk_npz)


def node_reads(conv: SkeletonConv1d, node: int, nodes: int) -> set[int]:
    """The input nodes that output node `node` of `conv` depends on, found by differentiation."""
    x = torch.zeros(1, conv.in_channels, 20, requires_grad=True)
    per_out = conv.out_channels // nodes
    (grad,) = torch.autograd.grad(conv(x)[:, node * per_out:(node + 1) * per_out].sum(), x)
    per_node = grad[0].abs().sum(-1).reshape(nodes, -1).sum(-1)
    return set(torch.nonzero(per_node).flatten().tolist())


def test_skeleton_aware_convolutions_read_the_skeleton_graph(walk):
    pyramid, critics = build_models(load_config([]), walk)  # skeleton-aware is the default
    conv = pyramid.generators[0].net[0]
    assert isinstance(conv, SkeletonConv1d)
    names = walk.skeleton.names
    toe, nodes = names.index("LeftToe_End"), walk.layout.num_nodes
    contact = 24 + walk.skeleton.contacts.index(toe)
    root = nodes - 1
    assert node_reads(conv, toe, nodes) == {names.index(n) for n in ("LeftFoot", "LeftToeBase", "LeftToe_End")} | {contact}
    assert node_reads(conv, contact, nodes) == node_reads(conv, toe, nodes) | {root}
    assert node_reads(conv, names.index("LeftFoot"), nodes).isdisjoint({contact, root})  # the graph is directed
    assert node_reads(conv, root, nodes) == {0, 1, 2, 6, 7, 11, 12, 24, 25, 26, 27, root}
    assert names.index("RightHand") not in node_reads(conv, toe, nodes)
    # hidden widths rounded up to multiples of the 29 nodes; the critic's score layer is plain
    widths = [m.out_channels for m in pyramid.generators[0].net if isinstance(m, torch.nn.Conv1d)]
    assert widths == [145, 261, 261, 174]
    assert type(critics[0].net[-1]) is torch.nn.Conv1d and critics[0].net[-1].out_channels == 1


def test_skeleton_aware_init_is_per_node_block(walk):
    """Each node's block is initialised on its own fan-in (uniform in +-1/sqrt(fan_in)), zero
    outside the mask, as the original's SkeletonConv."""
    conv = build_models(load_config([]), walk)[0].generators[0].net[2]
    w, mask = conv.weight.detach(), conv.mask.expand_as(conv.weight)
    assert w[mask == 0].abs().max() == 0
    fan_in = conv.mask[:, :, 0].sum(1) * conv.kernel_size[0]
    bound = fan_in.rsqrt()
    assert (w.abs().amax(dim=(1, 2)) <= bound).all() and (w.abs().amax(dim=(1, 2)) > 0.9 * bound).all()
    assert (conv.bias.detach().abs() <= bound).all()


def test_plain_convolutions_stay_available(clip, tmp_path):
    MotionDataset.from_bvh(clip("proud.bvh")).save(tmp_path / "proud.npz")
    cfg = load_config([f"npz_filename={tmp_path / 'proud.npz'}", f"run_dir={tmp_path / 'run'}", "progress=false",
                       "skeleton_aware=false", "train_data_iter=2", "validation_samples=0"])
    trainer = Trainer(cfg)
    conv = trainer.member.pyramid.generators[0].net[0]
    assert type(conv) is torch.nn.Conv1d and conv.out_channels == 128
    assert trainer.fit([RunOutputs()]).finished


def test_skeleton_aware_training_runs(clip, tmp_path):
    MotionDataset.from_bvh(clip("proud.bvh")).save(tmp_path / "proud.npz")
    cfg = load_config([f"npz_filename={tmp_path / 'proud.npz'}", f"run_dir={tmp_path / 'run'}", "progress=false",
                       "train_data_iter=2", "validation_samples=0"])
    trainer = Trainer(cfg)
    assert trainer.fit([RunOutputs()]).finished
    first = trainer.member.pyramid.generators[6].net[0]
    x = torch.zeros(1, first.in_channels, 30, requires_grad=True)
    (grad,) = torch.autograd.grad(first(x).sum(), x, torch.ones(()))
    jac = torch.stack([torch.autograd.grad(first(x)[0, o].sum(), x)[0][0].abs().sum(-1) for o in range(first.out_channels)])
    assert (jac[first.mask[:, :, 0] == 0] == 0).all()  # after training, masked weights still connect nothing
    assert (jac[first.mask[:, :, 0] == 1] > 0).float().mean() > 0.99


def test_noise_amplitude_scales_apply_per_stage(walk):
    cfg = load_config(["noise_amp_scale=2", "stage_noise_amp_scale=[1,0.5,0,3]"])
    pyramid, _ = build_models(cfg, walk)
    factors = torch.tensor([2, 2, 1, 1, 0, 0, 6], dtype=torch.float32)
    assert torch.allclose(pyramid.amplitudes, walk.clips[0].noise_amplitudes * factors)
    rng = torch.Generator().manual_seed(0)
    assert pyramid.noise(4, 2, 50, rng).abs().max() == 0
    shared = pyramid.noise(0, 2, 50, rng)
    assert torch.equal(shared[:, 0], shared[:, 5])  # one noise value per frame, shared by channels
    full, _ = build_models(load_config(["full_noise=true"]), walk)
    independent = full.noise(0, 1, 50, rng)
    assert not torch.equal(independent[:, 0], independent[:, 5])


def test_critic_masks_are_trained_as_in_the_original(npz, tmp_path):
    """The original's critic masks are parameters in the critic's Adam: inside the neighbourhood
    pattern they move with the weights, outside it both stay 0. Generator masks stay fixed.
    Checkpoints carry the trained masks; one written with fixed masks loads them as 0/1."""
    cfg = load_config([f"npz_filename={npz}", f"run_dir={tmp_path / 'run'}", "progress=false"])
    trainer = Trainer(cfg)
    trainer.begin()
    levels = trainer.begin_stage()
    critic_conv, gen_conv = trainer.member.critics[0].net[0], trainer.member.pyramid.generators[0].net[0]
    assert any(p is critic_conv.mask for p in trainer.member.opt_d[0].param_groups[0]["params"])
    assert not any(p is gen_conv.mask for p in trainer.member.opt_g[0].param_groups[0]["params"])
    pattern = critic_conv.mask.detach().clone()
    train_iteration([trainer.member], levels)
    inside, moved = pattern > 0, (critic_conv.mask.detach() - pattern).abs()
    # five critic steps of at most lr each: the original's masks after one iteration lie in 1 +- 5e-4
    assert moved[inside].max() <= 5 * cfg.optim.lr_d * 1.01 and (moved[inside] > 0).float().mean() > 0.9
    assert moved[~inside].max() == 0 and critic_conv.weight.detach()[~inside.expand_as(critic_conv.weight)].abs().max() == 0
    assert torch.equal(gen_conv.mask, (gen_conv.mask > 0).float())

    state = trainer.state_dict()
    resumed = Trainer(cfg)
    resumed.load_state(state)
    assert torch.equal(resumed.member.critics[0].net[0].mask, critic_conv.mask)
    for critic in state["critics"]:  # as a checkpoint from before trained masks holds them
        for key in [k for k in critic or () if k.endswith("mask")]:
            del critic[key]
    resumed.load_state(state)
    assert torch.equal(resumed.member.critics[0].net[0].mask, pattern)

    frozen = Trainer(load_config([f"npz_filename={npz}", f"run_dir={tmp_path / 'frozen'}", "progress=false",
                                  "train_critic_masks=false"]))
    assert not any(k.endswith("mask") for k in frozen.member.critics.state_dict())
    assert (sum(p.numel() for p in trainer.member.critics.parameters())
            > sum(p.numel() for p in frozen.member.critics.parameters()))


def test_networks_larger_than_memory_are_refused_and_the_default_is_accepted(walk):
    cpu = torch.device("cpu")
    check_fits(load_config([]), walk, cpu)
    with pytest.raises(ConfigError, match=r"'model.hidden_channels' \[20000, 20000, 20000\].*GiB free"):
        check_fits(load_config(["hidden_channels=[20000,20000,20000]"]), walk, cpu)
