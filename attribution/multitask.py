"""One :class:`~attribution.estimator.TeacherAttributor` per task, fitted together.

A teacher's templates differ between summarizing and answering questions, so a model is fitted per
task; texts are tagged once for all of them. A model fitted without tasks serves every task.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from .errors import Errors, NotFittedError, model_error
from .estimator import TeacherAttributor, check_texts


class MultiTaskAttributor:
    """One :class:`TeacherAttributor` per task, with a combined verdict across tasks.

    Records without a task share the task ``None``. Parameters are passed to each
    per-task attributor.

    Attributes
    ----------
    models_ : dict of str or None to TeacherAttributor
    classes_ : list of str
        Teachers known to every task (the combined ranking is over these).
    """

    def __init__(self, **params: Any) -> None:
        self.params = params

    def fit(self, texts: Sequence[str], teachers: Sequence[str],
            tasks: Sequence[str | None] | None = None,
            prompt_ids: Sequence[str | None] | None = None, *,
            progress: Callable[[int], None] | None = None) -> MultiTaskAttributor:
        """Fit one attributor per task (texts are tagged once, together); ``prompt_ids`` as in
        :meth:`TeacherAttributor.fit`; ``progress`` is called with the number of texts tagged, per batch."""
        texts = check_texts(texts)
        tasks = list(tasks) if tasks is not None else [None] * len(texts)
        ids = list(prompt_ids) if prompt_ids is not None else [None] * len(texts)
        if not (len(texts) == len(teachers) == len(tasks) == len(ids)):
            raise model_error("E203", n_texts=len(texts), n_labels=len(teachers))
        probe = TeacherAttributor(**self.params)
        if progress is None:
            docs = probe.prepare(texts)
        else:  # the same tags (a text is tagged once per process), a few batches at a time (several
            docs = []  # batches per call keep the workers of attribution.parallel.dask_tagging busy together)
            step = 4 * probe.batch_size
            for start in range(0, len(texts), step):
                docs.extend(probe.prepare(texts[start:start + step]))
                progress(len(docs) - start)
        self.models_: dict[str | None, TeacherAttributor] = {}
        for task in sorted(set(tasks), key=lambda t: (t is not None, t or "")):
            idx = [i for i, t in enumerate(tasks) if t == task]
            task_teachers = [str(teachers[i]) for i in idx]
            if len(set(task_teachers)) < 2:
                raise model_error("E201", n=len(set(task_teachers)), teachers=sorted(set(task_teachers)))
            model = TeacherAttributor(**self.params)
            self.models_[task] = model.fit_docs([docs[i] for i in idx], task_teachers, [ids[i] for i in idx])
        self._set_classes()
        return self

    def _set_classes(self) -> None:
        common = set.intersection(*(set(m.classes_.tolist()) for m in self.models_.values()))
        self.classes_ = sorted(common)

    @property
    def tasks(self) -> list[str | None]:
        return list(self.models_)

    def task_key(self, task: str | None) -> str | None:
        """Which fitted task serves ``task``: itself, or ``None`` for a model fitted without tasks."""
        if not hasattr(self, "models_"):
            raise NotFittedError(Errors.E204.format(name=type(self).__name__), code="E204")
        if task in self.models_:
            return task
        if list(self.models_) == [None]:
            return None
        raise model_error("E208", task=task, known=", ".join(str(t) for t in self.models_))

    def model_for(self, task: str | None) -> TeacherAttributor:
        """The attributor of one task; a model fitted without tasks serves every task."""
        key = self.task_key(task)  # checks fitted first
        return self.models_[key]

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted model to one ``.npz`` file (atomically; no pickle)."""
        from .persistence import save_model

        save_model(self, path)


__all__ = ["MultiTaskAttributor"]
