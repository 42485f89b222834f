"""Training: the FCN, the CRF as post-processing, CRF-RNN end to end, the paper's Table 1 in miniature.

Run ``python -m lab.train`` (``--quick`` for a smoke run, ``torchrun --nproc_per_node=N -m lab.train`` for
several processes); see ``docs/training.md``.
"""

from lab.train.data import Split
from lab.train.experiment import ExperimentConfig, run_experiment
from lab.train.metrics import confusion_matrix, mean_iou
from lab.train.models import SegmentationCRFRNN, SymmetricCompat
from lab.train.stages import GRID, evaluate, grid_search, train_model

__all__ = [
    "GRID",
    "ExperimentConfig",
    "SegmentationCRFRNN",
    "Split",
    "SymmetricCompat",
    "confusion_matrix",
    "evaluate",
    "grid_search",
    "mean_iou",
    "run_experiment",
    "train_model",
]
