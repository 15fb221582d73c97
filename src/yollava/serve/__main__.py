"""``python -m yollava.serve serve ...`` / ``python -m yollava.serve users add NAME``."""

from ..cli.serve import app

app()
