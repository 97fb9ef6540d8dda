"""GANimator: a staged GAN that learns new motion from a single motion-capture clip.

The data path, top to bottom: bvh.py (files) -> skeleton.py (which joints) -> features.py
(per-frame channels) -> dataset.py (the training npz) -> pyramid.py / networks.py / losses.py ->
trainer.py (all stages; rundir.py: the run folder) -> generate.py (new motion, BVH export) and
metrics.py (quality); review.py (Rerun) and tracking.py (ClearML) watch. errors.py: what a user sees.
"""
from .config import ConfigError, TrainConfig, load_config
from .dataset import DatasetError, MotionDataset
from .errors import UserError
from .generate import TrainedRun, load_run
from .metrics import Quality
from .rundir import RunDir
from .trainer import Trainer, TrainEvent, TrainingDiverged, TrainResult

__all__ = ["ConfigError", "DatasetError", "MotionDataset", "Quality", "RunDir", "TrainConfig", "TrainEvent",
           "TrainResult", "TrainedRun", "Trainer", "TrainingDiverged", "UserError", "load_config", "load_run"]
