"""Fit on a reference JSON Lines file that Dask workers read, tag, count and featurize themselves.

The same model file, byte for byte, as :func:`attribution.api.fit_reference` on the whole file in one
process. The client reads a few bytes at each range boundary (:mod:`attribution.parallel.ranges`) and never the
texts; it holds the labels of the references (the regressions need them), n-gram counts and the matrix:

1. **Read** (workers): each byte range is read and validated (the first error of the file is raised with its
   ``FILE:LINE``, the skipped lines are kept), normalized and tagged; the tags stay in the worker's memory.
   Each range returns its labels, which outputs are empty, and, per task and feature block, how often
   each n-gram occurs and in how many outputs (a count vectorizer with no ``top_k`` over the range).
2. **Vocabulary** (client): the counts are added up (integers: in any order) and each block keeps its
   ``top_k`` n-grams, most frequent first, ties alphabetical, with the same inverse document
   frequencies: :meth:`SequenceNgramVectorizer.fit_transform` 's rule on the same totals.
3. **Featurize** (workers): each range's tags become rows of the matrix with the fitted blocks (rows do not
   depend on one another), and the client stacks them in file order and fits the regressions
   (:meth:`TeacherAttributor.fit_features <attribution.estimator.TeacherAttributor.fit_features>`), which
   are small (see ``docs/cluster.md``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone

from ..errors import AttributionError, InputError, model_error
from ..io import DEFAULT_MAX_CHARS, Record, RecordReader
from ..tagging import TaggedDoc
from .ranges import RangeReader, byte_ranges, line_offsets, shift_lines

#: Largest default reference range (references are fewer and longer-lived than student outputs).
FIT_PARTITION_BYTES = 4 * 2**20
#: Smallest default reference range: below this a range's fixed costs (a task, three round trips) dominate.
MIN_FIT_PARTITION_BYTES = 2**18
#: Default ranges per worker thread: two keep both busy when one range tags slower than another.
RANGES_PER_THREAD = 2


@dataclass
class NgramCounts:
    """One block's n-grams over some outputs: occurrences and outputs holding each (``names`` aligned)."""

    names: list[str]
    totals: np.ndarray
    outputs: np.ndarray


@dataclass
class ReferenceRange:
    """A range's references as a worker read them; ``docs`` stay on the worker (see :func:`range_summary`)."""

    n_lines: int
    n_rows: int  # records seen, valid or not
    tasks: dict[Any, int]  # valid records per task, before the task filter
    labels: list[tuple[Any, str, str | None]]  # (task, teacher, id) of each reference kept, in order
    empty: list[bool]  # empty after normalization (the rule of check_references)
    has_text: list[bool]  # has tokens (the rule of TeacherAttributor.fit_docs)
    docs: list[TaggedDoc]
    skipped: list[InputError]
    error: AttributionError | None
    families: list[tuple[str, str, int]] = field(default_factory=list)  # (teacher, family, line) given by records
    signature: str = ""  # the worker's tagger (stamped into the model: the client need not load one)
    seconds: tuple[float, float] = (0.0, 0.0)  # on the worker: loading its tagger (first range only), the whole task


@dataclass
class ReadFacts:
    """What the workers' first pass found in the whole file (for callers that explain an empty input
    as :class:`~attribution.io.RecordReader` users do: it has the reader's ``source``, ``n_read``,
    ``n_rows`` and :meth:`no_records_error`)."""

    source: str
    n_rows: int
    n_read: int
    tasks: Counter  # valid records per task, before the task filter
    labels: list[tuple[Any, str]]  # (task, teacher) of the references kept, in file order
    skipped: list[InputError]

    def no_records_error(self) -> InputError:
        return RecordReader.no_records_error(self)  # type: ignore[arg-type]  # it reads n_rows and source

    def records(self) -> list[Record]:
        """The references kept as records holding only ``task`` and ``teacher`` (no text)."""
        return [Record(output="", task=key, teacher=teacher) for key, teacher in self.labels]


def read_range(path: str, span: tuple[int, int], task: str | None, params: dict[str, Any],
               reader_options: dict[str, Any]) -> ReferenceRange:
    """Worker side: read, validate, normalize and tag one range (lines numbered from 1 in the range)."""
    import time

    from ..estimator import TeacherAttributor
    from ..normalize import empty_outputs
    from ..tagging import get_tagger
    from .cluster import pin_threads

    start = time.perf_counter()
    pin_threads()
    estimator = TeacherAttributor(**params)
    tagger = get_tagger(estimator.tagger, batch_size=estimator.batch_size)  # loaded once per worker process
    loaded = time.perf_counter() - start
    reader = RangeReader(path, *span, require_teacher=True, **reader_options)
    records: list[Record] = []
    tasks: dict[Any, int] = {}
    error = None
    try:
        for record in reader:
            tasks[record.task] = tasks.get(record.task, 0) + 1
            if task is None or record.task == task:
                records.append(record)
    except AttributionError as err:
        error = err
    texts = [r.output for r in records]
    docs = estimator.prepare(texts) if error is None else []
    return ReferenceRange(reader.n_lines, reader.n_rows, tasks, [(r.task, str(r.teacher), r.id) for r in records],
                          empty_outputs(texts, normalize=params.get("normalize", True)),
                          [len(doc) > 0 for doc in docs], docs, reader.skipped, error,
                          [(str(r.teacher), r.family, r.line or 0) for r in records if r.family is not None],
                          tagger.signature, (loaded, time.perf_counter() - start))


def range_counts(part: ReferenceRange, params: dict[str, Any]) -> dict[Any, list[NgramCounts]]:
    """Worker side: per task, each feature block's n-gram counts over the range's references."""
    blocks = _blocks(params)
    out: dict[Any, list[NgramCounts]] = {}
    for key, rows in _rows_by_task(part).items():
        docs = [part.docs[i] for i in rows]
        out[key] = []
        for _, vec in blocks:
            counter = clone(vec).set_params(top_k=None, weighting="count")
            matrix = counter.fit_transform(docs)
            out[key].append(NgramCounts(list(counter.get_feature_names_out()),
                                        np.asarray(matrix.sum(axis=0)).ravel().astype(np.int64),
                                        np.asarray((matrix != 0).sum(axis=0)).ravel().astype(np.int64)))
    return out


def range_matrix(part: ReferenceRange, blocks: dict[Any, list[tuple[str, Any]]]) -> dict[Any, sp.csr_matrix]:
    """Worker side: per task, the range's rows of the feature matrix, with the fitted blocks."""
    return {key: sp.hstack([vec.transform([part.docs[i] for i in rows]) for _, vec in blocks[key]], format="csr")
            for key, rows in _rows_by_task(part).items()}


def _blocks(params: dict[str, Any]) -> list[tuple[str, Any]]:
    """Fresh feature blocks of the estimator that ``params`` make."""
    from ..estimator import TeacherAttributor
    from ..features import make_feature_blocks

    estimator = TeacherAttributor(**params)
    return make_feature_blocks(estimator.features, tagger=estimator.tagger)


def _rows_by_task(part: ReferenceRange) -> dict[Any, list[int]]:
    rows: dict[Any, list[int]] = {}
    for i, (key, _, _) in enumerate(part.labels):
        rows.setdefault(key, []).append(i)
    return rows


def fit_vocabulary(vec: Any, counts: Sequence[NgramCounts], n_docs: int) -> Any:
    """Set ``vec``'s vocabulary (and IDF) from counts over all its training outputs, by the rule of
    :meth:`SequenceNgramVectorizer.fit_transform`: the ``top_k`` most frequent, ties alphabetical."""
    # summed in numpy (the ranges' n-grams number hundreds of thousands: a loop over them took seconds)
    parts = [part for part in counts if part.names]
    names = np.concatenate([np.asarray(part.names, dtype=object) for part in parts]) if parts else np.zeros(0, object)
    uniq, inverse = np.unique(names, return_inverse=True) if len(names) else (names, np.zeros(0, np.int64))
    totals = np.bincount(inverse, np.concatenate([p.totals for p in parts]) if parts else None,
                         minlength=len(uniq)).astype(np.int64)
    outputs = np.bincount(inverse, np.concatenate([p.outputs for p in parts]) if parts else None,
                          minlength=len(uniq)).astype(np.int64)
    candidates = np.arange(len(uniq))
    if vec.top_k is not None and vec.top_k < len(uniq):  # only n-grams that can make the cut are sorted
        kth = np.partition(totals, len(uniq) - vec.top_k)[len(uniq) - vec.top_k]
        candidates = np.flatnonzero(totals >= kth)
    order = sorted(candidates.tolist(), key=lambda i: (-int(totals[i]), uniq[i]))
    kept = order[:vec.top_k] if vec.top_k is not None else order
    vec.vocabulary_ = {str(uniq[i]): col for col, i in enumerate(kept)}
    if vec.weighting == "tfidf":
        df = outputs[np.asarray(kept, dtype=np.int64)].astype(float)
        vec.idf_ = np.log((1 + n_docs) / (1 + df)) + 1.0
    else:
        vec.idf_ = None
    return vec


def fit_file(path: str | os.PathLike, *, client: Any = None, n_workers: int | None = None,
             scheduler: str | None = None, task: str | None = None, text_field: str | None = None,
             skip_invalid: bool = False, max_chars: int = DEFAULT_MAX_CHARS,
             partition_bytes: int | None = None, on_read: Callable[[ReadFacts], None] | None = None,
             families: Mapping[str, str] | None = None, stats: dict[str, Any] | None = None,
             **params: Any) -> tuple[Any, list[InputError]]:
    """Fit on the teachers' references in the JSON Lines file ``path`` on Dask workers.

    The same model (saved bytes) as ``fit_reference(RecordReader(path, require_teacher=True, ...), task=task,
    **params)`` in one process, and the reader's skipped lines. Give one of ``client``, ``n_workers`` or
    ``scheduler`` (see :func:`attribution.parallel.dask_tagging`). ``on_read`` is called with the
    :class:`ReadFacts` of the file once the workers have read it, before anything is refused or fitted.
    ``partition_bytes``: the size of the byte ranges (by default :data:`RANGES_PER_THREAD` per worker thread,
    between :data:`MIN_FIT_PARTITION_BYTES` and :data:`FIT_PARTITION_BYTES`). A ``stats`` dict gets the
    seconds of each step (:data:`FIT_STATS`).
    """
    import time

    from .cluster import dask_client, worker_threads

    reader_options = {"text_field": text_field, "skip_invalid": skip_invalid, "max_chars": max_chars}
    clock = Clock()
    with dask_client(client, n_workers=n_workers, scheduler=scheduler) as dask:
        threads = worker_threads(dask)
        if partition_bytes is None:
            size = os.path.getsize(path) if os.path.isfile(path) else 0
            partition_bytes = max(MIN_FIT_PARTITION_BYTES,
                                  min(FIT_PARTITION_BYTES, size // (RANGES_PER_THREAD * threads) + 1))
        spans = byte_ranges(path, partition_bytes)
        ranges = dask.map(read_range, [str(path)] * len(spans), spans, [task] * len(spans),
                          [params] * len(spans), [reader_options] * len(spans), pure=False)
        summaries = clock("read_s", lambda: dask.gather(dask.map(_summary, ranges, pure=False)))
        skipped = _check(summaries, str(path), task, on_read)
        counts = clock("count_s", lambda: dask.gather(dask.map(range_counts, ranges, [params] * len(ranges),
                                                                   pure=False)))
        blocks = clock("vocabulary_s", lambda: _vocabularies(counts, [part.labels for part in summaries], params))
        # a key of its own (see rank.py)
        shared = clock("scatter_s", lambda: dask.scatter(blocks, broadcast=True, hash=False))
        matrices = clock("matrix_s", lambda: dask.gather(dask.map(range_matrix, ranges, [shared] * len(ranges),
                                                                      pure=False)))
        family_of = _families(summaries, str(path), families)
    start = time.perf_counter()
    model = _fit_tasks(summaries, blocks, matrices, params, family_of, _signature(summaries, params))
    clock.times["fit_s"] = time.perf_counter() - start
    if stats is not None:
        stats.update(clock.times, n_ranges=len(spans), n_threads=threads,
                     worker_load_s=[part.seconds[0] for part in summaries],
                     worker_read_s=[part.seconds[1] for part in summaries])
    return model, skipped


#: The steps :func:`fit_file` times (``stats``): the first pass (read, validate, tag; the workers' tagger
#: loads included), the n-gram counts, the vocabulary (client), sending it to the workers, the matrix rows,
#: the regressions (client). ``worker_load_s`` and ``worker_read_s`` list each range's time on its worker.
FIT_STATS = ("read_s", "count_s", "vocabulary_s", "scatter_s", "matrix_s", "fit_s")


class Clock:
    """Wall time of named steps."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def __call__(self, name: str, step: Callable[[], Any]) -> Any:
        import time

        start = time.perf_counter()
        try:
            return step()
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start


def _families(summaries: list[ReferenceRange], source: str, families: Mapping[str, str] | None) -> dict[str, str]:
    """Teacher -> family from the records' ``family`` fields (at their lines in the file) and ``families``."""
    from ..references import reference_families

    given = [Record(output="", teacher=teacher, family=family, source=source, line=line + first_line - 1)
             for part, first_line in zip(summaries, line_offsets([s.n_lines for s in summaries]))
             for teacher, family, line in part.families]
    return reference_families(given, families)


def _signature(summaries: list[ReferenceRange], params: dict[str, Any]) -> str:
    """The workers' tagger signature, when they agree (this process need not load a tagger); otherwise E704
    for the first that differs from this process's."""
    from ..errors import Errors
    from ..estimator import TeacherAttributor
    from ..tagging import get_tagger

    found = sorted({part.signature for part in summaries})
    if len(found) == 1:
        return found[0]
    estimator = TeacherAttributor(**params)
    local = get_tagger(estimator.tagger, batch_size=estimator.batch_size).signature
    worker = next(iter(s for s in found if s != local), local)
    raise InputError(Errors.E704.format(worker=worker, local=local), code="E704")


def _summary(part: ReferenceRange) -> ReferenceRange:
    """A range's result without its tags (what the client needs from the first pass)."""
    return ReferenceRange(part.n_lines, part.n_rows, part.tasks, part.labels, part.empty, part.has_text, [],
                          part.skipped, part.error, part.families, part.signature, part.seconds)


def _check(summaries: list[ReferenceRange], source: str, task: str | None,
           on_read: Callable[[ReadFacts], None] | None) -> list[InputError]:
    """The skipped lines (at their lines in the file); raises the file's first error, or what
    ``fit_reference`` refuses before fitting (no references: E208; too few per teacher: E212)."""
    from ..references import check_references

    skipped: list[InputError] = []
    for part, first_line in zip(summaries, line_offsets([s.n_lines for s in summaries])):
        skipped.extend(shift_lines(err, first_line) for err in part.skipped)
        if part.error is not None:
            raise shift_lines(part.error, first_line) if isinstance(part.error, InputError) else part.error
    if on_read is not None:
        tasks: Counter = Counter()
        for part in summaries:
            tasks.update(part.tasks)
        on_read(ReadFacts(source, sum(p.n_rows for p in summaries), sum(tasks.values()), tasks,
                          [(key, teacher) for p in summaries for key, teacher, _ in p.labels], skipped))
    if not any(part.labels for part in summaries):
        raise model_error("E208", task=task, known="(no records)")
    # check_references counts outputs that are not empty after normalization: the workers found which are
    stand_ins = [Record(output="" if empty else "x", task=key, teacher=teacher)
                 for part in summaries for (key, teacher, _), empty in zip(part.labels, part.empty)]
    check_references(stand_ins, normalize=False)
    return skipped


def _vocabularies(counts: list[dict[Any, list[NgramCounts]]], labels: list[list[tuple[Any, str, str | None]]],
                  params: dict[str, Any]) -> dict[Any, list[tuple[str, Any]]]:
    """Per task, the feature blocks fitted on the counts of every range."""
    n_docs: dict[Any, int] = {}
    for part in labels:
        for key, _, _ in part:
            n_docs[key] = n_docs.get(key, 0) + 1
    fitted = {}
    for key in sorted(n_docs, key=lambda t: (t is not None, t or "")):
        blocks = _blocks(params)
        for b, (_, vec) in enumerate(blocks):
            fit_vocabulary(vec, [part[key][b] for part in counts if key in part], n_docs[key])
        fitted[key] = blocks
    return fitted


def _fit_tasks(summaries: list[ReferenceRange], blocks: dict[Any, list[tuple[str, Any]]],
               matrices: list[dict[Any, sp.csr_matrix]], params: dict[str, Any], families: dict[str, str],
               signature: str | None = None) -> Any:
    """One attributor per task on the stacked rows, in task order (as :meth:`MultiTaskAttributor.fit`)."""
    from ..estimator import TeacherAttributor
    from ..multitask import MultiTaskAttributor

    models: dict[Any, TeacherAttributor] = {}
    for key in blocks:
        rows = [(teacher, pid, text) for part in summaries
                for (k, teacher, pid), text in zip(part.labels, part.has_text) if k == key]
        teachers = [teacher for teacher, _, _ in rows]
        if len(set(teachers)) < 2:
            raise model_error("E201", n=len(set(teachers)), teachers=sorted(set(teachers)))
        X = sp.vstack([m[key] for m in matrices if key in m], format="csr")
        models[key] = TeacherAttributor(**params).fit_features(
            blocks[key], X, teachers, [pid for _, pid, _ in rows], [text for _, _, text in rows],
            families=families or None, tagger_signature=signature)
    return MultiTaskAttributor.from_fitted(models)
