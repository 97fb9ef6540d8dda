"""GANimator: a staged GAN that learns new motion from a single motion-capture clip.

The data path, top to bottom: motion types (skeleton.py: Rig, Skeleton; motion.py: Motion), their
file format (bvh.py), rotation conversions (conversions.py) and operations (kinematics.py) ->
features.py (per-frame channels) -> dataset.py (the training clips; npz.py: the file's format) ->
pyramid.py / networks.py / losses.py -> trainer.py (all stages; rundir.py: the run folder) ->
generate.py (new motion, BVH export, evaluation), edit.py (key frames, style transfer,
trajectories) and metrics.py (quality); recording.py (Rerun), artifacts.py (samples/, review.rrd)
and tracking.py (ClearML) watch; review_server.py serves what ganimator-review shows. errors.py:
what a user sees.
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
