"""Errors a user can act on. Each message says what was wrong and, where useful, what to do."""

from __future__ import annotations

from pathlib import Path


class YollavaError(Exception):
    """Base class for every error yollava raises on purpose."""


class InvalidImageError(YollavaError, ValueError):
    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        super().__init__(f"{path}: {reason}")


class InvalidConceptNameError(YollavaError, ValueError):
    pass


class UnknownConceptError(YollavaError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConceptMismatchError(YollavaError, ValueError):
    """A concept file was trained for a different base model."""


class CorruptConceptError(YollavaError, ValueError):
    pass


class NotEnoughPhotosError(YollavaError, ValueError):
    pass


class PhotoListError(YollavaError, ValueError):
    """Photos that cannot be used as given (e.g. one given both as the subject's and as a photo without it)."""


class ConceptNotReadyError(YollavaError, ValueError):
    """A concept that can recognise (its visual head is fitted) but cannot talk yet (its tokens are training)."""


class PromptTooLongError(YollavaError, ValueError):
    """A prompt longer than the engine's limit allows, or than the model's context can hold with the answer."""


class CannotGenerateImagesError(YollavaError, ValueError):
    """Image generation asked of a model family that only reads photos, or of a concept without generation tokens."""
