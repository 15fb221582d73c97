"""``python -m yollava.eval ...`` runs the ``yollava eval`` sub-app on its own."""

from ..cli.eval import eval_app

eval_app(prog_name="python -m yollava.eval")
