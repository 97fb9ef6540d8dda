"""Levers of training speed and quality beyond the original, off by default: a running average of
the generators' weights (optim.ema), bfloat16 arithmetic (util.precision), a loss on feet below
the clip's floor (optim.lambda_floor) and one on jerk beyond the clip's (optim.lambda_jerk, and
optim.lambda_jerk_rec on the reconstruction), on the real trainer."""
from pathlib import Path

import pytest
import torch

from ganimator.config import ConfigError, load_config, resolve_precision
from ganimator.dataset import MotionDataset
from ganimator.features import convert
from ganimator.losses import ContactConsistency, jerk_excess
from ganimator.naturalness import Naturalness
from ganimator.trainer import OnEvent, Trainer

TINY = ["hidden_channels=[16,32,32]", "validation_samples=0", "progress=false", "clearml=off"]


def config(npz, run_dir, *overrides):
    return load_config([f"npz_filename={npz}", f"run_dir={run_dir}", *TINY, *overrides])


def stage_one_weights(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for l in (0, 1) for p in trainer.member.pyramid.generators[l].parameters()]


def run_recording(cfg) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """The first stage's generator weights before training and at each of its events."""
    trainer = Trainer(cfg)
    initial, seen = stage_one_weights(trainer), []
    trainer.fit([OnEvent(lambda e: e.stage == 0 and seen.append(stage_one_weights(trainer)))])
    return initial, seen


def test_ema_validates_and_keeps_the_running_average_while_training_the_raw_weights(npz, tmp_path):
    common = ["budget_iters=24", "validate_every=1", "seed=3", "lr_g=1e-3"]
    initial, raw = run_recording(config(npz, tmp_path / "raw", *common))
    _, averaged = run_recording(config(npz, tmp_path / "ema", *common, "ema=0.8"))
    assert len(raw) == len(averaged) == 6  # stage 1: 6 iterations, 5 validations and its end

    expected, mean = [], initial  # the average computed here from the raw run's weights
    for t, weights in enumerate(raw):
        decay = min(0.8, (1 + t) / (10 + t))
        mean = [decay * m + (1 - decay) * w for m, w in zip(mean, weights)]
        expected.append(mean)
    for t, (seen, want, own) in enumerate(zip(averaged, expected, raw)):
        assert all(torch.allclose(s, w, atol=1e-6) for s, w in zip(seen, want)), t
        if t > 0:  # the average lags the raw weights, so the two runs' validations differ
            assert max((s - o).abs().max() for s, o in zip(seen, own)) > 1e-4, t
    # Training went on with the raw weights: the average at iteration t never leaked into t + 1.
    # Had it, the averaged run's own weights and so its average would have drifted from these.

    after = Trainer(config(npz, tmp_path / "ema-after", *common, "ema=0.8"))
    after.fit()
    assert all(torch.allclose(a, w, atol=1e-6) for a, w in zip(stage_one_weights(after), expected[-1]))
    assert after.member.averages == {}  # none kept past the last stage


def test_bf16_trains_in_bfloat16_and_keeps_float32_weights(npz, tmp_path):
    losses = {}
    for precision in ("fp32", "bf16"):
        cfg = config(npz, tmp_path / precision, "budget_iters=4", f"precision={precision}")
        trainer = Trainer(cfg)
        result = trainer.fit()
        first = result.events[0]  # stage 1's end: its one iteration's losses
        losses[precision] = {k: v for k, v in first.metrics.items() if "/" in k}
        dtypes = {p.dtype for p in [*trainer.member.pyramid.parameters(), *trainer.member.critics.parameters()]}
        assert dtypes == {torch.float32}
    rec = [k for k in losses["fp32"] if k.endswith("reconstruction")]
    assert rec and all(abs(losses["bf16"][k] / losses["fp32"][k] - 1) < 0.05 for k in rec)  # bfloat16's 3 digits
    assert any(losses["bf16"][k] != losses["fp32"][k] for k in rec)  # and bfloat16 it was


def test_auto_precision_is_bf16_where_the_cpu_computes_it(npz, tmp_path):
    """precision=auto (in preset=fast): bf16 where the CPU's own flags (Linux: /proc/cpuinfo) name
    avx512_bf16 or AMX's, fp32 elsewhere, and as given when named."""
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").is_file() else set()
    native = bool(flags & {"avx512_bf16", "amx_bf16"})
    trainer = Trainer(config(npz, tmp_path / "auto", "budget_iters=1", "precision=auto"))
    assert trainer.precision == ("bf16" if native else "fp32")
    with trainer.autocast():  # what its training iterations run in
        product = torch.ones(2, 2) @ torch.ones(2, 2)
    assert product.dtype == (torch.bfloat16 if native else torch.float32)
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert load_config(["npz_filename=x.npz", "preset=fast"]).util.precision == "auto"


def test_the_floor_loss_is_how_far_feet_stand_off_the_clips_floor_in_body_heights(clip):
    data = MotionDataset.from_bvh(clip("Salsa-Dancing-6.bvh"))
    ground, body = data.ground_and_body()
    assert 0 < ground.floor < 0.03 and 0.8 < body < 1.0  # metres: the toes' floor, the hips' height
    loss = ContactConsistency(data.skeleton, data.layout, ground, body)
    real = data.clips[0].features[None]

    def moved(fraction):  # the clip with its root's height channel (raw units) moved by this much of the body
        x = real.clone()
        x[:, data.layout.root.start + 1] += fraction * body
        return x

    assert loss(real)[1].item() < 1e-3  # the clip stands on its floor, its planted feet within their bands
    lowered = moved(-0.1).requires_grad_(True)
    sunk = loss(lowered)[1]
    assert 0.06 < sunk.item() <= 0.1  # most of the 10%, where a foot stood above the floor less
    sunk.sum().backward()
    assert lowered.grad[0, data.layout.root.start + 1].sum() < 0  # descending lifts the body
    # Feet that hover while labelled planted cost too: depth alone is met by lifting them.
    assert loss(moved(0.1))[1].item() > 0.03 and loss(moved(0.02))[1].item() > 5 * loss(real)[1].item()
    # Alike in the root's own units (root_scale): the features differ, the loss does not.
    scaled = data.with_root_scale(24.0)
    in_units = convert(lowered[0].detach(), data.layout, scaled.layout.root_units)[None]
    assert ContactConsistency(scaled.skeleton, scaled.layout, *scaled.ground_and_body())(in_units)[1].item() == \
        pytest.approx(sunk.item(), rel=1e-4)


def test_the_floor_loss_keeps_samples_out_of_the_floor(npz, tmp_path):
    """Same seed, 200 iterations of tiny networks: the samples' penetration at the stage ends,
    without the loss and with it. Trained this briefly, feet go tens of contact bands deep."""
    depth = {}
    for weight in (0, 500):
        cfg = config(npz, tmp_path / str(weight), "budget_iters=200", "validate_every=200", "validation_samples=8",
                     f"lambda_floor={weight}", "seed=0")
        result = Trainer(cfg).fit()
        depth[weight] = sum(e.quality.penetration for e in result.events if e.quality)
        losses = result.events[-1].metrics
        assert ("6/floor" in losses) == bool(weight)  # logged where it is trained
    assert depth[500] < depth[0] / 4, depth


def test_the_jerk_loss_is_the_jerk_that_jitter_measures_beyond_the_clips_own(npz):
    data = MotionDataset.load(npz)
    ground, body = data.ground_and_body()
    loss = ContactConsistency(data.skeleton, data.layout, ground, body)
    real = data.clips[0].features[None].float()
    own = loss.jerk(real)
    # naturalness.jerk's measure, in body heights per frame cubed: jitter is the ratio of the two
    assert own.item() * body * data.fps ** 3 == pytest.approx(Naturalness(data).jerk.item(), rel=1e-4)
    assert jerk_excess(own, own).item() == 0

    generator = torch.Generator().manual_seed(0)
    wobble = 0.002 * torch.randn(real[:, data.layout.rotations].shape, generator=generator)
    shaky = real.clone()
    shaky[:, data.layout.rotations] += wobble  # rotation features off by 0.2%, frame by frame
    excess = jerk_excess(loss.jerk(shaky), own).item()
    assert excess > 1  # a wobble no pose measure sees: jerk multiplies it
    assert jerk_excess(loss.jerk(real[..., ::2].repeat_interleave(2, -1)), own).item() > 0  # steps jerk
    slow = torch.nn.functional.interpolate(real, scale_factor=2, mode="linear")
    assert jerk_excess(loss.jerk(slow), own).item() == 0  # smoother than the clip is not its business

    # Its gradient takes the wobble out: a few steps on the wobbling copy lower the excess.
    shaky.requires_grad_(True)
    opt = torch.optim.Adam([shaky], lr=2e-4)
    for _ in range(20):
        opt.zero_grad()
        jerk_excess(loss.jerk(shaky), own).sum().backward()
        opt.step()
    assert jerk_excess(loss.jerk(shaky), own).item() < 0.5 * excess
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as bf16 training calls it: still in float32
        assert loss.jerk(real).item() == own.item()


@pytest.mark.parametrize("key,logged", [("lambda_jerk", "6/jerk"), ("lambda_jerk_rec", "6/jerk_rec")])
def test_the_jerk_loss_makes_samples_tremble_less(npz, tmp_path, key, logged):
    """Same seed, tiny networks, 200 iterations: the samples' jitter at the last stage's end,
    without the loss and with it, on the adversarial step's samples or on the reconstruction."""
    jitter = {}
    for weight in (0, 10):
        cfg = config(npz, tmp_path / str(weight), "budget_iters=200", "validate_every=200", "validation_samples=8",
                     f"{key}={weight}", "seed=0")
        result = Trainer(cfg).fit()
        jitter[weight] = result.events[-1].quality.jitter
        assert (logged in result.events[-1].metrics) == bool(weight)  # logged where it is trained
    assert jitter[10] < 0.8 * jitter[0], jitter


def test_the_progress_bar_shows_both_jerk_losses_apart(npz, tmp_path, capsys):
    """The bar abbreviates each loss it shows, with its level; `jerk` and `jerk_rec` must not both
    become `jer`. The bar's last draw holds the last iteration's losses of the last stage."""
    cfg = load_config([f"npz_filename={npz}", f"run_dir={tmp_path / 'run'}", "hidden_channels=[16,32,32]",
                       "validation_samples=0", "clearml=off", "budget_iters=8", "lambda_jerk=1",
                       "lambda_jerk_rec=1"])
    Trainer(cfg).fit()
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    for shown in ("cri6=", "adv6=", "rec6=", "jrk6=", "jrec6="):
        assert shown in last, last


@pytest.mark.parametrize("override,message", [("ema=1", "'optim.ema' is a decay per iteration"),
                                              ("precision=fp16", "'util.precision' must be one of fp32, bf16, auto"),
                                              ("lambda_floor=-1", "'optim.lambda_floor'"),
                                              ("lambda_jerk=-1", "'optim.lambda_jerk'"),
                                              ("lambda_jerk_rec=-1", "'optim.lambda_jerk_rec'")])
def test_bad_lever_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(["npz_filename=x.npz", override])
