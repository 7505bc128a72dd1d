"""Sequence-level distillation: collect teacher outputs, fine-tune a student, sample the student.

Needs the ``distill`` extra (torch, transformers, tokenizers, gguf, accelerate); the attribution
core never imports this package. Writers of outputs are append-only and resumable.
"""

from ..causal_lm import OFFLINE_MODELS, load_causal_lm, resolve_model
from ._generation import Decoding
from .collect import collect_outputs
from .generate import generate_outputs, read_student_info
from .train import PRESETS, PROMPT_TEMPLATE, TrainSettings, train_student

__all__ = ["Decoding", "OFFLINE_MODELS", "PRESETS", "PROMPT_TEMPLATE", "TrainSettings", "collect_outputs",
           "generate_outputs", "load_causal_lm", "read_student_info", "resolve_model", "train_student"]
