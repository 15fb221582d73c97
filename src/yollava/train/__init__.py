from .callbacks import TrainerCallback, TrainerState
from .metrics import recognition_metrics, roc_auc
from .samples import Sample
from .trainer import ConceptTrainer, TrainConfig, TrainResult, balanced_samples, split_holdout

__all__ = ["ConceptTrainer", "Sample", "TrainConfig", "TrainResult", "TrainerCallback", "TrainerState", "balanced_samples",
           "recognition_metrics", "roc_auc", "split_holdout"]
