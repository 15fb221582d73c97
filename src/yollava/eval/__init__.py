"""Benchmarks and baselines (paper §5): recognition, two-choice QA, caption recall, no forgetting.

One driver (:func:`yollava.eval.driver.run_benchmark`) runs every task; tasks and methods are registered
(:mod:`yollava.eval.registry`): a new baseline is one ``Method`` subclass with ``@register_method``.
``yollava eval ...`` is :data:`yollava.eval.commands.eval_app`; the Python entry points are below.
"""

from .caption import CaptionTask, run_caption
from .datasets import RecognitionDataset, Subject, load_bo, load_dataset, load_folder, load_myvlm, seeded_split
from .driver import Task, run_benchmark
from .forgetting import ForgettingTask, forgetting_check
from .methods import EvalContext, Method, Prompting, Unavailable
from .qa import QATask, load_qa, run_qa
from .recognition import RecognitionTask, aggregate, run_recognition
from .registry import get_task, make_method, method_names, parse_methods, register_method, register_task
from .report import write_report
from .scoring import option_probabilities, yes_probabilities

__all__ = [
    "CaptionTask", "EvalContext", "ForgettingTask", "Method", "Prompting", "QATask", "RecognitionDataset", "RecognitionTask", "Subject",
    "Task", "Unavailable", "aggregate", "forgetting_check", "get_task", "load_bo", "load_dataset", "load_folder", "load_myvlm", "load_qa",
    "make_method", "method_names", "option_probabilities", "parse_methods", "register_method", "register_task", "run_benchmark",
    "run_caption", "run_qa", "run_recognition", "seeded_split", "write_report", "yes_probabilities",
]
