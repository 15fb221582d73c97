"""Training a concept's tokens: the trainer, its callbacks and the recognition metrics. ``Sample`` (data) and
``TrainConfig`` (recipes) are re-exported from their homes for convenience."""

from ..data.samples import Sample
from ..recipes import TrainConfig
from .callbacks import TrainerCallback, TrainerState
from .metrics import recognition_metrics, roc_auc
from .trainer import ConceptTrainer, TrainResult, balanced_samples, split_holdout

__all__ = ["ConceptTrainer", "Sample", "TrainConfig", "TrainResult", "TrainerCallback", "TrainerState", "balanced_samples",
           "recognition_metrics", "roc_auc", "split_holdout"]
