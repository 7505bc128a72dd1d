"""One :class:`~attribution.estimator.TeacherAttributor` per task, fitted together.

A teacher's templates differ between summarizing and answering questions, so a model is fitted per
task; texts are tagged once for all of them. A model fitted without tasks serves every task.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from .errors import Errors, ModelError, NotFittedError, input_error, model_error
from .estimator import AttributorParams, TeacherAttributor, check_params, check_texts
from .saving import save_model

if TYPE_CHECKING:
    from .io import Record


class MultiTaskAttributor(AttributorParams):
    """One :class:`TeacherAttributor` per task, with a combined verdict across tasks.

    Records without a task share the task ``None``. The parameters are
    :class:`~attribution.estimator.TeacherAttributor`'s (same names, defaults and constraints) and are
    passed to each per-task attributor; as for any scikit-learn estimator, ``get_params``,
    ``set_params`` and ``sklearn.base.clone`` work.

    Attributes
    ----------
    models_ : dict of str or None to TeacherAttributor
    classes_ : list of str
        Teachers known to every task (the combined ranking is over these).
    """

    @classmethod
    def from_fitted(cls, models: dict[str | None, TeacherAttributor]) -> MultiTaskAttributor:
        """Wrap fitted per-task attributors (e.g. one :class:`TeacherAttributor` as task ``None``,
        which then serves every task); the parameters are the first model's."""
        first = next(iter(models.values()))
        self = cls(**first.get_params())
        self.models_ = dict(models)
        self._set_classes()
        return self

    def fit(self, texts: Sequence[str], teachers: Sequence[str],
            tasks: Sequence[str | None] | None = None,
            prompt_ids: Sequence[str | None] | None = None, *,
            families: Mapping[str, str] | None = None,
            progress: Callable[[int], None] | None = None) -> MultiTaskAttributor:
        """Fit one attributor per task (texts are tagged once, together); ``prompt_ids`` and ``families``
        as in :meth:`TeacherAttributor.fit`; ``progress`` is called with the number of texts tagged, per batch."""
        check_params(self.get_params())
        texts = check_texts(texts)
        tasks = list(tasks) if tasks is not None else [None] * len(texts)
        ids = list(prompt_ids) if prompt_ids is not None else [None] * len(texts)
        if not (len(texts) == len(teachers) == len(tasks) == len(ids)):
            raise model_error("E203", n_texts=len(texts), n_labels=len(teachers))
        probe = TeacherAttributor(**self.get_params())
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
            model = TeacherAttributor(**self.get_params())
            self.models_[task] = model.fit_docs([docs[i] for i in idx], task_teachers, [ids[i] for i in idx],
                                                families=families)
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

    def task_of(self, record: Record, task: str | None = None) -> str | None:
        """The fitted task that scores ``record``: its own task; for a record without one, ``task`` (the caller's
        ``--task``) or the model's only task. An unknown task is ``E208`` and a record that could be any of
        several tasks ``E122``, each at the record's file and line when it has them."""
        name = record.task if record.task is not None else task
        if not hasattr(self, "models_"):
            raise NotFittedError(Errors.E204.format(name=type(self).__name__), code="E204")
        if name is None and len(self.models_) == 1:
            return next(iter(self.models_))
        if name is None and None not in self.models_:
            raise input_error("E122", source=record.source, line=record.line,
                              known=", ".join(str(t) for t in self.models_))
        try:
            return self.task_key(name)
        except ModelError as err:  # E208, with the record's file and line
            if err.code != "E208" or record.source is None:
                raise
            raise input_error("E208", source=record.source, line=record.line, task=name,
                              known=", ".join(str(t) for t in self.models_)) from None

    def model_for(self, task: str | None) -> TeacherAttributor:
        """The attributor of one task; a model fitted without tasks serves every task."""
        key = self.task_key(task)  # checks fitted first
        return self.models_[key]

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted model to one ``.npz`` file (atomically; no pickle)."""
        save_model(self, path)


def as_multitask(model: MultiTaskAttributor | TeacherAttributor) -> MultiTaskAttributor:
    """``model`` as a :class:`MultiTaskAttributor` (a fitted :class:`TeacherAttributor` serves every task):
    what the record-level workflows (:func:`attribution.api.rank_student`) take."""
    if isinstance(model, TeacherAttributor):
        model.check_fitted()
        return MultiTaskAttributor.from_fitted({None: model})
    return model


__all__ = ["MultiTaskAttributor", "as_multitask"]
