"""Rank a student's JSON Lines file on Dask workers that read, tag, featurize and score it themselves.

The client reads nothing but a few bytes at each partition boundary (:mod:`attribution.parallel.ranges`) and holds
only sums; the result is byte-identical to :func:`attribution.api.rank_student` in one process. What makes
it identical is that the workers compute exactly the sums one process computes, grouped the same way:

1. **Scan** (workers): each byte range is read and validated, and its outputs counted per task. The
   client adds the counts up, so every output gets its index within its task, and with it the batch
   (``index // batch_size``) that one process would score it in; it also learns each range's first line,
   and raises the first error of the file (``FILE:LINE``, as the reader would) or keeps the skipped lines.
2. **Score** (workers): each range scores the batches that lie wholly inside it, one
   :class:`~attribution.inference.StudentEvidence` per batch (bootstrap off), and returns their sums; the
   few outputs of batches cut by a range boundary come back tagged, and the client scores those
   batches when all their pieces have arrived.
3. **Reduce** (client): batch sums are added to each task's evidence in batch order, exactly as one
   process adds them, and the Poisson bootstrap draws its weights there, from the batch's per-output
   log-probabilities (``n_teachers`` floats per output pass through; the bootstrap's random stream is
   sequential). Feature counts (integers) are summed per range on the workers.

Checks (repeated, near-empty, non-English outputs) and the pooled-students warning are reduced the same
way, so the result dict is :func:`~attribution.api.rank_student`'s (``keep_outputs`` is not offered: it
would bring every output back).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import time
from collections.abc import Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..checks import MAX_REMEMBERED, OutputChecks
from ..errors import AttributionError, Errors, InputError
from ..io import DEFAULT_MAX_CHARS, RecordReader
from ..tagging import TaggedDoc, get_tagger
from .ranges import DEFAULT_PARTITION_BYTES, RangeReader, byte_ranges, line_offsets, shift_lines

#: Ranges a client keeps in flight per worker thread while scoring (results wait in workers' memory).
READ_AHEAD = 2
#: Smallest default range: below this, a range's fixed costs (a task, a model lookup) dominate.
MIN_PARTITION_BYTES = 2**20


@dataclass
class RangeScan:
    """What a first pass over one range found (lines numbered from 1 within the range)."""

    n_lines: int
    counts: dict[Any, int]
    students: list[str]
    skipped: list[InputError]
    error: AttributionError | None


@dataclass
class BatchPart:
    """One batch's sums, as a fresh :class:`~attribution.inference.StudentEvidence` holds them after that batch."""

    key: Any
    batch: int
    n_outputs: int
    n_empty: int
    sum_log_proba: np.ndarray
    feature_sums: np.ndarray
    paired: list[tuple[int, np.ndarray, np.ndarray]]  # StudentEvidence.paired_tests() states, in order
    proba: np.ndarray  # (n_outputs, n_teachers): what the client's bootstrap weighs
    examples: list[TaggedDoc]
    feature_outputs: np.ndarray | None = None  # only for batches scored by the client


@dataclass
class Fragment:
    """The outputs of a batch that a range boundary cuts: tagged, with their prompt ids."""

    key: Any
    batch: int
    docs: list[TaggedDoc]
    ids: list[str | None]


@dataclass
class RangeScore:
    """What a second pass over one range returns."""

    signature: str
    parts: list[BatchPart]
    fragments: list[Fragment]
    feature_outputs: dict[Any, np.ndarray]
    checks: dict[str, int]
    seen: AbstractSet[bytes] = field(default_factory=set)


@dataclass
class Plan:
    """What a range's second pass must know about the ranges before it."""

    first_line: int
    first_output: int  # outputs (all tasks) before the range, for the checks' first MAX_REMEMBERED
    offsets: dict[Any, int]  # per task: outputs of that task before the range
    totals: dict[Any, int]  # per task: outputs of that task in the file


def _outputs(reader: RangeReader, model: Any, task: str | None) -> Iterator[tuple[Any, Any]]:
    """``(record, task key)`` of the outputs a :class:`~attribution.api.StudentRun` would add, in order."""

    for record in reader:
        if task is not None and record.task not in (task, None):
            continue
        yield record, model.task_of(record, task)


def scan_range(model: Any, path: str, span: tuple[int, int], task: str | None,
               reader_options: dict[str, Any]) -> RangeScan:
    """Worker side, first pass: count the outputs of each task; the first error stops the scan."""
    from ..api import MAX_NAMED_STUDENTS

    reader = RangeReader(path, *span, **reader_options)
    counts: dict[Any, int] = {}
    students: list[str] = []
    error = None
    try:
        for record in reader:  # as StudentRun.add: task filter, student names, then the task's key
            if task is not None and record.task not in (task, None):
                continue
            if record.student is not None and len(students) <= MAX_NAMED_STUDENTS and record.student not in students:
                students.append(record.student)
            key = model.task_of(record, task)
            counts[key] = counts.get(key, 0) + 1
    except AttributionError as err:
        error = err
    return RangeScan(reader.n_lines, counts, students, reader.skipped, error)


def batch_part(model: Any, key: Any, batch: int, docs: Sequence[TaggedDoc], ids: Sequence[str | None],
               n_examples: int) -> BatchPart:
    """Score one batch as :meth:`StudentEvidence.add <attribution.inference.StudentEvidence.add>` does, into a
    fresh evidence without bootstrap (the client draws it); keeps the first ``n_examples`` example docs."""
    from ..inference import StudentEvidence

    quiet = copy.copy(model)
    quiet.n_bootstrap = 0
    evidence = StudentEvidence(quiet, keep_outputs=True)
    evidence.add([], list(ids), docs=list(docs))
    return BatchPart(key, batch, evidence.n_outputs, evidence.n_empty, evidence.sum_log_proba,
                     evidence.feature_sums, [test.state() for test in evidence.paired_tests()],
                     np.asarray(evidence.outputs, dtype=float).reshape(-1, len(evidence.classes)),
                     evidence.example_docs[:n_examples], evidence.feature_outputs)


def score_range(model: Any, path: str, span: tuple[int, int], plan: Plan, task: str | None,
                reader_options: dict[str, Any], n_examples: int) -> RangeScore:
    """Worker side, second pass: score the batches wholly inside the range, tag the pieces of the others."""
    from .cluster import pin_threads

    pin_threads()
    reader = RangeReader(path, *span, first_line=plan.first_line, **reader_options)
    first, rest = OutputChecks(), OutputChecks()  # outputs among the file's first MAX_REMEMBERED, the others
    n_output = plan.first_output
    index = dict(plan.offsets)
    groups: dict[tuple[Any, int], list[Any]] = {}
    parts: list[BatchPart] = []
    left = {key: n_examples for key in plan.totals}
    outputs: dict[Any, np.ndarray] = {}
    for record, key in _outputs(reader, model, task):
        (first if n_output < MAX_REMEMBERED else rest).add(record.output)
        n_output += 1
        sub = model.models_[key]
        batch = index[key] // sub.batch_size  # the batch one process would score this output in
        index[key] += 1
        group = groups.setdefault((key, batch), [])
        group.append(record)
        start = batch * sub.batch_size
        if start >= plan.offsets[key] and len(group) == min(sub.batch_size, plan.totals[key] - start):
            del groups[(key, batch)]
            docs = sub.prepare([r.output for r in group])  # cached: a worker tags each distinct text once
            part = batch_part(sub, key, batch, docs, [r.id for r in group], left[key])
            left[key] -= len(part.examples)
            counts, part.feature_outputs = part.feature_outputs, None  # integers: summed per range, in any order
            if counts is not None:
                outputs[key] = counts + outputs[key] if key in outputs else counts
            parts.append(part)
    fragments = [Fragment(key, batch, model.models_[key].prepare([r.output for r in group]), [r.id for r in group])
                 for (key, batch), group in groups.items()]
    signature = _tagger(model).signature
    checks = {name: getattr(first, name) + getattr(rest, name) for name in ("n", "n_short", "n_not_english")}
    checks["n_first"] = first.n
    return RangeScore(signature, parts, fragments, outputs, checks, first.digests)


def _tagger(model: Any) -> Any:
    """The tagger of a multi-task model (every task's model names the same one)."""
    sub = next(iter(model.models_.values()))
    return get_tagger(sub.tagger, batch_size=sub.batch_size)


def add_part(evidence: Any, part: BatchPart) -> None:
    """Add one batch's sums to ``evidence`` as :meth:`StudentEvidence.add_scored` would have, bootstrap included."""
    evidence.n_empty += part.n_empty
    evidence.n_outputs += part.n_outputs
    evidence.sum_log_proba += part.sum_log_proba
    evidence.feature_sums += part.feature_sums
    if part.feature_outputs is not None:
        evidence.feature_outputs += part.feature_outputs
    for test, state in zip(evidence.paired_tests(), part.paired):
        test.merge_state(state)
    evidence.add_bootstrap(np.log(np.clip(part.proba, 1e-12, 1.0)))
    evidence.add_examples(part.examples)


class Reduction:
    """The client's side: per-task evidence fed batch by batch, in batch order, from ranges taken in order."""

    def __init__(self, model: Any, totals: dict[Any, int]) -> None:
        from ..inference import StudentEvidence

        self.model, self.totals = model, totals
        self.evidence = {key: StudentEvidence(model.models_[key]) for key in totals}
        self.next = dict.fromkeys(totals, 0)
        self.ready: dict[tuple[Any, int], BatchPart] = {}
        self.pieces: dict[tuple[Any, int], list[Fragment]] = {}
        self.checks = OutputChecks()
        self.seen: set[bytes] = set()
        self.n_first = 0

    def add(self, score: RangeScore) -> None:
        for part in score.parts:
            self.ready[(part.key, part.batch)] = part
        for piece in score.fragments:
            self.pieces.setdefault((piece.key, piece.batch), []).append(piece)
        for key, counts in score.feature_outputs.items():
            self.evidence[key].feature_outputs += counts
        for name in ("n", "n_short", "n_not_english"):
            setattr(self.checks, name, getattr(self.checks, name) + score.checks[name])
        self.n_first += score.checks["n_first"]
        self.seen.update(score.seen)
        self.checks.n_repeated = self.n_first - len(self.seen)  # a repeat is a first-MAX_REMEMBERED digest seen before
        for key in self.totals:
            self._advance(key)

    def _advance(self, key: Any) -> None:
        sub = self.model.models_[key]
        while True:
            at = (key, self.next[key])
            part = self.ready.pop(at, None)
            if part is None:
                pieces = self.pieces.get(at, [])
                size = min(sub.batch_size, self.totals[key] - at[1] * sub.batch_size)
                if sum(len(p.docs) for p in pieces) < size or size <= 0:
                    return
                del self.pieces[at]
                part = batch_part(sub, key, at[1], [d for p in pieces for d in p.docs],
                                  [i for p in pieces for i in p.ids], self.evidence[key].max_example_outputs)
            add_part(self.evidence[key], part)
            self.next[key] += 1


def rank_file(model: Any, path: str | os.PathLike, *, client: Any = None, n_workers: int | None = None,
              scheduler: str | None = None, task: str | None = None, top_templates: int = 10,
              alpha: float | None = None, tests: str = "either", text_field: str | None = None,
              skip_invalid: bool = False, max_chars: int = DEFAULT_MAX_CHARS,
              partition_bytes: int | None = None,
              stats: dict[str, float] | None = None) -> tuple[dict[str, Any], list[InputError]]:
    """Rank the teacher of the student whose outputs fill the JSON Lines file ``path``, on Dask.

    The same result dict as ``rank_student(model, RecordReader(path, ...), task=task, ...)`` in one
    process (byte for byte once written as JSON), and the reader's skipped lines (``skip_invalid``),
    each naming its file and line. Give one of ``client``, ``n_workers`` or ``scheduler`` (see
    :func:`attribution.parallel.dask_tagging`); ``partition_bytes`` sets the size of the byte ranges
    each worker reads (by default a quarter of the file per worker thread, at most
    :data:`~attribution.parallel.ranges.DEFAULT_PARTITION_BYTES`). A ``stats`` dict gets the number of ranges
    and the seconds of each step: ``scan_s``, ``score_s`` (the second pass, reduce included) and
    ``reduce_s`` (the client's share: adding batches, bootstrap draws, the batches it scores itself).
    """
    from ..api import StudentRun
    from ..inference import ALPHA
    from .cluster import dask_client, worker_threads

    reader_options = {"text_field": text_field, "skip_invalid": skip_invalid, "max_chars": max_chars}
    source = str(path)
    with dask_client(client, n_workers=n_workers, scheduler=scheduler) as dask:
        if partition_bytes is None:
            partition_bytes = default_partition_bytes(path, worker_threads(dask))
        spans = byte_ranges(path, partition_bytes)
        clock = {"n_ranges": float(len(spans)), "reduce_s": 0.0, "start": time.perf_counter()}
        # a key of its own: with content-hashed keys, a run that follows another on the same model could ask for
        # the key while the scheduler releases the earlier run's copy ("lost dependencies")
        shared = dask.scatter(model, broadcast=True, hash=False)
        scans = dask.gather(dask.map(scan_range, [shared] * len(spans), [source] * len(spans), spans,
                                     [task] * len(spans), [reader_options] * len(spans), pure=False))
        plans, skipped, students = _plan(scans)
        clock["scan_s"] = time.perf_counter() - clock["start"]
        run = StudentRun(model, task=task)
        run.students = students
        reduction = Reduction(model, plans[-1].totals if plans else {})
        expected = _tagger(model).signature
        n_examples = max(ev.max_example_outputs for ev in reduction.evidence.values()) if plans else 0
        for score in _scores(dask, shared, source, spans, plans, task, reader_options, n_examples):
            if score.signature and score.signature != expected:
                raise InputError(Errors.E704.format(worker=score.signature, local=expected), code="E704")
            start = time.perf_counter()
            reduction.add(score)
            clock["reduce_s"] += time.perf_counter() - start
        clock["score_s"] = time.perf_counter() - clock.pop("start") - clock["scan_s"]
    if stats is not None:
        stats.update(clock)
    run.evidence = {key: ev for key, ev in reduction.evidence.items() if reduction.totals[key]}
    run.checks = reduction.checks
    return run.finish(top_templates=top_templates, alpha=ALPHA if alpha is None else alpha, tests=tests), skipped


def _plan(scans: list[RangeScan]) -> tuple[list[Plan], list[InputError], set[str]]:
    """Each range's first line and per-task offsets; the first error of the file is raised here."""
    from ..api import MAX_NAMED_STUDENTS

    firsts = line_offsets([scan.n_lines for scan in scans])
    skipped: list[InputError] = []
    students: set[str] = set()
    offsets: dict[Any, int] = {}
    n_outputs = 0
    starts = []
    for scan, first_line in zip(scans, firsts):
        skipped.extend(shift_lines(err, first_line) for err in scan.skipped)
        if scan.error is not None:
            raise shift_lines(scan.error, first_line) if isinstance(scan.error, InputError) else scan.error
        for name in scan.students:
            if len(students) <= MAX_NAMED_STUDENTS:
                students.add(name)
        starts.append((first_line, n_outputs, dict(offsets)))
        for key, count in scan.counts.items():
            offsets[key] = offsets.get(key, 0) + count
            n_outputs += count
    return [Plan(line, before, {key: seen.get(key, 0) for key in offsets}, offsets)
            for line, before, seen in starts], skipped, students


def _scores(dask: Any, shared: Any, source: str, spans: list[tuple[int, int]], plans: list[Plan],
            task: str | None, reader_options: dict[str, Any], n_examples: int) -> Iterator[RangeScore]:
    """Second-pass results in range order, a few ranges per worker in flight."""
    from .cluster import worker_threads

    window = READ_AHEAD * worker_threads(dask)
    futures: list[Any] = []
    for span, plan in zip(spans, plans):
        futures.append(dask.submit(score_range, shared, source, span, plan, task, reader_options, n_examples,
                                   pure=False))
        if len(futures) > window:
            yield _result(futures.pop(0))
    while futures:
        yield _result(futures.pop(0))


def _result(future: Any) -> Any:
    try:
        return future.result()
    except AttributionError:
        raise
    except Exception as err:  # a worker failed for good (Dask already retried lost workers)
        raise AttributionError(Errors.E703.format(detail=f"{type(err).__name__}: {err}"), code="E703") from err


# -- rank --workers/--scheduler in the CLI: workers read and tag the ranges, this process ranks --------------------


@dataclass
class RangeRead:
    """One byte range read and tagged on a worker (lines numbered from 1 within the range)."""

    n_lines: int
    n_rows: int
    records: list[Any]
    docs: list[TaggedDoc]  # the tags of the outputs a run will score (``rank``'s task filter), in order
    skipped: list[InputError]
    skipped_names: list[dict[str, str]]
    error: AttributionError | None
    signature: str


def routing(model: Any) -> Any:
    """What a worker needs of ``model`` to tag a record's output as the model will score it: the tasks, each
    with its ``normalize`` setting (a few bytes, not the fitted model)."""
    from types import SimpleNamespace

    from ..multitask import MultiTaskAttributor, as_multitask

    model = as_multitask(model)
    light = MultiTaskAttributor.__new__(MultiTaskAttributor)
    models: dict[Any, Any] = {key: SimpleNamespace(normalize=sub.normalize) for key, sub in model.models_.items()}
    light.models_ = models  # what MultiTaskAttributor.task_of and task_key look at
    return light


def read_range(route: Any, path: str, span: tuple[int, int], task: str | None, reader_options: dict[str, Any],
               tagger: tuple[str, int]) -> RangeRead:
    """Worker side: read one range as :class:`~attribution.io.RecordReader` would (the first error stops it), and
    tag the outputs a :class:`~attribution.api.StudentRun` will score (``task``'s filter; an output whose task the
    model does not know is left for the client to refuse), normalized as the model of its task normalizes."""
    from ..normalize import normalize_texts
    from .cluster import pin_threads

    pin_threads()
    reader = RangeReader(path, *span, **reader_options)
    records: list[Any] = []
    error = None
    try:
        for record in reader:
            records.append(record)
    except AttributionError as err:
        error = err
    texts = []
    for record in records:
        if task is not None and record.task not in (task, None):
            continue
        try:
            key = route.task_of(record, task)
        except AttributionError:
            break  # the client raises it at this record; nothing after it is scored
        texts.append(normalize_texts([record.output], normalize=route.models_[key].normalize)[0])
    tagging = get_tagger(tagger[0], batch_size=tagger[1])
    docs = tagging.tag(texts, cache=False) if texts else []
    return RangeRead(reader.n_lines, reader.n_rows, records, docs, reader.skipped, reader.skipped_names, error,
                     tagging.signature)


class ReadyTags:
    """A tagging backend (:mod:`attribution.tagging`) that hands out the tags the workers returned with their
    ranges, each as many times as the workers tagged its text (then forgets it); texts it does not hold (a
    control's outputs) go to ``inner``, the cluster."""

    read_ahead = 0  # the tags are here: every batch is scored as soon as it is full

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.docs: dict[str, list[Any]] = {}  # text -> [doc, uses left]

    def add(self, docs: Sequence[TaggedDoc]) -> None:
        for doc in docs:
            entry = self.docs.get(doc.text)
            if entry is None:
                self.docs[doc.text] = [doc.interned(), 1]
            else:
                entry[1] += 1

    def tagged(self, tagger: Any, texts: Sequence[str]) -> list[TaggedDoc] | None:
        """The tags of every one of ``texts`` (each use counted), or None when some are not here."""
        from collections import Counter

        needed = Counter(texts)
        if any(self.docs.get(text, (None, 0))[1] < n for text, n in needed.items()):
            return None
        out = [self.docs[text][0] for text in texts]
        for text, n in needed.items():
            entry = self.docs[text]
            entry[1] -= n
            if entry[1] == 0:
                del self.docs[text]
        return out

    def submit(self, tagger: Any, config: tuple[str, int], texts: list[str]) -> Any:
        return self.inner.submit(tagger, config, texts)


class WorkerRecords(RecordReader):
    """The records of a JSON Lines file, as :class:`~attribution.io.RecordReader` yields them (the same records,
    lines, ``skipped``, ``n_read`` and errors, ``FILE:LINE`` with the line in the whole file), read in byte ranges
    by Dask workers, which also tag the outputs (:class:`ReadyTags` hands the tags to the ranking). This process
    reads none of the file; a few ranges per worker are in flight while it ranks the records of earlier ones.

    ``stats`` gets ``n_ranges`` and, in seconds, ``wait_s`` (waiting for ranges) and ``rank_s`` (this process's
    share: everything between two ranges).
    """

    def __init__(self, path: str | os.PathLike, model: Any, client: Any, tags: ReadyTags, *, task: str | None = None,
                 partition_bytes: int | None = None, **reader_options: Any) -> None:
        from ..multitask import as_multitask

        super().__init__(path, **reader_options)
        self.client, self.tags, self.task = client, tags, task
        self.route = routing(model)
        sub = next(iter(as_multitask(model).models_.values()))
        self.tagger = get_tagger(sub.tagger, batch_size=sub.batch_size)
        self.partition_bytes = partition_bytes
        self.reader_options = reader_options
        self.stats: dict[str, float] = {"n_ranges": 0.0, "wait_s": 0.0, "rank_s": 0.0}
        self._futures: list[Any] = []

    def __iter__(self) -> Iterator[Any]:
        import dataclasses

        from .cluster import worker_threads

        size = self.partition_bytes or default_partition_bytes(self.path, worker_threads(self.client))
        spans = byte_ranges(self.path, size)
        self.stats["n_ranges"] = float(len(spans))
        window = READ_AHEAD * worker_threads(self.client)
        pending = iter(spans)
        config = self.tagger.config or (self.tagger.name, self.tagger.batch_size)
        for span in itertools.islice(pending, window):
            self._futures.append(self._submit(span, config))
        first_line = 1
        while self._futures:
            start = time.perf_counter()
            read: RangeRead = _result(self._futures.pop(0))
            self.stats["wait_s"] += time.perf_counter() - start
            following = next(pending, None)
            if following is not None:
                self._futures.append(self._submit(following, config))
            if read.signature != self.tagger.signature:
                raise InputError(Errors.E704.format(worker=read.signature, local=self.tagger.signature), code="E704")
            start = time.perf_counter()
            self.skipped.extend(shift_lines(err, first_line) for err in read.skipped)
            self.skipped_names.extend(read.skipped_names)
            self.n_rows += read.n_rows
            self.tags.add(read.docs)
            shift = first_line - 1
            for record in read.records:
                self.n_read += 1
                yield dataclasses.replace(record, line=record.line + shift) if shift else record
            if read.error is not None:
                raise shift_lines(read.error, first_line) if isinstance(read.error, InputError) else read.error
            first_line += read.n_lines
            self.stats["rank_s"] += time.perf_counter() - start

    def _submit(self, span: tuple[int, int], config: tuple[str, int]) -> Any:
        return self.client.submit(read_range, self.route, str(self.path), span, self.task, self.reader_options,
                                  config, pure=False)

    def close(self) -> None:
        """Cancel the ranges still in flight (a run that stopped early)."""
        if self._futures:
            self.client.cancel(self._futures)
            self._futures.clear()


def default_partition_bytes(path: str | os.PathLike, n_threads: int) -> int:
    """A quarter of the file per worker thread, between :data:`MIN_PARTITION_BYTES` and
    :data:`~attribution.parallel.ranges.DEFAULT_PARTITION_BYTES`."""
    size = os.path.getsize(path) if os.path.isfile(path) else 0
    return max(MIN_PARTITION_BYTES, min(DEFAULT_PARTITION_BYTES, size // (4 * n_threads) + 1))


@contextlib.contextmanager
def worker_records(path: str | os.PathLike, model: Any, *, client: Any, task: str | None = None,
                   partition_bytes: int | None = None, **reader_options: Any) -> Iterator[WorkerRecords]:
    """A :class:`WorkerRecords` of ``path`` on ``client``'s workers, whose tags the ranking inside the ``with``
    block uses (:func:`attribution.api.rank_student`, :func:`attribution.result.rank_students`: the same result,
    byte for byte, as with a :class:`~attribution.io.RecordReader` in one process)::

        with worker_records("student.jsonl", model, client=client) as student:
            result = rank_student(model, student)
    """
    from ..tagging import tagging_backend, using_backend
    from .cluster import DaskTagging

    tags = ReadyTags(tagging_backend() or DaskTagging(client))
    reader = WorkerRecords(path, model, client, tags, task=task, partition_bytes=partition_bytes, **reader_options)
    try:
        with using_backend(tags):
            yield reader
    finally:
        reader.close()
