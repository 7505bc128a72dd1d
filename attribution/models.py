"""The models, by their former home: re-exports kept so that existing imports and notebooks work.

New code imports from the module that defines each name: :mod:`attribution.estimator`
(:class:`TeacherAttributor`), :mod:`attribution.multitask` (:class:`MultiTaskAttributor`),
:mod:`attribution.inference` (:class:`StudentEvidence`, :func:`rank_teachers`,
:func:`unlisted_p_value`), :mod:`attribution.explain` (templates behind a ranking) and
:mod:`attribution.persistence` (model files).
"""

from __future__ import annotations

from .estimator import TeacherAttributor
from .inference import StudentEvidence, rank_teachers, unlisted_p_value
from .multitask import MultiTaskAttributor
from .persistence import MODEL_FORMAT, load_model, save_model

__all__ = ["MODEL_FORMAT", "MultiTaskAttributor", "StudentEvidence", "TeacherAttributor",
           "load_model", "rank_teachers", "save_model", "unlisted_p_value"]
