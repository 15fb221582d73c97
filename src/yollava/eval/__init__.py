"""Benchmarks and baselines (paper §5): recognition, two-choice QA, caption recall, no forgetting.

One driver (:func:`yollava.eval.driver.run_benchmark`) runs every task; tasks and methods are registered
(:mod:`yollava.eval.registry`): a new baseline is one ``Method`` subclass with ``@register_method``.
``yollava eval ...`` is :data:`yollava.cli.eval.eval_app`; from Python a benchmark is
``run_benchmark(get_task("recognition")(dataset, ...), engine, methods, run_dir)``, and the results are
aggregated again from a run folder by ``get_task(name).aggregate(records, methods, subjects)``.
"""

from .caption import CaptionTask
from .datasets import RecognitionDataset, Subject, load_bo, load_dataset, load_folder, load_myvlm, seeded_split
from .driver import Task, run_benchmark
from .forgetting import ForgettingTask, forgetting_check
from .methods import EvalContext, Method, Prompting, Unavailable
from .qa import QATask, load_qa
from .recognition import RecognitionTask
from .registry import default_methods, get_task, make_method, method_names, parse_methods, register_method, register_task
from .report import write_report
from .scoring import option_probabilities, yes_probabilities

__all__ = [
    "CaptionTask", "EvalContext", "ForgettingTask", "Method", "Prompting", "QATask", "RecognitionDataset", "RecognitionTask", "Subject",
    "Task", "Unavailable", "default_methods", "forgetting_check", "get_task", "load_bo", "load_dataset", "load_folder", "load_myvlm", "load_qa",
    "make_method", "method_names", "option_probabilities", "parse_methods", "register_method", "register_task", "run_benchmark",
    "seeded_split", "write_report", "yes_probabilities",
]
