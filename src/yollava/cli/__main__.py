"""``python -m yollava.cli ...`` is the ``yollava`` command."""

from .main import app

app(prog_name="yollava")
