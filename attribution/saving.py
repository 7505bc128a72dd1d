"""Writing a model file: the ``.npz`` archive that :func:`attribution.persistence.load_model` reads.

Below both model classes' modules and :mod:`attribution.persistence`: ``MultiTaskAttributor.save``
writes through here, and persistence (which checks and loads files, and so knows both classes)
re-exports :func:`save_model`, so no module imports one that imports it back.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .estimator import TeacherAttributor
from .io import atomic_write

if TYPE_CHECKING:
    from .multitask import MultiTaskAttributor

#: The ``format`` field of every model file's header.
MODEL_FORMAT = "teacher-attribution-model/1"


def save_model(model: MultiTaskAttributor | TeacherAttributor, path: str | os.PathLike) -> None:
    """Save a fitted model as arrays plus a JSON header in an ``.npz`` archive (atomically).

    Loading (:func:`attribution.persistence.load_model`) uses no pickle and checks everything, so a
    model file from an untrusted source cannot run code or exhaust memory.
    """
    header: dict[str, Any] = {"format": MODEL_FORMAT, "version": __version__, "tasks": []}
    if getattr(model, "reference_files_", None):
        header["reference_files"] = model.reference_files_
    if isinstance(model, TeacherAttributor):  # saved as the one task None, and loaded back as itself
        header["estimator"] = "TeacherAttributor"
        tasks: dict[str | None, TeacherAttributor] = {None: model}
    else:
        tasks = model.models_
    arrays: dict[str, np.ndarray] = {}
    for i, (task, sub) in enumerate(tasks.items()):
        meta, sub_arrays = sub.get_state()
        header["tasks"].append({"task": task, **meta})
        arrays.update({f"t{i}_{k}": v for k, v in sub_arrays.items()})
    arrays["__header__"] = np.frombuffer(json.dumps(header, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    with atomic_write(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle


__all__ = ["MODEL_FORMAT", "save_model"]
