"""``python -m yollava.serve serve ...`` / ``python -m yollava.serve users add NAME``."""

from .commands import app

app()
