"""The original's applications on our trainer, on the shared clips: motion mixing, key-frame
editing, style transfer, trajectory-conditioned generation and foot-contact clean-up."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ganimator.bvh import load_motion, motion_to_bvh, read_bvh, write_bvh
from ganimator.config import ConfigError, load_config
from ganimator.dataset import DatasetError, MotionDataset
from ganimator.edit import KeyFrames, read_clip, transfer_style
from ganimator.generate import GenerationError, load_run
from ganimator.metrics import Scorer
from ganimator.pyramid import pyramid_lengths, resample
from ganimator.review_server import review_dirs
from ganimator.networks import FusedPyramid
from ganimator import run_hooks
from ganimator.run_hooks import RunOutputs, build_trainer
from ganimator.step import _draw, train_iteration
from ganimator.trainer import OnEvent, Trainer, fit

from conftest import clean_env

BIN = Path(sys.executable).parent
TINY = ["validate_every=2", "validation_samples=2", "hidden_channels=[16,32,32]", "progress=false", "clearml=off",
        "artifact_samples=0"]


def train(npz, run_dir, *overrides, iters=4) -> Path:
    cfg = load_config([f"npz_filename={npz}", f"run_dir={run_dir}", f"train_data_iter={iters}", *TINY, *overrides])
    run_hooks.train(cfg)
    return run_dir


def tool(name, *args, cwd, ok=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / name), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=clean_env(Path(cwd)))
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return proc


# ---- motion mixing ------------------------------------------------------------------------------

def test_clips_of_one_skeleton_mix_into_one_training_file(clip, tmp_path):
    proud, normal = clip("proud.bvh"), clip("normal.bvh")
    out = tool("ganimator-preprocess", proud, normal, "mix.npz", cwd=tmp_path).stdout
    assert "proud.bvh: 82 frames, levels [16, 21, 28, 37, 49, 65, 82]" in out
    assert "normal.bvh: 90 frames, levels [18, 24, 32, 42, 56, 74, 90]" in out
    mix = MotionDataset.load(tmp_path / "mix.npz")
    alone = MotionDataset.from_bvh(proud)
    assert [c.source for c in mix.clips] == ["proud.bvh", "normal.bvh"] and mix.num_frames == 172
    assert torch.equal(mix.clips[0].features, alone.clips[0].features)
    assert torch.equal(mix.clips[0].z_star, alone.clips[0].z_star)
    assert torch.equal(mix.clips[1].features, MotionDataset.from_bvh(normal).clips[0].features)
    # Each clip keeps its own amplitudes; a longer pyramid loses its coarsest levels (at 1/20,
    # proud makes 13 levels, normal 14).
    assert not torch.equal(mix.clips[0].noise_amplitudes, mix.clips[1].noise_amplitudes)
    sparse = MotionDataset.from_bvhs([proud, normal], ratio=1 / 20)
    full = pyramid_lengths(90, 1 / 20)
    assert len(full) == 14 and sparse.clips[1].level_lengths == full[1:] and sparse.num_levels == 13

    with pytest.raises(DatasetError, match=r"proud.bvh: another skeleton than .*Salsa-Dancing-6.bvh's \(rig 'xia'"):
        MotionDataset.from_bvhs([clip("Salsa-Dancing-6.bvh"), proud])
    # `a.bvh b.bvh` without an output must not write over b.bvh
    bad = tool("ganimator-preprocess", proud, normal, cwd=tmp_path, ok=False).stderr
    assert "normal.bvh is a BVH file, not the npz to write" in bad and normal.stat().st_size > 0


def test_mixed_clips_take_turns_in_every_sub_step_and_share_one_fake_pool(clip, tmp_path):
    """As the original's joint_train mixes: each of the seven sub-steps runs every clip before
    the next sub-step (critic step 1 on proud, on normal, critic step 2 on proud, ...), and a
    level's critic keeps one pool of fakes for all clips, so it also sees one clip's fakes
    against the other's real motion."""
    MotionDataset.from_bvhs([clip("proud.bvh"), clip("normal.bvh")]).save(tmp_path / "mix.npz")
    cfg = load_config([f"npz_filename={tmp_path / 'mix.npz'}", f"run_dir={tmp_path / 'mix'}", "fake_pool_size=4", *TINY])
    trainer = Trainer(cfg)
    trainer.begin()
    levels = trainer.begin_stage()
    low, top = levels[0], levels[-1]
    seen = []  # the critic's and the generator's inputs, and the optimiser steps, in order
    trainer.member.critics[low].net.register_forward_pre_hook(lambda m, args: seen.append(("critic", args[0].shape[-1])))
    generator = trainer.member.pyramid.generators[top]
    generator.net.register_forward_pre_hook(lambda m, args: seen.append(("gen", args[0].shape[-1])))
    trainer.member.opt_d[low].register_step_post_hook(lambda *a: seen.append(("D step", None)))
    trainer.member.opt_g[top].register_step_post_hook(lambda *a: seen.append(("G step", None)))
    for _ in range(2):
        train_iteration([trainer.member], levels)
    clip_of = {(net, c.lengths[level]): k for k, c in enumerate(trainer.member.clips)
               for net, level in (("critic", low), ("gen", top))}
    last, steps, critic_calls, mixed = {}, [], set(), 0
    for kind, length in seen:
        if length is not None:
            last[kind] = length
            critic_calls |= {length} if kind == "critic" else set()
        else:  # a critic step's last call is its penalty's, on the clip's length; a G step's too
            net = "critic" if kind == "D step" else "gen"
            steps.append((kind, clip_of[net, last[net]]))
            mixed += kind == "D step" and len(critic_calls) == 2  # a clip's real against the other's fake
            critic_calls = set()
    one_iteration = [("D step", 0), ("D step", 1)] * 5 + [("G step", 0), ("G step", 1)] * 2
    assert steps == one_iteration * 2
    assert len(trainer.member.pools) == len(trainer.member.critics) and mixed > 0


def test_a_mixed_model_learns_and_is_scored_on_every_clip(clip, tmp_path):
    MotionDataset.from_bvhs([clip("proud.bvh"), clip("normal.bvh")]).save(tmp_path / "mix.npz")
    cfg = load_config([f"npz_filename={tmp_path / 'mix.npz'}", f"run_dir={tmp_path / 'mix'}", "train_data_iter=16",
                       "lr_g=3e-4", *TINY])
    trainer = Trainer(cfg)
    with torch.no_grad():
        before = [(c.pyramid.reconstruct(c.lengths)[-1] - c.reals[-1]).abs().mean().item() for c in trainer.member.clips]
    result = trainer.fit([RunOutputs()])
    assert result.finished and all(e.quality is not None for e in result.events)
    run = load_run(tmp_path / "mix")
    after = [(run.reconstruct(k)[0] - c.features).abs().mean().item() for k, c in enumerate(run.dataset.clips)]
    assert after[0] < 0.7 * before[0] and after[1] < 0.7 * before[1], (before, after)  # both clips trained
    quality = run.evaluate(samples=2)
    assert run.evaluation_length() == 2 * (82 + 90) and 0 <= quality.coverage <= 1


def test_a_mixed_run_edits_the_key_frames_of_the_clip_it_is_told(clip, tmp_path):
    """Two clips have two coarsest levels: key-frame editing names one, or is refused."""
    MotionDataset.from_bvhs([clip("proud.bvh"), clip("normal.bvh")]).save(tmp_path / "mix.npz")
    run = load_run(train(tmp_path / "mix.npz", tmp_path / "mix", iters=2))
    with pytest.raises(GenerationError, match=r"mixes 2 clips \(proud.bvh \+ normal.bvh\): say whose key frames"):
        KeyFrames(run)
    with pytest.raises(GenerationError, match="clip 2: .* has clips 0 to 1"):
        KeyFrames(run, 2)
    editor = KeyFrames(run, 1)  # normal.bvh: 90 frames, coarsest level 18
    keys = editor.motion()
    assert keys.num_frames == 18 and editor.spacing == 5
    write_bvh(tmp_path / "keys.bvh", motion_to_bvh(keys, run.dataset.skeleton))
    assert editor.edit(tmp_path / "keys.bvh").shape == (1, run.dataset.layout.channels, 90)
    with pytest.raises(GenerationError, match="18 key frames, and .* coarsest level has 16"):
        KeyFrames(run, 0).edit(tmp_path / "keys.bvh")


def test_a_mixed_run_resumes_mid_stage_as_if_never_stopped(clip, tmp_path):
    """Each clip's pool of past fakes, its frozen reconstruction and the shared generators survive a resume."""
    MotionDataset.from_bvhs([clip("proud.bvh"), clip("normal.bvh")]).save(tmp_path / "mix.npz")
    base = [f"npz_filename={tmp_path / 'mix.npz'}", "train_data_iter=4", "checkpoint_every=2", "fake_pool_size=2",
            *TINY]
    straight = Trainer(load_config([*base, f"run_dir={tmp_path / 'straight'}"]))
    assert straight.fit([RunOutputs()]).finished
    stop = lambda e: e.kind == "validation" and e.stage == 1  # noqa: E731 - mid-stage 2
    cut = load_config([*base, f"run_dir={tmp_path / 'cut'}"])
    assert not run_hooks.train(cut, hooks=[OnEvent(stop)]).finished
    resumed = Trainer(load_config([*base, f"run_dir={tmp_path / 'cut'}", "resume=true"]))
    assert resumed.fit([RunOutputs()]).finished
    for (name, x), (_, y) in zip(straight.member.pyramid.state_dict().items(),
                                 resumed.member.pyramid.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), name


def test_clips_of_other_proportions_are_refused(clip, tmp_path):
    bvh = read_bvh(clip("normal.bvh"))
    bvh.offsets = bvh.offsets * 1.2  # the same joints, a taller body
    write_bvh(tmp_path / "tall.bvh", bvh)
    with pytest.raises(DatasetError, match=r"tall.bvh: another skeleton than .*proud.bvh's \(the bone to '.*' is "):
        MotionDataset.from_bvhs([clip("proud.bvh"), tmp_path / "tall.bvh"])


def test_mixed_runs_are_scored_against_every_clip(clip):
    """What validation, evaluation and so the sweep's objective see: the walk covers all of itself
    and little of the salsa, so the pooled coverage lies between."""
    mix = MotionDataset.from_bvhs([clip("Walk-In-Circle.bvh"), clip("Salsa-Dancing-6.bvh")])
    scores = Scorer(mix)(mix.clips[0].features[None])
    assert scores["coverage"].shape == (2,) and scores["coverage"][0] == 1.0 and scores["coverage"][1] < 0.3
    assert scores["global_diversity"][0] < 0.01 < scores["global_diversity"][1]


# ---- key-frame editing, style transfer ----------------------------------------------------------

@pytest.fixture(scope="module")
def sparse_walk(clip, tmp_path_factory):
    """Walk-In-Circle at the key-frame editing ratio: 12 key frames, 14 levels, 7 stages."""
    tmp = tmp_path_factory.mktemp("sparse")
    MotionDataset.from_bvh(clip("Walk-In-Circle.bvh"), ratio=1 / 30).save(tmp / "walk.npz")
    return load_run(train(tmp / "walk.npz", tmp / "walk", iters=2))


def test_key_frames_written_read_back_as_the_coarsest_level(sparse_walk, tmp_path):
    run, d = sparse_walk, sparse_walk.dataset
    assert d.clips[0].level_lengths[0] == 12 and len(run.pyramid.generators) == 14
    editor = KeyFrames(run)
    write_bvh(tmp_path / "keys.bvh", motion_to_bvh(editor.motion(), d.skeleton))
    assert read_bvh(tmp_path / "keys.bvh").num_frames == 12
    assert abs(editor.spacing - 377 / 12) < 1e-9
    # The key frames hold the coarsest level: its poses (rows made orthonormal), root path and height.
    coarse, keys = d.clips[0].levels()[0], editor.read(tmp_path / "keys.bvh")
    (want, _), (got, _) = d.clips[0].decode(coarse), d.clips[0].decode(keys)
    assert torch.allclose(got.rotations, want.rotations, atol=1e-4)
    assert torch.allclose(got.root_positions, want.root_positions, atol=1e-4)
    assert editor.edit(tmp_path / "keys.bvh").shape == (1, d.layout.channels, 377)


def test_an_edited_key_frame_changes_the_motion_around_it(sparse_walk, tmp_path):
    """Key frame 6 with the left arm turned 90 degrees: the motion changes around it, not far off."""
    run, d = sparse_walk, sparse_walk.dataset
    editor = KeyFrames(run)
    keys = editor.motion()
    write_bvh(tmp_path / "keys.bvh", motion_to_bvh(keys, d.skeleton))
    arm = d.skeleton.names.index("LeftArm")
    keys.rotations[6, arm] = keys.rotations[6, arm] @ torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    write_bvh(tmp_path / "edited.bvh", motion_to_bvh(keys, d.skeleton))
    change = (editor.edit(tmp_path / "edited.bvh") - editor.edit(tmp_path / "keys.bvh")).abs()
    per_frame = change[0, d.layout.rotations].sum(0)
    at = editor.frame(6)  # key frame 6 of 12 in the 377-frame motion
    assert at == 204 and per_frame.argmax() in range(at - 16, at + 16)  # the edit acts around its key frame
    assert per_frame[at - 10:at + 10].mean() > 20 * per_frame[:at - 90].mean()


def test_key_frames_that_do_not_fit_are_refused(sparse_walk, clip):
    with pytest.raises(GenerationError, match=r"Walk-In-Circle.bvh: 753 key frames, .* coarsest level has 12"):
        KeyFrames(sparse_walk).edit(clip("Walk-In-Circle.bvh"))
    with pytest.raises(DatasetError, match=r"proud.bvh: another skeleton than Walk-In-Circle.bvh's"):
        KeyFrames(sparse_walk).edit(clip("proud.bvh"))


def test_style_transfer_keeps_the_content_clip_coarse_motion(clip, tmp_path):
    """Trained on proud.bvh, given normal.bvh: motion of normal's length and path."""
    MotionDataset.from_bvh(clip("proud.bvh")).save(tmp_path / "proud.npz")
    run = load_run(train(tmp_path / "proud.npz", tmp_path / "proud", iters=2))
    styled, itself = (transfer_style(run, read_clip(run, clip(name))[0]) for name in ("normal.bvh", "proud.bvh"))
    assert styled.shape == (1, run.dataset.layout.channels, 90) and itself.shape[-1] == 82
    # The content's coarse motion goes through: where normal's coarse motion differs from proud's,
    # so does the transfer's (compared at a coarse 16 frames).
    coarse = lambda x: resample(x.reshape(1, -1, x.shape[-1]), 16).flatten()  # noqa: E731
    content = MotionDataset.from_bvh(clip("normal.bvh")).clips[0].features
    moved, wanted = coarse(styled) - coarse(itself), coarse(content) - coarse(run.dataset.clips[0].features)
    similarity = torch.cosine_similarity(moved, wanted, dim=0)
    assert similarity > 0.8, similarity
    with pytest.raises(DatasetError, match=r"Walk-In-Circle.bvh: another skeleton than proud.bvh's"):
        read_clip(run, clip("Walk-In-Circle.bvh"))
    bvh = read_bvh(clip("normal.bvh"))
    frames = bvh.motion
    for n, message in ((1, "short.bvh: 1 frame; motion needs at least 2"),
                       (20, r"short.bvh: \d+ frames are too few for .*proud's pyramid")):
        bvh.motion = frames[:n]
        write_bvh(tmp_path / "short.bvh", bvh)
        with pytest.raises((DatasetError, GenerationError), match=message):
            read_clip(run, tmp_path / "short.bvh")


# ---- trajectory-conditioned generation -----------------------------------------------------------

def test_a_conditional_run_follows_a_trajectory(clip, tmp_path):
    MotionDataset.from_bvh(clip("Walk-In-Circle.bvh")).save(tmp_path / "walk.npz")
    base = train(tmp_path / "walk.npz", tmp_path / "walk", iters=2)
    cond = train(tmp_path / "walk.npz", tmp_path / "cond", f"trajectory_run={base}", iters=2)
    run = load_run(cond)
    assert run.cfg.model.trajectory_run == str(base.resolve())
    # Half the walk, as a trajectory: the root's rotation, height and path come out exactly.
    _, motion = load_motion(clip("Walk-In-Circle.bvh"))
    trajectory = read_clip(run, clip("Walk-In-Circle.bvh"))[0][:, :200]
    out = run.generate(0, samples=2, trajectory=trajectory)
    assert out.shape == (2, run.dataset.layout.channels, 200)
    generated, _ = run.dataset.clips[0].decode(out)
    assert torch.allclose(generated.root_positions, motion.root_positions[:200].float().expand(2, -1, -1), atol=1e-4)
    assert torch.allclose(generated.rotations[:, :, 0], motion.rotations[:200, 0].float().expand(2, -1, -1, -1),
                          atol=1e-4)
    assert not torch.allclose(out[0], trajectory, atol=1e-2)  # the rest of the body is the model's
    # Without one, the trajectory is sampled from the trajectory run.
    assert run.generate(300, samples=2).shape == (2, run.dataset.layout.channels, 300)

    with pytest.raises(GenerationError, match="is not a conditional run"):
        load_run(base).generate(0, trajectory=trajectory)
    # The run keeps its own copy of the trajectory run: it generates wherever it goes.
    base.rename(tmp_path / "walk-moved")
    assert load_run(cond).generate(300, samples=1).shape[-1] == 300
    base = tmp_path / "walk-moved"
    MotionDataset.from_bvh(clip("Salsa-Dancing-6.bvh")).save(tmp_path / "salsa.npz")
    with pytest.raises(GenerationError, match=r"trajectory_run .* was trained on Walk-In-Circle.bvh"):
        train(tmp_path / "salsa.npz", tmp_path / "bad", f"trajectory_run={base}")
    MotionDataset.from_bvhs([clip("Walk-In-Circle.bvh")] * 2).save(tmp_path / "two.npz")
    with pytest.raises(ConfigError, match="a conditional run trains on one clip"):
        train(tmp_path / "two.npz", tmp_path / "bad2", f"trajectory_run={base}")


def test_a_conditional_run_trains_on_the_trajectories_it_draws(clip, tmp_path):
    """Every random chain of an iteration is given a trajectory of the trajectory run: the critic
    steps' fakes carry it on the root's channels, and the levels above the conditioned ones not."""
    MotionDataset.from_bvh(clip("proud.bvh")).save(tmp_path / "proud.npz")
    base = train(tmp_path / "proud.npz", tmp_path / "proud", iters=1)
    cfg = load_config([f"npz_filename={tmp_path / 'proud.npz'}", f"run_dir={tmp_path / 'cond'}", "train_data_iter=1",
                       f"trajectory_run={base}", "trajectory_levels=2", *TINY])
    trainer = build_trainer(cfg)
    trainer.begin()
    trainer.stage = 1  # levels 2 and 3: level 2's generators are not given the trajectory (trajectory_levels=2)
    levels = trainer.begin_stage()
    _, fakes, _, conds = _draw([trainer.member], 0, levels, FusedPyramid([trainer.member.pyramid]))
    channels, n = trainer.dataset.layout.trajectory, trainer.cfg.optim.critic_steps
    assert len(conds) == 4 and conds[0].shape[0] == n + 1 and conds[0].std(0).mean() > 0  # a trajectory per chain
    assert not torch.allclose(fakes[0][:, channels], conds[2][:n, channels], atol=1e-3)
    conditioned = build_trainer(load_config([f"npz_filename={tmp_path / 'proud.npz'}", f"run_dir={tmp_path / 'cond2'}",
                                       "train_data_iter=1", f"trajectory_run={base}", *TINY]))
    conditioned.begin()
    levels = conditioned.begin_stage()
    _, fakes, _, conds = _draw([conditioned.member], 0, levels, FusedPyramid([conditioned.member.pyramid]))
    for j, l in enumerate(levels):
        assert torch.equal(fakes[j][:, channels], conds[l][:n, channels])


def test_members_of_a_population_train_on_every_clip(clip, tmp_path):
    MotionDataset.from_bvhs([clip("proud.bvh"), clip("normal.bvh")]).save(tmp_path / "mix.npz")
    cfgs = [load_config([f"npz_filename={tmp_path / 'mix.npz'}", f"run_dir={tmp_path / f'm{k}'}", "train_data_iter=2",
                         f"lr_g={lr}", *TINY]) for k, lr in enumerate((1e-4, 3e-4))]
    outcomes = fit([Trainer(cfg) for cfg in cfgs], [RunOutputs()])
    assert all(o.finished for o in outcomes)
    assert all(len(load_run(tmp_path / f"m{k}").dataset.clips) == 2 for k in range(2))


# ---- from the command line: every application writes BVH that parses, and is reviewable ----------

def test_applications_from_the_command_line(clip, tmp_path):
    MotionDataset.from_bvh(clip("Walk-In-Circle.bvh"), ratio=1 / 30).save(tmp_path / "walk.npz")
    train(tmp_path / "walk.npz", tmp_path / "walk", iters=2)
    out = tool("ganimator-generate", "walk", "--write-keyframes", "keys.bvh", cwd=tmp_path).stdout
    assert "12 key frames, one every 31.4 frames" in out
    out = tool("ganimator-generate", "walk", "--keyframes", "keys.bvh", "--samples", "1", "--fix-contact",
               "--out", "edited", cwd=tmp_path).stdout
    assert "edited: foot skating" in out
    paths = sorted((tmp_path / "edited").glob("*.bvh"))
    assert [p.name for p in paths] == ["edited-000-fixed.bvh", "edited-000.bvh"]
    assert all(read_bvh(p).num_frames == 377 for p in paths)
    bad = tool("ganimator-generate", "walk", "--keyframes", clip("proud.bvh"), cwd=tmp_path, ok=False).stderr
    assert bad.startswith("error: ") and "proud.bvh: another skeleton" in bad and len(bad.splitlines()) == 1
    clips = review_dirs([tmp_path / "edited"], samples=1, length=0, seed=0)
    assert sorted(c.name for c in clips) == ["edited/edited-000", "edited/edited-000-fixed"]

    MotionDataset.from_bvh(clip("proud.bvh")).save(tmp_path / "proud.npz")
    train(tmp_path / "proud.npz", tmp_path / "proud", iters=1)
    tool("ganimator-generate", "proud", "--content", clip("normal.bvh"), "--samples", "1", "--out", "styled",
         cwd=tmp_path)
    styled, (_, content) = read_bvh(tmp_path / "styled" / "styled-000.bvh"), load_motion(clip("normal.bvh"))
    assert styled.num_frames == 90
    assert torch.allclose(torch.from_numpy(styled.motion[0, [0, 2]]) * 0.14, content.root_positions[0, [0, 2]],
                          atol=1e-4)  # the content's path, from where it starts (Xia: 0.14 m a unit)
