import numpy as np
import pytest
import torch

from ganimator.dataset import MotionDataset
from ganimator.metrics import coverage, global_diversity, local_diversity, pose_frames, pose_scores, quality


@pytest.fixture(scope="module")
def real(clip):
    data = MotionDataset.from_bvh(clip("Salsa-Dancing-6.bvh"))
    return pose_frames(data.clips[0].features, data.layout).double()


def brute_force(generated, real, window_cov=30, window_loc=15, min_seg=30):
    """The original's loops over its L x L x L' table, written out directly."""
    def window_cost(src, tgt, i, k, n):
        return np.linalg.norm(src[i:i + n] - tgt[k:k + n], axis=1).sum()

    g, r = generated.numpy(), real.numpy()
    cov = np.mean([min(window_cost(r, g, i, k, window_cov) for k in range(len(g) - window_cov + 1)) / window_cov < 2.0
                   for i in range(len(r) - window_cov)])
    loc = np.mean([min(window_cost(g, r, i, k, window_loc) for k in range(len(r) - window_loc + 1)) / window_loc
                   for i in range(len(g) - window_loc)])
    best = [0.0] + [np.inf] * len(g)
    for i in range(min_seg, len(g) + 1):
        for l in range(0, i - min_seg + 1):
            n = i - l
            if n <= len(r):
                best[i] = min(best[i], best[l] + min(window_cost(g, r, l, k, n) for k in range(len(r) - n + 1)))
    return cov, best[len(g)] / len(g), loc


def test_vectorised_metrics_equal_the_original_definitions(real):
    generated, target = real[:90] + 0.05 * torch.randn(90, real.shape[1], dtype=torch.float64), real[300:370]
    cov, glob, loc = brute_force(generated, target)
    assert coverage(generated, target).item() == pytest.approx(cov)
    assert global_diversity(generated, target).item() == pytest.approx(glob)
    assert local_diversity(generated, target).item() == pytest.approx(loc)
    shared = pose_scores(generated[None], target)  # one cost matrix for all three
    assert [shared[k].item() for k in ("coverage", "global_diversity", "local_diversity")] == pytest.approx([cov, glob, loc])


def test_the_clip_against_itself(real):
    m = quality(real[None], real)
    assert m["coverage"] == 1.0
    assert m["global_diversity"] < 1e-4 and m["local_diversity"] < 1e-4


def test_noise_and_a_rest_pose_cover_nothing(real):
    noise = torch.randn(2, 2 * len(real), real.shape[1], dtype=torch.float64) * real.std() + real.mean()
    rest = torch.cat([real.new_tensor([1.0, 0, 0, 0, 1, 0]).repeat(24), real.new_zeros(6 * 4)]).expand(1, 2 * len(real), -1)
    for fake in (noise, rest):
        m = quality(fake, real)
        assert m["coverage"] < 0.05
        assert m["global_diversity"] > 2.0 and m["local_diversity"] > 2.0


def test_a_frozen_frame_covers_less_than_the_clip(real):
    frozen = real[100:101].expand(2 * len(real), -1)[None]
    m = quality(frozen, real)
    assert m["coverage"] < 0.75 and m["global_diversity"] > 1.0


def test_cut_and_spliced_copy_covers_the_clip_but_is_globally_diverse(real):
    generator = torch.Generator().manual_seed(0)
    pieces = [real[i * 20:(i + 1) * 20] for i in torch.randperm(len(real) // 20, generator=generator)]
    splice = torch.cat(pieces)[None]
    m = quality(splice, real)
    assert m["coverage"] > 0.9
    assert m["global_diversity"] > 0.3
    halves = torch.cat([real[len(real) // 2:], real[: len(real) // 2]])[None]  # long pieces: a plain copy
    assert global_diversity(halves, real).item() < 1e-4 < m["global_diversity"]


def test_batched_metrics_match_one_at_a_time(real):
    batch = torch.stack([real[:200], real[100:300].flip(0)])
    for metric in (coverage, global_diversity, local_diversity):
        together = metric(batch, real)
        assert torch.allclose(together, torch.stack([metric(b, real) for b in batch]))


def test_levels_shorter_than_a_window_are_still_scored(real):
    short = real[:20]  # a coarse level of a short clip: shorter than the 30-frame windows
    assert quality(short[None], short) == {"coverage": 1.0, "global_diversity": 0.0, "local_diversity": 0.0}
    noisy = quality(torch.randn(2, 20, short.shape[-1]) * 3, short)
    assert noisy["coverage"] == 0.0 and noisy["global_diversity"] > 1 and noisy["local_diversity"] > 1
