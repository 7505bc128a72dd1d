"""Audit results as objects of DataFrames, one student or many, and their tabular exports.

:func:`audit_student` ranks one student (the dict of :func:`attribution.api.rank_student`, wrapped in
an :class:`AuditResult`); :func:`rank_students` ranks every group of a file (e.g. every ``student``)
in one pass, with the model fitted or loaded once, and returns an :class:`AuditBatch`. ``to_dict()``
gives the JSON that ``attribute-teacher rank`` prints (it adds only ``inputs`` and ``skipped``, which
describe files); :func:`write_table` writes any of the DataFrames as CSV or Parquet, atomically.

Grouping streams the file once: each record goes to its group's accumulator (batched per task, as
for one student), so memory grows with the number of groups (a few hundred example outputs each),
not with the number of records.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .api import ControlScores, SharedScoring, StudentRun, rank_student
from .errors import ModelError, input_error, missing_dependency, model_error
from .explain import CONTRAST_COLUMNS
from .inference import ALPHA
from .io import Record, RecordReader, atomic_write
from .multitask import as_multitask
from .verdicts import Verdict, VerdictRule

#: Record fields ``rank_students`` (and ``rank --group-by``) can group by.
GROUP_FIELDS = ("student", "teacher", "task")
#: Columns of :meth:`AuditResult.summary`: one row per student.
#: One row per student. ``teacher`` / ``family``: what the verdict names (empty unless attributed);
#: ``top_teacher`` / ``top_family``: the ranking's first row; ``runner_up``: the rival behind the verdict's
#: p-value (the same as in the JSON and the report), not the ranking's second.
SUMMARY_COLUMNS = ("student", "teacher", "family", "verdict_level", "top_teacher", "top_family", "probability",
                   "ci_low", "ci_high", "runner_up", "status", "test", "p_value", "p_paired", "p_unlisted",
                   "n_outputs", "n_empty")
RANKING_COLUMNS = ("teacher", "probability", "support", "ci_low", "ci_high")
FAMILY_RANKING_COLUMNS = ("family", "probability", "support", "ci_low", "ci_high", "members")
EVIDENCE_COLUMNS = ("task", "teacher", "block", "feature", "weight", "n_outputs", "share_of_outputs", "reference_share",
                    "examples")
TABLE_SUFFIXES = (".csv", ".parquet")


@dataclass
class AuditResult:
    """One student's ranking, verdict and evidence.

    ``data`` is the JSON-ready dict (:func:`attribution.api.rank_student`'s, with ``student`` when
    the result comes from a group, and ``signature``); the properties are views of it as DataFrames.
    """

    data: dict[str, Any]
    student: str | None = None

    @property
    def ranking(self) -> pd.DataFrame:
        """Teachers, most likely first: ``teacher``, ``probability``, ``support``, ``ci_low``, ``ci_high`` (and
        ``family`` with a model fitted with families)."""
        ranking = self.data["ranking"]
        extra = ["family"] if ranking and "family" in ranking[0] else []
        return pd.DataFrame(ranking, columns=[*RANKING_COLUMNS, *extra])

    @property
    def family_ranking(self) -> pd.DataFrame:
        """Families, most likely first (``members``: their teachers in play); without families (and without
        ``exclude``), each teacher is its own family."""
        rows = self.data.get("family_ranking") or [{**row, "family": row["teacher"], "members": [row["teacher"]]}
                                                    for row in self.data["ranking"]]
        return pd.DataFrame(rows, columns=list(FAMILY_RANKING_COLUMNS))

    @property
    def verdict(self) -> pd.DataFrame:
        """The verdict as one row (index: the student): ``status``, ``teacher``, ``best_candidate``,
        ``test``, ``p_value``, ``p_paired``, ``n_paired``, ``runner_up``, ``paired_score`` (a dict per
        teacher), ``p_unlisted``, ``alpha`` (see :func:`attribution.api.verdict`)."""
        row = dict(self.data["verdict"])
        return pd.DataFrame([row], index=pd.Index([self.student], name="student"))

    @property
    def evidence(self) -> pd.DataFrame:
        """The templates behind the top teacher, strongest first (``examples``: spans from the outputs)."""
        return pd.DataFrame(self.data.get("evidence", []), columns=list(EVIDENCE_COLUMNS))

    @property
    def contrast(self) -> pd.DataFrame:
        """The templates that set the verdict's teacher apart from its runner-up, largest share of the log-odds
        first (:func:`attribution.explain.contrast`); the rest of the result's ``contrast`` (``teacher``,
        ``runner_up``, ``weak``, ``weak_reasons``, ...) in the frame's ``attrs``. Empty without one."""
        found = self.data.get("contrast") or {}
        frame = pd.DataFrame(found.get("templates", []), columns=list(CONTRAST_COLUMNS))
        frame.attrs.update({k: v for k, v in found.items() if k != "templates"})
        return frame

    @property
    def per_output(self) -> pd.DataFrame:
        """Each output's probabilities: ``id`` (the record's id, else ``line:N``), ``task``, one column per
        teacher. Only kept with ``keep_outputs=True`` (else ``ModelError`` E217)."""
        outputs = self.data.get("outputs")
        if outputs is None:
            raise model_error("E217")
        teachers: dict[str, None] = {}
        for row in outputs:
            teachers.update(dict.fromkeys(row["probabilities"]))
        rows = [{"id": row["id"], "task": row["task"], **row["probabilities"]} for row in outputs]
        return pd.DataFrame(rows, columns=["id", "task", *teachers])

    @property
    def warnings(self) -> list[str]:
        """What the run noticed but did not refuse (e.g. several students pooled into one)."""
        return list(self.data.get("warnings", []))

    def summary(self) -> dict[str, Any]:
        """One row (:data:`SUMMARY_COLUMNS`): what the verdict names (``teacher``/``family``, empty unless
        attributed), the ranking's first row and its probability and interval, the verdict's runner-up, status
        and p-values, the counts; a group that could not be ranked has no top teacher and no probability."""
        ranking, verdict = self.data["ranking"], self.data["verdict"]
        top = ranking[0] if ranking else {"teacher": None, "probability": None}
        return {"student": self.student, "teacher": verdict.get("teacher"),
                "family": verdict.get("family", verdict.get("teacher")), "verdict_level": verdict.get("level"),
                "top_teacher": top["teacher"], "top_family": top.get("family", top["teacher"]),
                "probability": top["probability"], "ci_low": top.get("ci_low"), "ci_high": top.get("ci_high"),
                "runner_up": verdict.get("runner_up"), "status": verdict.get("status"), "test": verdict.get("test"),
                "p_value": verdict.get("p_value"), "p_paired": verdict.get("p_paired"),
                "p_unlisted": verdict.get("p_unlisted"), "n_outputs": self.data["n_outputs"],
                "n_empty": self.data.get("n_empty", 0)}

    def table(self) -> pd.DataFrame:
        """:meth:`summary` as a one-row DataFrame."""
        return summary_table([self])

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``attribute-teacher rank`` (a copy; floats unrounded)."""
        return _copy(self.data)


@dataclass
class AuditBatch:
    """One :class:`AuditResult` per group of a file (``group_by``: which field named the groups),
    in the groups' sorted order."""

    results: list[AuditResult]
    group_by: str = "student"
    meta: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[AuditResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, name: str) -> AuditResult:
        for result in self.results:
            if result.student == name:
                return result
        raise KeyError(name)

    def table(self) -> pd.DataFrame:
        """One row per student (:data:`SUMMARY_COLUMNS`)."""
        return summary_table(self.results)

    @property
    def per_output(self) -> pd.DataFrame:
        """Every student's :attr:`AuditResult.per_output`, with a ``student`` column first. Only kept with
        ``rank_students(..., keep_outputs=True)`` (else ``ModelError`` E217)."""
        return _stack([r.per_output.assign(student=r.student) for r in self.results])

    @property
    def evidence(self) -> pd.DataFrame:
        """Every student's :attr:`AuditResult.evidence`, with a ``student`` column first."""
        return _stack([r.evidence.assign(student=r.student) for r in self.results])

    @property
    def warnings(self) -> list[str]:
        """The run's warnings (e.g. about the references), then each group's, named."""
        return [*self.meta.get("warnings", []),
                *(f"{self.group_by} '{r.student}': {w}" for r in self.results for w in r.warnings)]

    def to_dict(self) -> dict[str, Any]:
        """``{"group_by", "students": [{"student", ...one student's JSON}], "signature", ...}``."""
        return {"group_by": self.group_by, "students": [r.to_dict() for r in self.results], **_copy(self.meta)}


def _copy(value: Any) -> Any:
    """A copy of a JSON-ready document (dicts and lists copied, everything else shared): what
    ``copy.deepcopy`` gives it, several times faster (a batch of thousands of students copies it all)."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return copy.deepcopy(value) if not isinstance(value, (str, int, float, bool, type(None))) else value


def summary_table(results: Iterable[AuditResult]) -> pd.DataFrame:
    """One :meth:`AuditResult.summary` row per result; probabilities and p-values as floats (NaN: none)."""
    frame = pd.DataFrame([r.summary() for r in results], columns=list(SUMMARY_COLUMNS))
    for column in ("probability", "ci_low", "ci_high", "p_value", "p_paired", "p_unlisted"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


def _stack(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["student"])
    return frame[["student", *[c for c in frame.columns if c != "student"]]]


def _signature(model: Any) -> str:
    return next(iter(as_multitask(model).models_.values())).signature_


def audit_student(model: Any, records: Iterable[Record], *, references: Sequence[Record] | None = None,
                  reference_files: Sequence[str | os.PathLike] | None = None,
                  model_file: str | os.PathLike | None = None,
                  reader: RecordReader | None = None, skipped_references: Sequence[Any] = (), examples: int = 0,
                  ranker: Callable[..., dict[str, Any]] | None = None, **options: Any) -> AuditResult:
    """Rank one student from its outputs: the whole document that ``attribute-teacher rank`` prints and ``audit``
    writes (the one way to rank a student; :func:`attribution.api.rank_student` is its ranking part alone).

    ``options`` are :func:`attribution.api.rank_student`'s (``task``, ``top_templates``, ``keep_outputs``,
    ``tests``, ``alpha``, ``exclude``, ``control``, ...). The document is theirs plus the model's ``signature``,
    ``skipped``, ``inputs`` and ``run`` (:func:`describe_run`): ``references`` are the records the model was fitted
    on (counts and warnings; None for a saved model, then ``model_file`` names it), ``reader`` the
    :class:`~attribution.io.RecordReader` the records come from (default: ``records`` when it is one: reading
    options, skipped records), ``examples`` whole outputs kept per evidence template. ``student`` is the records'
    ``student`` field when they name one only. ``ranker``: what ranks the records instead of
    :func:`attribution.api.rank_student` (the same options; e.g. :func:`attribution.sequential.rank_sequential`).
    """
    return _audit(model, records, None, references=references, reference_files=reference_files,
                  model_file=model_file, reader=reader, skipped_references=skipped_references, examples=examples,
                  options=options, ranker=ranker)


def _audit(model: Any, records: Iterable[Record], group_by: str | None, *, references: Sequence[Record] | None,
           reference_files: Sequence[str | os.PathLike] | None, model_file: str | os.PathLike | None,
           reader: RecordReader | None, skipped_references: Sequence[Any], examples: int,
           options: dict[str, Any], ranker: Callable[..., dict[str, Any]] | None = None) -> Any:
    """:func:`audit_student` (``group_by`` None) or :func:`rank_students`: the ranking, watched by the run's
    recorder in the same pass, then :func:`describe_run`."""
    from .report.run import RunRecorder

    reader = reader if reader is not None else records if isinstance(records, RecordReader) else None
    if options.get("control") is not None:  # read twice: scored, and its files named
        options = {**options, "control": list(options["control"])}
    recorder = RunRecorder(model, references=references, examples=examples, group_by=group_by)
    seen = _Sources(records)
    audit: AuditResult | AuditBatch
    if group_by is None:
        audit = _rank_one(model, recorder.watch(seen), ranker=ranker, **options)
        batch = AuditBatch([audit])
    else:
        audit = batch = _rank_groups(model, recorder.watch(seen), group_by=group_by, **options)
        if reader is not None and reader.skipped:
            audit = batch = with_skipped_groups(batch, reader, group_by, alpha=options.get("alpha"),
                                                keep_outputs=bool(options.get("keep_outputs")))
    describe_run(audit.data if isinstance(audit, AuditResult) else audit.meta, batch, recorder, model=model,
                 references=references, reference_files=reference_files, model_file=model_file,
                 outputs=[reader.path] if reader is not None else seen.sources, reader=reader,
                 skipped_references=skipped_references, examples=examples, group_by=group_by, options=options)
    return audit


class _Sources:
    """Pass records on, noting the files they come from (``Record.source``) and the one ``student`` they name."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.records = records
        self.sources: dict[str, None] = {}
        self.students: set[str] = set()

    def __iter__(self) -> Iterator[Record]:
        for record in self.records:
            if record.source is not None and record.source not in self.sources and len(self.sources) < 100:
                self.sources[record.source] = None
            if record.student is not None and len(self.students) < 2:
                self.students.add(record.student)
            yield record


def _rank_one(model: Any, records: Iterable[Record], *, ranker: Callable[..., dict[str, Any]] | None = None,
              **options: Any) -> AuditResult:
    """:func:`attribution.api.rank_student` (or ``ranker``) as an :class:`AuditResult`, with the model's
    ``signature``."""
    seen = records if isinstance(records, _Sources) else _Sources(records)
    data = (ranker or rank_student)(model, seen, **options)
    data["signature"] = _signature(model)
    return AuditResult(data, student=next(iter(seen.students)) if len(seen.students) == 1 else None)


def input_files(*, outputs: Iterable[str | os.PathLike] = (), references: Iterable[str | os.PathLike] = (),
                model: str | os.PathLike | None = None,
                control: Iterable[str | os.PathLike] = ()) -> dict[str, dict[str, str]]:
    """The document's ``inputs``: each file's name and SHA-256 (and, when a manifest says where it was collected,
    ``source``), under the same keys however the audit ran: ``outputs`` (the student's), ``reference``, ``model``,
    ``control``; a role of several files numbers them (``reference 1``, ``reference 2``, ...)."""
    from .api import file_digest
    from .distill.manifest import manifest_source

    inputs: dict[str, dict[str, str]] = {}
    for role, paths in (("outputs", outputs), ("reference", references), ("model", [model]), ("control", control)):
        files = [p for p in dict.fromkeys(str(p) for p in paths if p is not None) if os.path.isfile(p)]
        for i, path in enumerate(files, start=1):
            inputs[role if len(files) == 1 else f"{role} {i}"] = {**file_digest(path), **manifest_source(path)}
    return inputs


def describe_run(document: dict[str, Any], batch: AuditBatch, recorder: Any, *, model: Any,
                 references: Sequence[Record] | None = None,
                 reference_files: Sequence[str | os.PathLike] | None = None,
                 model_file: str | os.PathLike | None = None, outputs: Iterable[str | os.PathLike] = (),
                 reader: RecordReader | None = None, skipped_references: Sequence[Any] = (), examples: int = 0,
                 group_by: str | None = None, options: dict[str, Any] | None = None) -> list[str]:
    """Add to a rank document what describes the run, the same for ``rank``, ``audit`` and Python: the warnings
    about the ``references``, ``skipped`` (records skipped), ``inputs`` (:func:`input_files`), ``run``
    (:meth:`attribution.report.run.RunRecorder.finish`: reference counts, settings, skipped records, the prompt
    check) and example outputs; returns the warnings added (references first)."""
    from .checks import reference_warnings

    options = options or {}
    warnings = reference_warnings(references) if references is not None else []
    if warnings:
        document["warnings"] = [*warnings, *document.get("warnings", [])]
    skipped_outputs = list(reader.skipped) if reader is not None else []
    document["skipped"] = len(skipped_references) + len(skipped_outputs)
    control = options.get("control")
    control_files = list(dict.fromkeys(r.source for r in control if r.source)) if control is not None else []
    if reference_files is None and references is not None:
        reference_files = list(dict.fromkeys(r.source for r in references if r.source))
    document["inputs"] = input_files(outputs=outputs, references=reference_files or (), model=model_file,
                                     control=control_files)
    exclude = [str(name) for name in options.get("exclude") or ()]
    sequential: dict[str, Any] = {k: options[k] for k in ("batch_size", "max_outputs", "design") if k in options}
    settings: dict[str, Any] = {"task": options.get("task"), "top_templates": options.get("top_templates", 10),
                "verdict_test": "sequential" if sequential else
                VerdictRule.of(options.get("tests", "either"), options.get("alpha")).name,
                "exclude": ", ".join(exclude) or None,
                "control": (", ".join(Path(f).name for f in control_files) or "records") if control is not None
                else None, "group_by": group_by, "examples": examples, **sequential}
    if reader is not None:
        settings.update(skip_invalid=reader.skip_invalid, max_chars=reader.max_chars, text_field=reader.text_field)
    return warnings + recorder.finish(document, batch, skipped_references=skipped_references,
                                      skipped_outputs=skipped_outputs, options=settings)


def with_skipped_groups(batch: AuditBatch, reader: RecordReader, group_by: str, *, alpha: float | None = None,
                        keep_outputs: bool = False) -> AuditBatch:
    """A group whose every record was skipped (``skip_invalid``) is in the batch too: unavailable, saying why
    (at the run's ``alpha``; with ``keep_outputs``, its kept outputs are none, as :attr:`AuditBatch.per_output`
    needs of every entry)."""
    from collections import Counter

    counts = Counter(names[group_by] for names in reader.skipped_names if group_by in names)
    first: dict[str | None, Any] = {}
    for names, err in zip(reader.skipped_names, reader.skipped):
        first.setdefault(names.get(group_by), err)
    reasons = {name: f"all {n} of its record(s) are invalid and were skipped (--skip-invalid); the first: "
                     f"{first[name]}" for name, n in counts.items()}
    return with_unranked(batch, reasons, alpha=ALPHA if alpha is None else alpha, keep_outputs=keep_outputs)


def rank_students(model: Any, records: Iterable[Record], *, group_by: str = "student",
                  references: Sequence[Record] | None = None,
                  reference_files: Sequence[str | os.PathLike] | None = None,
                  model_file: str | os.PathLike | None = None, reader: RecordReader | None = None,
                  skipped_references: Sequence[Any] = (), examples: int = 0, **options: Any) -> AuditBatch:
    """Rank every group of ``records`` (records sharing a ``group_by`` field: ``student``, ``teacher``
    or ``task``) as one student each, in one streaming pass with one model: :func:`audit_student` per group
    (the same options), the run described once in the batch's ``meta`` (``signature``, ``skipped``,
    ``inputs``, ``run``; see :func:`describe_run`).

    Each entry is :func:`attribution.api.rank_student`'s dict with ``student`` (the group's name) first.
    A record without the field is refused (``InputError`` E123, naming its file and line); no records at
    all, E209. A group with nothing to rank (every output empty after normalization, or one of its tasks
    so; with a ``reader`` that skipped invalid records, every record of it skipped) does not stop the
    others: its entry has no ranking and the verdict ``unavailable``, with the reason
    (:func:`unranked_result`), and a warning names it; when no group at all can be ranked, ``ModelError``
    E216 names the first.
    """
    if group_by not in GROUP_FIELDS:
        raise model_error("E210", name="group_by", expected=f"one of {', '.join(GROUP_FIELDS)}", got=group_by)
    return _audit(model, records, group_by, references=references, reference_files=reference_files,
                  model_file=model_file, reader=reader, skipped_references=skipped_references, examples=examples,
                  options=options)


def _rank_groups(model: Any, records: Iterable[Record], *, group_by: str = "student", task: str | None = None,
                  top_templates: int = 10, keep_outputs: bool = False, alpha: float = ALPHA,
                  tests: str | VerdictRule = "either", informative_evidence: bool = True, exclude: Iterable[str] = (),
                  control: Iterable[Record] | None = None,
                  progress: Callable[[int], None] | None = None) -> AuditBatch:
    """The ranking of :func:`rank_students`, one entry per group. The groups' outputs are tagged and scored in
    shared batches (:class:`attribution.api.SharedScoring`),
    and each group's state is let go as soon as its entry is made: memory grows with the entries, not with
    a ranking's working state per group.
    """
    rule = VerdictRule.of(tests, alpha)  # a wrong rule fails before any record is read
    scoring = SharedScoring(as_multitask(model), progress=progress)
    controls = ControlScores(control) if control is not None else None  # scored once for every group
    runs: dict[str, StudentRun] = {}
    for record in records:
        name = getattr(record, group_by)
        if name is None:
            raise input_error("E123", source=record.source, line=record.line, field=group_by)
        run = runs.get(name)
        if run is None:
            run = runs[name] = StudentRun(model, task=task, keep_outputs=keep_outputs, scoring=scoring,
                                          warn_pooled=group_by != "student", exclude=exclude,
                                          control=controls)
        run.add(record)
    if not runs:
        raise model_error("E209")
    scoring.finish()
    results, unranked = [], []
    for name in sorted(runs):
        run = runs.pop(name)  # its evidence arrays go as soon as its entry is made
        try:
            data = run.finish(top_templates=top_templates, tests=rule,
                              informative_evidence=informative_evidence)
        except ModelError as err:
            if err.code not in ("E209", "E215"):
                raise
            unranked.append(model_error("E216", field=group_by, group=name, detail=f"{err.message} [{err.code}]"))
            data = unranked_result(run, f"{err.message} [{err.code}]", alpha=rule.alpha)
        results.append(AuditResult({"student": name, **data}, student=name))
    if len(unranked) == len(results):
        raise unranked[0]
    return AuditBatch(results, group_by=group_by, meta={"signature": _signature(model)})


def unranked_result(run: StudentRun | None, reason: str, *, alpha: float = ALPHA,
                    keep_outputs: bool = False) -> dict[str, Any]:
    """The entry of a group that could not be ranked: its counts (none without a ``run``: every record of
    the group was skipped), no ranking and no evidence, and the verdict ``unavailable`` with the
    ``reason`` (also its one warning). Its kept outputs when the ``run`` kept them; without a ``run``,
    none (an empty list) with ``keep_outputs``."""
    evidence = run.evidence.values() if run is not None else []
    verdict = Verdict(status="unavailable", best_candidate=None, alpha=alpha, reason=reason).to_dict()
    entry = {"n_outputs": sum(ev.n_outputs for ev in evidence), "n_empty": sum(ev.n_empty for ev in evidence),
             "ranking": [], "evidence": [], "verdict": verdict, "warnings": [f"not ranked: {reason}"]}
    if run is not None:
        entry["checks"] = run.checks.counts()
        if run.keep_outputs:
            entry["outputs"] = run.kept
    elif keep_outputs:
        entry["outputs"] = []
    return entry


def with_unranked(batch: AuditBatch, reasons: dict[str, str], *, alpha: float = ALPHA,
                  keep_outputs: bool = False) -> AuditBatch:
    """``batch`` with an ``unavailable`` entry (:func:`unranked_result`) for each group of ``reasons`` it
    lacks (``{name: reason}``: e.g. groups whose every record was skipped), in the groups' order; with
    ``keep_outputs`` (the batch's runs kept their outputs), each with none kept."""
    extra = [AuditResult({"student": name, **unranked_result(None, reason, alpha=alpha,
                                                             keep_outputs=keep_outputs)}, student=name)
             for name, reason in reasons.items() if name not in {r.student for r in batch}]
    results = sorted([*batch.results, *extra], key=lambda r: str(r.student))
    return AuditBatch(results, group_by=batch.group_by, meta=batch.meta)


# -- tables ----------------------------------------------------------------------------------------
def table_suffix(path: str | os.PathLike, option: str) -> str:
    """``.csv`` or ``.parquet`` (checked before any work; Parquet also needs pyarrow, E305)."""
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise input_error("E124", suffix=suffix or "(none)", option=option)
    if suffix == ".parquet":
        require_parquet()
    return suffix


def require_parquet() -> None:
    """Parquet is written with pyarrow, an optional dependency (``[report]`` extra)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise missing_dependency("pyarrow (for Parquet files)", "report") from None


def frame_to_csv(frame: pd.DataFrame) -> str:
    """Stable CSV text: floats rounded to 6 places, lists as JSON, ``\\n`` line ends; a text cell or column name
    that a spreadsheet would run as a formula starts with ``'`` (:func:`attribution.sanitize.for_spreadsheet`).
    Every CSV the toolkit writes or prints comes from here."""
    from .sanitize import for_spreadsheet

    out = _for_file(frame, lists_as_json=True)
    for column in out.columns:
        if not pd.api.types.is_numeric_dtype(out[column]):
            out[column] = pd.Series([for_spreadsheet(v) for v in out[column].tolist()], index=out.index,
                                    dtype=object)
    out.columns = [for_spreadsheet(str(c)) for c in out.columns]
    # with "\r\n" as the row end, a cell holding a lone "\r" is quoted too (with "\n" it was written bare, and a
    # reader took it for the end of the row); then each row end outside quotes becomes "\n"
    parts = out.to_csv(index=False, lineterminator="\r\n").split('"')
    parts[::2] = [part.replace("\r\n", "\n") for part in parts[::2]]
    return '"'.join(parts)


def write_table(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``frame`` as CSV or Parquet (by suffix), atomically (together with the other files of a
    :func:`attribution.io.write_together` block)."""
    suffix = table_suffix(path, "the table")
    if suffix == ".csv":
        with atomic_write(path) as handle:
            handle.write(frame_to_csv(frame))
        return
    with atomic_write(path, "wb") as handle:
        _for_file(frame, lists_as_json=False).to_parquet(handle, index=False)


def _for_file(frame: pd.DataFrame, *, lists_as_json: bool) -> pd.DataFrame:
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].round(6)
        elif out[column].dtype == object:
            values = out[column].tolist()
            if any(isinstance(v, float) for v in values):
                out[column] = [round(v, 6) if isinstance(v, float) else v for v in values]
            if lists_as_json and any(isinstance(v, (list, dict)) for v in values):
                out[column] = [json.dumps(v, ensure_ascii=False, sort_keys=True) if isinstance(v, (list, dict))
                               else v for v in values]
    return out


__all__ = ["AuditBatch", "AuditResult", "audit_student", "rank_students", "unranked_result", "with_unranked",
           "write_table", "frame_to_csv", "GROUP_FIELDS", "SUMMARY_COLUMNS"]
