"""benchmarks/roofline.py counts the arithmetic that the speed benchmarks set against the peak:
checked here against the textbook counts of a convolution, its backward and a gradient penalty."""
import torch
import torch.nn.functional as F

from benchmarks import roofline

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
