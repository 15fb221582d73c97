"""Benchmarks and baselines (paper §5): recognition, two-choice QA, caption recall, no forgetting.

``yollava eval ...`` is :data:`yollava.eval.commands.eval_app`; the Python entry points are below.
"""

from .caption import run_caption
from .datasets import RecognitionDataset, Subject, load_bo, load_dataset, load_folder, load_myvlm, seeded_split
from .forgetting import forgetting_check
from .qa import load_qa, run_qa
from .recognition import aggregate, run_recognition
from .report import write_report
from .scoring import option_probabilities, yes_probabilities

__all__ = [
    "RecognitionDataset", "Subject", "aggregate", "forgetting_check", "load_bo", "load_dataset", "load_folder", "load_myvlm",
    "load_qa", "option_probabilities", "run_caption", "run_qa", "run_recognition", "seeded_split", "write_report",
    "yes_probabilities",
]
