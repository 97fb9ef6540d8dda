"""benchmarks/time_to_quality.py as a user runs it, on a tiny budget: it trains each configuration
for its minutes of training time, evaluates at its checkpoints with the clock stopped, and writes
the curves, the report and a plot that shows each configuration's line. The quality band's
bounds are checked on records inside and outside it."""
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from benchmarks.time_to_quality import held
from ganimator.metrics import PUBLISHED, Quality

from conftest import ROOT

INSIDE = Quality(coverage=0.97, global_diversity=1.3, local_diversity=1.0, rec_error=0.01, jitter=1.0,
                 foot_skating=1.2, penetration=0.05, ground_contact=0.9, foot_motion=1.1)


@pytest.mark.parametrize("field, value", [("coverage", 0.9), ("global_diversity", 0.8), ("global_diversity", 1.8),
                                          ("jitter", 0.5), ("jitter", 2.0), ("foot_skating", 3.0),
                                          ("penetration", 1.0), ("ground_contact", 0.3), ("foot_motion", 0.05),
                                          ("foot_motion", 2.0), ("coverage", float("nan"))])
def test_the_band_names_what_a_record_misses(field, value):
    assert PUBLISHED.contains(INSIDE) and PUBLISHED.misses(INSIDE) == []
    assert PUBLISHED.misses(replace(INSIDE, **{field: value})) == [field]


def test_the_plot_holds_each_value_until_the_next_evaluation_and_keeps_the_last():
    """A 60-minute run's last evaluation, taken when the trainer's clock read 60.0004 minutes, is its
    value at the grid's 60.0 (the plot once held the 40-minute value there instead)."""
    run = [(8.0, 0.0), (40.1, 0.221), (60.0004, 0.416)]
    assert np.isnan(held(run, 5.0))
    assert [held(run, t) for t in (8.0, 40.0, 40.1, 59.9, 60.0)] == [0.0, 0.0, 0.221, 0.221, 0.416]


def test_time_to_quality_trains_evaluates_and_plots_each_configuration(tmp_path, clip):
    out = tmp_path / "ttq"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "time_to_quality.py"), str(clip("proud.bvh")),
           "--config", "small=hidden_channels=[8,16,16],lr_g=4e-4", "--seeds", "1", "--minutes", "0.1",
           "--every", "0.05", "--threads", "1", "--check-every", "2", "--eval-samples", "2", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.index("small, seed 0: training") < proc.stdout.index("default, seed 0: training")
    assert "(misses coverage, " in proc.stdout  # each evaluation names what keeps it out of the band
    points = [json.loads(line) for line in (out / "curves.jsonl").read_text().splitlines()]
    for name in ("default", "small"):
        mine = [p for p in points if p["config"] == name]
        minutes = [p["minutes"] for p in mine]
        # Evaluations every 0.05 minutes of training, the clock stopped while evaluating; the last at the budget.
        assert len(mine) >= 2 and minutes == sorted(minutes) and 0.1 <= minutes[-1] < 0.2, minutes
        assert all(set(Quality.NAMES) <= set(p) and isinstance(p["in_band"], bool) for p in mine)
        assert mine[-1]["step"] > mine[0]["step"] > 0
    report = (out / "report.md").read_text()
    assert "The band: coverage >= 0.95" in report and all(f"| {n} |" in report for n in ("default", "small"))
    assert report in proc.stdout
    png = out / "time_to_quality.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Looked at: the image holds both configurations' colours (matplotlib's C0 and C1).
    import matplotlib.image

    pixels = (matplotlib.image.imread(png)[..., :3] * 255).round().astype(int).reshape(-1, 3)
    for colour in ((31, 119, 180), (255, 127, 14)):
        assert (np.abs(pixels - colour).sum(1) < 30).sum() > 50, colour
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # reuses every evaluation
    assert again.returncode == 0 and "training" not in again.stdout.split("# Time to quality")[0]
    assert (out / "curves.jsonl").read_text().count("\n") == len(points)
    seeds = cmd.index("--seeds")
    more = subprocess.run([*cmd[:seeds], "--seeds", "2", "--default-seeds", "1", *cmd[seeds + 2:]], capture_output=True,
                          text=True, timeout=600)  # a second seed of the configuration asked about, not of the defaults
    assert more.returncode == 0, more.stderr[-3000:]
    assert "small, seed 1: training" in more.stdout and "default, seed 1" not in more.stdout
    assert {(p["config"], p["seed"]) for p in map(json.loads, (out / "curves.jsonl").read_text().splitlines())} == {
        ("default", 0), ("small", 0), ("small", 1)}
    # Each configuration's row lists its own seeds' minutes in the band (none enters it in 6 seconds).
    assert "| default | - |" in more.stdout and "| small | -, - |" in more.stdout
    other = subprocess.run([*cmd[:-4], "--eval-samples", "3", "--out", str(out)], capture_output=True, text=True,
                           timeout=600)  # another protocol is another measurement
    assert other.returncode == 1 and other.stderr.strip().startswith(f"error: {out} holds measurements taken with other")
