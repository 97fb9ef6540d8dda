"""GANimator: a staged GAN that learns new motion from a single motion-capture clip.

The data path, top to bottom: bvh.py (files) -> skeleton.py (which joints) -> features.py
(per-frame channels) -> dataset.py (the training npz) -> pyramid.py / networks.py / losses.py ->
trainer.py (all stages) -> generate.py (new motion, BVH export) and metrics.py (quality).
"""
from .config import ConfigError, TrainConfig, load_config
from .dataset import DatasetError, MotionDataset
from .generate import TrainedRun, load_run
from .trainer import Trainer, TrainEvent, TrainingDiverged, TrainResult

__all__ = ["ConfigError", "DatasetError", "MotionDataset", "TrainConfig", "TrainEvent", "TrainResult",
           "TrainedRun", "Trainer", "TrainingDiverged", "load_config", "load_run"]
