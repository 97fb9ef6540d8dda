"""Progress bars: tqdm, or inside a Ray worker (a sweep's retrains) Ray's tqdm_ray.

A worker's own tqdm reaches the driver through Ray's log forwarding, which passes whole lines: a
bar redrawn with carriage returns showed nothing until its stage ended. tqdm_ray sends the bar's
state instead, and the driver draws it (description, count, rate, time left) beside the others.
"""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(total: int, desc: str, initial: int = 0, enabled: bool = True, unit: str = "it"):
    """A bar with update(n), close() and write(); set_postfix only where tqdm has it."""
    ray = sys.modules.get("ray")  # never imported here: the trainer runs without Ray
    if enabled and ray is not None and ray.is_initialized() and _in_worker(ray):
        from ray.experimental.tqdm_ray import tqdm as ray_tqdm

        bar = ray_tqdm(total=total, desc=desc, unit=unit)
        if initial:
            bar.update(initial)
        return bar
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, disable=not enabled)


def _in_worker(ray) -> bool:
    return ray.get_runtime_context().worker.mode == ray.WORKER_MODE
