"""benchmarks/roofline.py counts the arithmetic that the speed benchmarks set against the peak:
checked here against the textbook counts of a convolution, its backward and a gradient penalty."""
import subprocess
import sys

import torch
import torch.nn.functional as F

from benchmarks import roofline

from conftest import ROOT

B, C_IN, C_OUT, K, T = 2, 16, 32, 5, 40
FORWARD = 2 * B * C_OUT * C_IN * K * T  # a multiply and an add per weight and output frame


def test_a_convolution_its_backward_and_a_gradient_penalty_are_counted_in_full():
    x = torch.randn(B, C_IN, T + K - 1, requires_grad=True)
    w = torch.randn(C_OUT, C_IN, K, requires_grad=True)
    assert roofline.count_flops(lambda: F.conv1d(x, w)) == FORWARD
    # Backward: the input's gradient and the weight's, each as much arithmetic as the forward.
    assert roofline.count_flops(lambda: F.conv1d(x, w).sum().backward()) == 3 * FORWARD

    def penalty():
        (grad,) = torch.autograd.grad(F.conv1d(x, w).sum(), x, create_graph=True)
        grad.square().sum().backward()

    # The forward and the input's gradient, then two convolutions for that gradient's backward:
    # the weight's gradient, and the incoming gradient's, which torch computes here unneeded.
    assert roofline.count_flops(penalty) == 4 * FORWARD


def test_the_peak_is_a_positive_rate_and_the_counter_leaves_results_unchanged():
    assert roofline.peak_flops(n=256, repeats=2) > 1e8
    x, w = torch.randn(B, C_IN, T), torch.randn(C_OUT, C_IN, K)
    out = []
    roofline.count_flops(lambda: out.append(F.conv1d(x, w)))
    assert torch.equal(out[0], F.conv1d(x, w))


def test_train_speed_times_every_stage_against_the_original_pattern_and_bf16(clip):
    """benchmarks/train_speed.py as a user runs it: a row a stage, every rate measured (its
    baseline once fell over on the contact loss's second output, our floor loss)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), str(clip("proud.bvh")),
                           "--iters", "1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["stage", "levels"])
    rows = lines[header + 1:header + 5]
    assert [row.split()[0] for row in rows] == ["1", "2", "3", "4"]
    for row in rows:  # after the levels: ours, the original pattern, ratio, original code (nan: none given), ratio, bf16, ratio
        cells = row.split("]")[1].split()
        ours, pattern, bf16 = float(cells[0]), float(cells[1]), float(cells[5])
        assert ours > 0 and pattern > 0 and bf16 > 0, row
        assert ratio_of(cells[2], ours, pattern) and ratio_of(cells[6], bf16, ours), row


def ratio_of(printed: str, top: float, bottom: float) -> bool:
    """Whether a printed ratio ("1.05x") is top/bottom as the table shows them: the benchmark divides
    the unrounded rates, so the ratio of the printed ones may differ in its last digit."""
    half = 0.005  # every number in the table is rounded to 2 decimals
    low, high = (top - half) / (bottom + half), (top + half) / (bottom - half)
    return printed.endswith("x") and low - half <= float(printed[:-1]) <= high + half
