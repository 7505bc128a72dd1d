"""Run a whole audit from one TOML config: collect what is missing, fit, rank, write the results.

The config names the prompts, the suspect student (a file of its outputs, or an endpoint to query)
and the candidate teachers (files or endpoints), the output folder and the attribution options.
Endpoint outputs are collected resumably into the output folder (a rerun skips what is there);
then the teachers' outputs are fitted, the student is ranked, and ``result.json``, the report and
a copy of the config are written. See ``examples/audit.toml`` and ``docs/auditing-api-models.md``.
Every config error names the file, the line and the key.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checks import reference_warnings
from .distill.settings import SETTINGS, Setting, problem
from .errors import AttributionError, input_error

#: What a key may hold: a type, or a :class:`~attribution.distill.settings.Setting` (kind and range), the one
#: the command line checks its options against.
Expected = type | tuple[type, ...] | Setting
#: Endpoint settings: allowed in ``[defaults]`` and in each endpoint entry (which overrides them).
ENDPOINT_KEYS: dict[str, Expected] = {name: setting for name, setting in SETTINGS.items() if name != "limit"}
SOURCE_KEYS: dict[str, Expected] = {"name": str, "file": str, "endpoint": str, "model": str, "teacher": str,
                                    **ENDPOINT_KEYS}
TABLES: dict[str, dict[str, Expected]] = {
    "audit": {"prompts": str, "student_prompts": str, "limit": SETTINGS["limit"], "task": str,
              "max_outputs": int, "batch_size": int, "sequential_design": str},
    "defaults": ENDPOINT_KEYS,
    "student": SOURCE_KEYS,
    "teachers": SOURCE_KEYS,
    "attribution": {"features": str, "tagger": str, "normalize": bool, "task": str, "top_templates": int,
                    "seed": int, "report": (str, bool), "verdict_test": str},
    "case": {"id": str, "auditor": str, "organisation": str},  # shown in the report
}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
#: ``[attribution] report``: which report to write into the output folder (``report.html`` / ``report.md``).
REPORT_FORMATS = ("html", "md")
#: Deepest nesting of arrays and inline tables read from a config (a real one nests two or three levels).
MAX_NESTING = 32


@dataclass
class Source:
    """A student or a teacher: a file of outputs, or an endpoint to query."""

    name: str | None
    file: Path | None = None
    endpoint: str | None = None
    model: str | None = None
    teacher: str | None = None  # a student's true teacher, when known
    settings: dict[str, Any] = field(default_factory=dict)
    line: int | None = None

    @property
    def label(self) -> str:
        return self.name or self.model or (self.file.stem if self.file else "?")


@dataclass
class AuditConfig:
    path: Path
    prompts: Path | None
    student_prompts: Path | None
    student: Source
    teachers: list[Source]
    limit: int = 0
    task: str | None = None
    #: the suspect's budget: its outputs collected in batches of ``batch_size`` until the sequential verdict
    #: concludes or ``max_outputs`` were collected (None: every prompt, the fixed-n verdict)
    max_outputs: int | None = None
    batch_size: int | None = None
    sequential_design: str = "e-process"
    attribution: dict[str, Any] = field(default_factory=dict)
    case: Any = None  # attribution.report.case.CaseDetails: the suspect's name and [case]


class _Lines:
    """Line numbers of tables and keys in a TOML file, for error messages (a light scan, not a parser)."""

    def __init__(self, text: str) -> None:
        self.keys: dict[tuple[str, int, str], int] = {}
        self.tables: dict[tuple[str, int], int] = {}
        counts: dict[str, int] = {}
        table, index = "", 0
        for number, line in enumerate(text.splitlines(), start=1):
            head = re.match(r"\s*(\[\[?)\s*([A-Za-z0-9_.\-\"']+)\s*\]\]?", line)
            if head:
                table = head.group(2).strip("\"'")
                index = counts.get(table, -1) + 1 if head.group(1) == "[[" else 0
                counts[table] = index
                self.tables.setdefault((table, index), number)
                continue
            key = re.match(r"\s*([A-Za-z0-9_\-]+|\"[^\"]*\")\s*=", line)
            if key:
                self.keys.setdefault((table, index, key.group(1).strip('"')), number)

    def of(self, table: str, index: int = 0, key: str | None = None) -> int | None:
        if key is not None and (table, index, key) in self.keys:
            return self.keys[(table, index, key)]
        return self.tables.get((table, index))


def _error(path: Path, line: int | None, detail: str) -> Exception:
    return input_error("E416", source=str(path), line=line, detail=detail)


def load_config(path: str | os.PathLike) -> AuditConfig:
    """Read and check an audit config; paths in it are relative to the config file's folder.

    Raises :class:`~attribution.errors.InputError` (``FILE:LINE: audit config: ... [E416]``) naming
    the table and key of the first problem.
    """
    path = Path(path)
    if not path.is_file():
        raise input_error("E109", source=str(path))
    text = _read_text(path)
    data = _parse_toml(path, text)
    config = _ConfigChecker(path, text)
    config.check_tables(data)
    config.check_report(data.get("attribution", {}).get("report", "html"))
    config.check_verdict_test(data.get("attribution", {}))
    defaults = data.get("defaults", {})
    if "student" not in data:
        raise config.fail("audit", "no [student]: give the suspect model's outputs (file = ...) or endpoint = ... "
                          "and model = ...")
    student = config.source("student", data["student"], 0, defaults)
    teachers = config.teachers(data.get("teachers", []), defaults)
    audit = data.get("audit", {})
    prompts = config.prompts(audit, student, teachers)
    attribution = dict(data.get("attribution", {}))
    config.check_features(attribution)
    config.check_budget(audit)
    return AuditConfig(path=path, prompts=prompts,
                       student_prompts=config.rel(audit["student_prompts"]) if "student_prompts" in audit else prompts,
                       student=student, teachers=teachers,
                       limit=audit.get("limit", 0), task=audit.get("task"), attribution=attribution,
                       max_outputs=audit.get("max_outputs"), batch_size=audit.get("batch_size"),
                       sequential_design=audit.get("sequential_design", "e-process"),
                       case=config.case(data.get("case", {}), student))


def _read_text(path: Path) -> str:
    """The config's text; bytes that are not UTF-8 (as TOML requires) are E416 at their line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise _error(path, line, f"the file is not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start}); "
                     "TOML files are UTF-8") from None


def _parse_toml(path: Path, text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    deep = _too_deep(text)
    if deep is not None:
        raise _error(path, deep, f"arrays or inline tables nested deeper than {MAX_NESTING} levels")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        where = re.search(r"line (\d+)", str(err))
        raise _error(path, int(where.group(1)) if where else None, f"invalid TOML: {err}") from None
    except RecursionError:  # nesting _too_deep did not see (it skips what it takes for strings)
        raise _error(path, None, "the TOML is nested too deeply to read") from None


def _too_deep(text: str) -> int | None:
    """The line where arrays and inline tables nest deeper than :data:`MAX_NESTING`, or None.

    A light scan, not a parser: brackets inside quoted strings and comments do not count, and neither do the
    ``[table]`` / ``[[table]]`` headers that open a line. Enough to refuse hostile nesting (which the TOML
    parser would meet with a RecursionError) with a line number, without refusing any real config.
    """
    depth, quote = 0, ""
    for number, line in enumerate(text.splitlines(), start=1):
        i, stripped = 0, line.lstrip()
        if depth == 0 and not quote and stripped.startswith("["):
            continue  # a table header
        while i < len(line):
            char = line[i]
            if quote:
                if line.startswith(quote, i):
                    quote, i = "", i + len(quote)
                    continue
                i += 2 if char == "\\" and quote in ('"', '"""') else 1
                continue
            if char == "#":
                break
            if line.startswith(('"""', "'''"), i):
                quote, i = line[i:i + 3], i + 3
                continue
            if char in "\"'":
                quote = char
            elif char in "[{":
                depth += 1
                if depth > MAX_NESTING:
                    return number
            elif char in "]}":
                depth = max(depth - 1, 0)
            i += 1
        if quote in ('"', "'"):
            quote = ""  # a one-line string ends with its line
    return None


class _ConfigChecker:
    """The checks of :func:`load_config`, each error naming the config's file, line, table and key."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = _Lines(text)

    def rel(self, value: str) -> Path:
        """A path in the config, relative to the config's folder."""
        return Path(os.path.normpath(self.path.parent / value))

    def fail(self, table: str, detail: str, key: str | None = None, index: int = 0) -> Exception:
        return _error(self.path, self.lines.of(table, index, key), detail)

    def check_tables(self, data: dict[str, Any]) -> None:
        """Known tables and keys only, each value of its key's type."""
        for table, value in data.items():
            if table not in TABLES:
                raise self.fail(table, f"unknown table [{table}]; known: {', '.join(f'[{t}]' for t in TABLES)}")
            entries = value if table == "teachers" else [value]
            if table == "teachers" and not isinstance(value, list):
                raise self.fail(table, "teachers must be an array of tables: write each as [[teachers]]")
            if table != "teachers" and not isinstance(value, dict):
                raise self.fail(table, f"'{table}' must be a table: write it as [{table}]")
            for index, entry in enumerate(entries):
                for key, item in entry.items():
                    self._check_key(table, index, key, item)

    def _check_key(self, table: str, index: int, key: str, item: Any) -> None:
        known = TABLES[table]
        if table == "audit" and key == "output_dir":
            raise self.fail(table, "[audit] output_dir is not read from a config: a file the tool reads never "
                            "decides where files are written; give the folder on the command line "
                            "(attribute-teacher audit CONFIG --output-dir DIR)", key, index)
        if key not in known:
            raise self.fail(table, f"unknown key '{key}' in [{table}]; known: {', '.join(sorted(known))}", key, index)
        expected = known[key]
        if isinstance(expected, Setting):  # checked as the command line checks its option
            wrong = problem(key, item)
            if wrong is not None:
                shown = "" if key == "api_key_env" else f", got {item!r}"  # a pasted key is never repeated
                raise self.fail(table, f"[{table}] {key} must be {wrong}{shown}", key, index)
        elif not isinstance(item, expected) or (isinstance(item, bool) and expected in (int, (int, float))):
            names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
            raise self.fail(table, f"[{table}] {key} must be {names}, got {item!r}", key, index)

    def case(self, case: dict[str, Any], student: Source) -> Any:
        """The report's case details: the suspect's name and the ``[case]`` table (``E608`` at the key's line)."""
        from .errors import InputError
        from .report.case import case_details

        given = {"suspect": ("student", "name", student.label), "case_id": ("case", "id", case.get("id")),
                 "auditor": ("case", "auditor", case.get("auditor")),
                 "organisation": ("case", "organisation", case.get("organisation"))}
        for field_name, (table, key, value) in given.items():
            try:
                case_details({field_name: value}, names={field_name: f"[{table}] {key}"})
            except InputError as err:
                err.source, err.line = str(self.path), self.lines.of(table, 0, key)
                raise
        return case_details({field_name: value for field_name, (_, _, value) in given.items()})

    def check_report(self, report: Any) -> None:
        if report is True or report not in (False, *REPORT_FORMATS):
            raise self.fail("attribution", f"[attribution] report must be false or one of "
                            f"{', '.join(map(repr, REPORT_FORMATS))} (written as OUTPUT_DIR/report.FORMAT), "
                            f"got {report!r}", "report")

    def source(self, table: str, entry: dict[str, Any], index: int, defaults: dict[str, Any]) -> Source:
        """A [student] or [[teachers]] entry: exactly one of a file that exists or an endpoint with a model."""
        has_file, has_endpoint = "file" in entry, "endpoint" in entry
        if has_file == has_endpoint:
            raise self.fail(table, f"each [{table}] entry needs exactly one of 'file' (outputs already collected) "
                            "or 'endpoint' (a model to query)", "file" if has_file else None, index)
        if has_endpoint and "model" not in entry:
            raise self.fail(table, f"[{table}] endpoint {entry['endpoint']!r} needs 'model' (the served model name)",
                            "endpoint", index)
        if has_endpoint:
            from .distill.manifest import check_url

            try:
                check_url(entry["endpoint"])
            except AttributionError as err:
                raise self.fail(table, str(err), "endpoint", index) from None
        if table == "teachers" and has_endpoint and "name" not in entry:
            entry = {**entry, "name": entry["model"]}
        file = self.rel(entry["file"]) if has_file else None
        if file is not None and not file.is_file():
            raise self.fail(table, f"[{table}] file not found: {file}", "file", index)
        settings = {**defaults, **{k: v for k, v in entry.items() if k in ENDPOINT_KEYS}}
        if has_endpoint:
            try:
                endpoint_settings(settings)  # what holds between keys (sampling needs a temperature above 0)
            except AttributionError as err:
                raise self.fail(table, f"[{table}] {err.message}", "endpoint", index) from None
        return Source(name=entry.get("name"), file=file, endpoint=entry.get("endpoint"), model=entry.get("model"),
                      teacher=entry.get("teacher"), settings=settings, line=self.lines.of(table, index))

    def teachers(self, entries: list[dict[str, Any]], defaults: dict[str, Any]) -> list[Source]:
        """At least two candidate teachers (or one unnamed file of several), with distinct names."""
        teachers = [self.source("teachers", entry, i, defaults) for i, entry in enumerate(entries)]
        if len(teachers) < 2 and not (teachers and teachers[0].file and not teachers[0].name):
            raise self.fail("teachers" if entries else "audit",
                            f"need at least two [[teachers]] (candidate teachers), got {len(entries)} (one unnamed "
                            "file entry may hold several, labelled by each record's 'teacher')")
        seen: set[str] = set()
        for i, teacher in enumerate(teachers):
            if teacher.name and teacher.name in seen:
                raise self.fail("teachers", f"two teachers are named '{teacher.name}'", "name", i)
            if teacher.name:
                seen.add(teacher.name)
        return teachers

    def prompts(self, audit: dict[str, Any], student: Source, teachers: list[Source]) -> Path | None:
        """The prompts file, required when an endpoint is to be queried; every prompts file named must exist."""
        prompts = self.rel(audit["prompts"]) if "prompts" in audit else None
        if prompts is None and any(t.endpoint for t in teachers):
            raise self.fail("audit", "[audit] needs prompts (a JSONL/CSV with 'prompt') to query the teachers' "
                            "endpoints")
        if prompts is None and student.endpoint and "student_prompts" not in audit:
            raise self.fail("audit", "[audit] needs student_prompts or prompts (a JSONL/CSV with 'prompt') to query "
                            "the student's endpoint")
        for key in ("prompts", "student_prompts"):
            if key in audit and not self.rel(audit[key]).is_file():
                raise self.fail("audit", f"[audit] {key}: file not found: {self.rel(audit[key])}", key)
        return prompts

    def check_verdict_test(self, attribution: dict[str, Any]) -> None:
        """``[attribution] verdict_test``: a rule of ``rank --verdict-test`` (``VerdictRule.CHOICES``)."""
        from .verdicts import VerdictRule

        if "verdict_test" in attribution and attribution["verdict_test"] not in VerdictRule.CHOICES:
            raise self.fail("attribution", f"[attribution] verdict_test must be one of "
                            f"{', '.join(VerdictRule.CHOICES)}, got {attribution['verdict_test']!r}", "verdict_test")

    def check_budget(self, audit: dict[str, Any]) -> None:
        """``max_outputs`` and ``batch_size``: whole numbers of at least 1, the batch size only with a budget."""
        from .sequential import check_design, check_options

        for key in ("batch_size", "sequential_design"):
            if key in audit and "max_outputs" not in audit:
                raise self.fail("audit", f"[audit] {key} applies only with max_outputs (the suspect's budget)", key)
        try:
            check_design(audit.get("sequential_design", "e-process"), audit.get("max_outputs"),
                         ("[audit] sequential_design", "[audit] max_outputs"))
        except AttributionError as err:
            raise self.fail("audit", err.message, "sequential_design") from None
        for key in ("max_outputs", "batch_size"):
            try:
                check_options(audit.get("batch_size", 1) if key == "batch_size" else 1, audit.get("max_outputs"),
                              ("[audit] batch_size", "[audit] max_outputs"))
            except AttributionError as err:
                raise self.fail("audit", err.message, key) from None

    def check_features(self, attribution: dict[str, Any]) -> None:
        if "features" in attribution:
            from .features import FEATURE_SETS

            if attribution["features"] not in FEATURE_SETS:
                raise self.fail("attribution", f"[attribution] features: unknown feature set "
                                f"'{attribution['features']}'; choose from {', '.join(sorted(FEATURE_SETS))}",
                                "features")


def endpoint_settings(settings: dict[str, Any]) -> tuple[Any, Any]:
    """(ApiDecoding, EndpointOptions) of a source's endpoint settings: the same checks as the command line's
    (``E210``; ``E419`` for a key given as ``api_key_env``)."""
    from .distill.endpoint import ApiDecoding, EndpointOptions

    s = settings
    decoding = ApiDecoding(**{k: s[k] for k in ("max_tokens", "sample", "temperature", "top_p", "seed") if k in s},
                           stop=tuple(s.get("stop", ())))
    options = EndpointOptions(**{k: s[k] for k in ("completion", "api_key_env", "concurrency", "rpm", "tpm",
                                                   "max_retries", "timeout") if k in s})
    return decoding, options


def _collect(source: Source, prompts: Path | None, output: Path, *, config_path: Path, role: str, limit: int,
             progress: bool, log: Any) -> dict[str, Any]:
    from .distill.endpoint import collect_from_endpoint

    if source.endpoint is None or source.model is None or prompts is None:  # load_config requires all three
        raise _error(config_path, source.line, f"{role} {source.label}: querying an endpoint needs "
                     "'endpoint', 'model' and [audit] prompts")
    decoding, options = endpoint_settings(source.settings)
    return collect_from_endpoint(source.endpoint, source.model, prompts, output, label=source.label, role=role,
                                 true_teacher=source.teacher, decoding=decoding, options=options,
                                 system_prompt=source.settings.get("system"),
                                 prompt_template=source.settings.get("prompt_template"), limit=limit,
                                 progress=progress, log=log)


def run_audit(config: AuditConfig, output_dir: str | os.PathLike, *, progress: bool = False,
              log: Any = None) -> dict[str, Any]:
    """Collect what is missing, fit on the teachers, rank the student; write everything to ``output_dir``.

    The folder comes from the caller (the command line), never from the config: every path written is
    ``output_dir`` joined with a fixed name (or a teacher's label reduced to safe characters), and none
    may be one of the inputs (``E120``, checked before anything is queried).

    Returns the rank document (:func:`attribution.result.audit_student`'s, as ``attribute-teacher rank`` gives
    it: the same ``inputs``, ``run`` and ``skipped``), with ``audit``: where each source came from (file digest;
    for endpoints, the manifest's endpoint, model, decoding and counts).
    """
    from . import __version__
    from .api import fit_reference
    from .io import RecordReader, check_outputs, read_records
    from .result import audit_student

    log = log or (lambda message: None)
    out = Path(output_dir)
    report_format = config.attribution.get("report", "html")
    report_path = out / f"report.{report_format}" if report_format else None
    check_outputs(_audit_outputs(config, out, report_path), _audit_inputs(config))
    out.mkdir(parents=True, exist_ok=True)
    provenance: dict[str, Any] = {}
    references = _read_references(config, out, provenance, progress=progress, log=log)
    student_path: Path | None = None
    if config.max_outputs is None:
        student_path = _gather(config.student, "student", out / "student.jsonl", config, provenance,
                               progress=progress, log=log)
        read_records(student_path)  # bad input: before the fit

    options = config.attribution
    task = options.get("task", config.task)
    params = {k: options[k] for k in ("features", "tagger", "normalize") if k in options}
    log(f"fitting on {len(references)} reference outputs of {len({r.teacher for r in references})} teachers")
    model = fit_reference(references, task=task, random_state=options.get("seed", 0), **params)
    for warning in reference_warnings(references):
        log(f"warning: {warning}")
    ranking: dict[str, Any] = {"task": task, "top_templates": options.get("top_templates", 10),
                               "keep_outputs": report_path is not None}
    if student_path is None:  # a budget: the suspect's outputs in batches, until the sequential verdict concludes
        student_path = _collect_within_budget(model, config, out, provenance, progress=progress, log=log, task=task)
        from .sequential import DEFAULT_BATCH, rank_sequential

        ranking.update(ranker=rank_sequential, batch_size=config.batch_size or DEFAULT_BATCH,
                       max_outputs=config.max_outputs, design=config.sequential_design)
    else:
        ranking["tests"] = options.get("verdict_test", "either")
    # the one path (as `rank`, and `rank --sequential` on the collected file, give it)
    result = audit_student(model, RecordReader(student_path), references=references, **ranking).data
    result["audit"] = {"config": config.path.name, "version": __version__, "sources": provenance}
    _write_results(result, config, out, report_path)
    return result


def _collect_within_budget(model: Any, config: AuditConfig, out: Path, provenance: dict[str, Any], *,
                           progress: bool, log: Any, task: str | None) -> Path:
    """The suspect's outputs within ``max_outputs``, as the sequential verdict (:mod:`attribution.sequential`)
    needs them: an endpoint is queried ``batch_size`` prompts at a time (resumable: the file grows by a batch per
    round) and asked no more once the verdict concludes; a file is used as it is (the ranking reads it in order,
    up to the budget). Returns the file; :func:`run_audit` ranks it as ``rank --sequential`` would."""
    from .io import read_records
    from .sequential import DEFAULT_BATCH, SequentialRank

    assert config.max_outputs is not None
    if config.student.endpoint is None:
        return _gather(config.student, "student", out / "student.jsonl", config, provenance, progress=progress,
                       log=log)
    batch = config.batch_size or DEFAULT_BATCH
    ranker = SequentialRank(model, batch_size=batch, max_outputs=config.max_outputs, task=task,
                            design=config.sequential_design)
    fed: set[str] = set()
    cap = min(config.max_outputs, config.limit) if config.limit else config.max_outputs
    target = 0
    path = out / "student.jsonl"
    while not ranker.done:
        target = min(target + batch, cap)
        path = _gather(config.student, "student", out / "student.jsonl", config, provenance, progress=progress,
                       log=log, limit=target)
        new = [r for r in read_records(path) if r.key not in fed]
        for record in new:
            fed.add(record.key)
            if ranker.add(record):
                break
        if not new or target >= cap:
            break
    ranker.look()
    log(f"student {config.student.label}: sequential verdict after {ranker.read} outputs: "
        f"{'concluded' if ranker.test.concluded else 'not concluded'}")
    return path


def _gather(source: Source, role: str, path: Path, config: AuditConfig, provenance: dict[str, Any], *,
            progress: bool, log: Any, limit: int | None = None) -> Path:
    """The file of ``source``'s outputs (collected into ``path`` when it is an endpoint); records where it came
    from in ``provenance``."""
    from .api import file_digest
    from .distill.manifest import manifest_source, read_manifest

    if source.file is not None:
        provenance[source.label] = {"role": role, "file": file_digest(source.file)}
        return source.file
    prompts = config.student_prompts if role == "student" else config.prompts
    log(f"{role} {source.label}: querying {source.model} at the endpoint")
    summary = _collect(source, prompts, path, config_path=config.path, role=role,
                       limit=config.limit if limit is None else limit,
                       progress=progress, log=log)
    log(f"{role} {source.label}: {summary['n_written']} written, {summary['n_existing']} already there, "
        f"{summary['n_empty']} empty")
    manifest = read_manifest(path) or {}
    provenance[source.label] = {"role": role, "file": {**file_digest(path), **manifest_source(path)},
                                "endpoint": manifest.get("endpoint"),
                                "model": manifest.get("model"), "served_models": manifest.get("served_models"),
                                "api": manifest.get("api"), "decoding": manifest.get("decoding"),
                                "usage": manifest.get("usage"), "requests": manifest.get("requests")}
    return path


def _read_references(config: AuditConfig, out: Path, provenance: dict[str, Any], *, progress: bool,
                     log: Any) -> list[Any]:
    """Every teacher's outputs, labelled by the config's name when it gives one (it wins over the file's)."""
    from dataclasses import replace

    from .io import read_records

    references = []
    for teacher in config.teachers:
        path = _gather(teacher, "teacher", _teacher_path(out, teacher), config, provenance, progress=progress,
                       log=log)
        records = read_records(path, require_teacher=teacher.name is None)
        if teacher.name is not None:
            records = [replace(r, teacher=teacher.name) for r in records]
        references.extend(records)
    return references


def _write_results(result: dict[str, Any], config: AuditConfig, out: Path, report_path: Path | None) -> None:
    """A copy of the config, the report (when asked for) and ``result.json`` (without the kept outputs)."""
    from .outputs import atomic_write, to_json

    copy = _config_copy(config, out)
    if copy is not None:
        with atomic_write(copy, "wb") as handle:
            handle.write(config.path.read_bytes())
    if report_path is not None:
        from .report import write_report

        write_report(result, report_path, case=config.case)
    result.pop("outputs", None)
    with atomic_write(out / "result.json") as handle:
        handle.write(to_json(result) + "\n")


def _config_copy(config: AuditConfig, out: Path) -> Path | None:
    """Where the audit keeps a copy of its config: ``out/audit.toml``, or None when that is the config."""
    copy = out / "audit.toml"
    return None if copy.resolve() == config.path.resolve() else copy


def _teacher_path(out: Path, teacher: Source) -> Path:
    return out / "teachers" / f"{_SAFE_NAME.sub('_', teacher.label)}.jsonl"


def _audit_inputs(config: AuditConfig) -> list[Path | None]:
    sources = [config.student, *config.teachers]
    return [config.path, config.prompts, config.student_prompts, *(s.file for s in sources)]


def _audit_outputs(config: AuditConfig, out: Path, report_path: Path | None) -> list[Path | None]:
    """Every file an audit writes into ``out`` (endpoint outputs are appended to, for resuming)."""
    from .report import report_files

    written: list[Path | None] = [out / "result.json", *(report_files(report_path) if report_path else []),
                                  _config_copy(config, out)]
    if config.student.endpoint:
        written.append(out / "student.jsonl")
    written.extend(_teacher_path(out, t) for t in config.teachers if t.endpoint)
    return written
