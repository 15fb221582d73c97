"""The ``yollava`` command (the top layer): :mod:`.main` (personalise, chat, recognise, concepts, models, demo) and
the sub-apps it mounts: :mod:`.data` (``pool``, ``data``), :mod:`.eval` (``eval``), :mod:`.serve` (``serve``,
``users``); :mod:`.options` turns a recipe's settings into one Typer option group. Nothing here imports torch until
a command runs, so ``yollava --help`` is quick."""

from .main import app

__all__ = ["app"]
