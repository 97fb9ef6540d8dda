"""How close to the machine's arithmetic limit a piece of training runs.

`count_flops(fn)` runs `fn` once and counts the floating-point operations of its matrix
products and convolutions, backward and double backward included, with torch's own per-op
formulas. `peak_flops()` measures what a large fp32 matrix product reaches on the same device and
threads. Work / peak is the fastest the same work could ever run there: a ceiling that no
rewrite doing the same arithmetic can pass.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import flop_registry


class _Counter(TorchDispatchMode):
    # torch's FlopCounterMode tracks modules with backward hooks that autograd.grad (the gradient
    # penalty) rejects; this counts at the dispatcher alone, with the same formulas.
    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            shape = lambda x: x.shape if isinstance(x, torch.Tensor) else x  # noqa: E731
            self.flops += formula(*tree_map(shape, args), **tree_map(shape, kwargs), out_val=tree_map(shape, out))
        return out


def count_flops(fn: Callable[[], object]) -> int:
    with _Counter() as counter:
        fn()
    return counter.flops


def peak_flops(device: str | torch.device = "cpu", n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of an n x n fp32 matrix product, the best of `repeats`."""
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    best = float("inf")
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
