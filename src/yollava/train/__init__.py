from .metrics import best_threshold, recognition_metrics, roc_auc
from .samples import Sample
from .trainer import ConceptTrainer, TrainConfig, TrainResult, split_holdout

__all__ = ["ConceptTrainer", "Sample", "TrainConfig", "TrainResult", "best_threshold", "recognition_metrics", "roc_auc", "split_holdout"]
