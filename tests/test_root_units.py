"""data.root_scale: the root block centred and scaled (features.RootUnits), a measured deviation
from the original's raw channels. What it must keep: the same motion, once decoded, everywhere a
run reads or writes features."""
import numpy as np
import pytest
import torch

from ganimator import npz as npz_format
from ganimator.config import ConfigError, load_config
from ganimator.dataset import MotionDataset
from ganimator.edit import read_clip
from ganimator.features import RAW
from ganimator.generate import load_run
from ganimator.naturalness import kinematics
from ganimator.population import Population
from ganimator.run_hooks import train
from ganimator.trainer import Trainer

TINY = ["hidden_channels=[16,32,32]", "validation_samples=0", "progress=false", "clearml=off"]


def config(npz, run_dir, *overrides):
    return load_config([f"npz_filename={npz}", f"run_dir={run_dir}", *TINY, *overrides])


def test_scaled_root_decodes_to_the_same_motion(npz, tmp_path):
    raw = MotionDataset.load(npz)
    scaled = raw.with_root_scale(24)
    height = raw.layout.root.start + 1
    clip, own = raw.clips[0], scaled.clips[0]
    assert raw.layout.root_units == RAW and scaled.layout.root_units != RAW
    # The height channel is centred and the root block scaled up; nothing else moves.
    assert abs(float(own.features[height].mean())) < 1e-4 < abs(float(clip.features[height].mean()))
    assert own.features[raw.layout.root].std(-1).min() > 5 * clip.features[raw.layout.root].std(-1).max() / 24
    assert torch.equal(own.features[raw.layout.pose], clip.features[raw.layout.pose])
    assert not torch.allclose(own.noise_amplitudes, clip.noise_amplitudes)  # measured on the new features
    assert torch.equal(own.z_star, clip.z_star)
    # Decoded, the two are one motion, in the clip's units.
    assert torch.allclose(kinematics(own.features, scaled, 0), kinematics(clip.features, raw, 0), atol=1e-4)

    assert scaled.with_root_scale(24) is scaled
    back = scaled.with_root_scale(0)
    assert back.layout.root_units == RAW and torch.allclose(back.clips[0].features, clip.features, atol=1e-5)

    scaled.save(tmp_path / "scaled.npz")
    again = MotionDataset.load(tmp_path / "scaled.npz")
    assert again.layout.root_units == scaled.layout.root_units
    assert torch.equal(again.clips[0].features, own.features)
    assert again.with_root_scale(24) is again  # a resumed run's own copy is not converted twice


def test_an_npz_written_before_root_units_reads_as_the_original(npz, tmp_path):
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files if k != "root_units"}
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    assert MotionDataset.load(old).layout.root_units == RAW

    arrays["root_units"] = np.array([2.0, 0.0])
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(npz_format.DatasetError, match=r"bad.npz: key 'root_units'"):
        MotionDataset.load(tmp_path / "bad.npz")


def test_a_run_with_a_scaled_root_trains_generates_and_exports_in_metres(npz, tmp_path):
    cfg = config(npz, tmp_path / "run", "budget_iters=16", "root_scale=24", "seed=1")
    trainer = Trainer(cfg)
    trainer.fit()
    run = load_run(tmp_path / "run")
    assert run.dataset.layout.root_units == trainer.dataset.layout.root_units != RAW  # its own copy says so
    raw = MotionDataset.load(npz)
    clip_height = raw.clips[0].motion.root_positions[:, 1]
    # The reconstruction, decoded, stands where the clip stands (a raw reading of its centred
    # channel would put the root about 2.4 units lower).
    rec = kinematics(run.reconstruct(0)[0], run.dataset, 0)[..., 0, 1]
    assert abs(float(rec.mean() - clip_height.mean())) < 0.25
    quality = run.evaluate(4, seed=0)
    assert all(v == v for v in quality.as_dict().values())
    sample = run.generate(run.evaluation_length(), 1, seed=0)
    paths = run.write(sample, tmp_path / "out")
    written = run.dataset.read_like(paths[0])  # the BVH, in the clip's units
    decoded = run.dataset.clips[0].decode(sample[0])[0].root_positions[:, 1]
    assert torch.allclose(written.root_positions[:, 1], decoded.to(written.root_positions), atol=1e-3)
    with np.load(tmp_path / "out" / "sample.npz") as saved:  # the features in the original's units
        assert torch.allclose(torch.from_numpy(saved["features"])[0, raw.layout.root.start + 1], decoded.float(), atol=1e-4)


def test_root_scale_is_checked_and_shared_by_a_population(npz, tmp_path):
    with pytest.raises(ConfigError, match="'data.root_scale' must not be negative"):
        config(npz, tmp_path / "bad", "root_scale=-1")
    cfgs = [config(npz, tmp_path / f"m{k}", f"root_scale={s}") for k, s in enumerate((0, 24))]
    with pytest.raises(ConfigError, match="share config key 'data.root_scale'"):
        Population(cfgs)


def test_a_conditional_run_in_root_units_follows_a_raw_runs_trajectories(clip, npz, tmp_path):
    base = train(config(npz, tmp_path / "base", "train_data_iter=2"))
    cond = load_run(train(config(npz, tmp_path / "cond", "train_data_iter=2", "root_scale=24",
                                 f"trajectory_run={base.run_dir}")).run_dir)
    raw = load_run(base.run_dir)
    assert raw.dataset.layout.root_units == RAW != cond.dataset.layout.root_units
    # The trajectories it is given, sampled from the raw run, are the raw run's motion in its units.
    lengths = cond.level_lengths(120, 1)
    given = cond.trajectory_source(lengths, 1, torch.Generator().manual_seed(5))[-1]
    drawn = raw.pyramid.sample(lengths, 1, torch.Generator().manual_seed(5))
    assert torch.allclose(kinematics(given, cond.dataset, 0), kinematics(drawn, raw.dataset, 0), atol=1e-4)
    # A trajectory read from a BVH is followed in metres: the root comes out where the file has it.
    trajectory = read_clip(cond, clip("proud.bvh"))[0]
    out = cond.generate(0, samples=1, trajectory=trajectory)
    want = MotionDataset.load(npz).clips[0].motion.root_positions
    assert torch.allclose(cond.dataset.clips[0].decode(out[0])[0].root_positions, want.float(), atol=1e-4)
