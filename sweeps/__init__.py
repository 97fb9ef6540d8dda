"""Hyperparameter sweeps of the GANimator trainer on Ray Tune, searched by Optuna.

`python sweeps/run.py npz_filename=clip.npz num_samples=64` runs one: see `run.py`.
"""
