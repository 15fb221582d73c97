from .efficientnet import EfficientNetLite, preprocess

__all__ = ["EfficientNetLite", "preprocess"]
