"""The AlpacaEval provenance benchmark: real instruction-tuned models and their documented teachers.

See the package docstring (:mod:`attribution.datasets`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import AttributionError, InputError, input_error
from ..io import Record, atomic_write, read_records, write_jsonl, write_together
from .paper_qa import check_choice, default_cache_dir, fetch, missing_data_error

#: Where AlpacaEval publishes each model's outputs: ``{ALPACAEVAL_URL}/<model>/model_outputs.json``.
ALPACAEVAL_URL = "https://raw.githubusercontent.com/tatsu-lab/alpaca_eval/main/results"
#: Environment variable naming a local directory in the AlpacaEval benchmark layout.
ALPACAEVAL_ENV = "TEACHER_ATTRIBUTION_ALPACAEVAL"
#: ``task`` of every AlpacaEval record.
ALPACAEVAL_TASK = "alpaca_eval"
#: Files of the layout: candidate teachers on the reference half and on the audit half, and
#: students on the audit half (one ``{split}.jsonl`` each).
ALPACAEVAL_SPLITS = ("teachers_reference", "teachers_audit", "students_audit")
#: The candidate teachers of the shared benchmark (AlpacaEval folder names).
ALPACAEVAL_TEACHERS = ("text_davinci_003", "gpt-3.5-turbo-0301", "gpt4_0314", "claude-2", "cohere")
#: The students of the shared benchmark (AlpacaEval folder names); their labels come from
#: :func:`documented_teacher`.
ALPACAEVAL_STUDENTS = ("alpaca-7b", "vicuna-13b", "wizardlm-13b", "airoboros-33b", "claude2-alpaca-13b",
                       "vicuna-13b-v1.5", "baize-v2-7b", "OpenHermes-2.5-Mistral-7B", "alpaca-farm-ppo-human",
                       "guanaco-33b", "guanaco-7b")
#: Seed of the instruction split (the shared copy was built with it).
ALPACAEVAL_SEED = 0
#: The audit half's prompts, one record each (``id``, ``task``, ``prompt``): what a suspect model answers.
ALPACAEVAL_PROMPTS = "prompts_audit.jsonl"
#: The candidate bank's table of candidates (``teacher``, ``family``, ``provider``, tab-separated).
BANK_CANDIDATES_FILE = "candidates.tsv"


def alpacaeval_id(instruction: str) -> str:
    """Record ``id`` of an AlpacaEval instruction: the first 12 hex digits of its SHA-1."""
    return hashlib.sha1(instruction.encode("utf-8")).hexdigest()[:12]


def split_instructions(instructions: Iterable[str], *, seed: int = ALPACAEVAL_SEED) -> tuple[list[str], list[str]]:
    """Split instructions into a reference half and an audit half (ids, each list sorted).

    The distinct ids are sorted, shuffled with ``random.Random(seed)``, and the first
    ``n // 2`` are the reference half (402 of AlpacaEval's 805), the rest the audit half. The
    split depends only on the set of instructions and the seed, never on file order.
    """
    ids = sorted({alpacaeval_id(text) for text in instructions})
    random.Random(seed).shuffle(ids)
    half = len(ids) // 2
    return sorted(ids[:half]), sorted(ids[half:])


def load_alpacaeval(split: str, data_dir: str | os.PathLike | None = None, *, skip_invalid: bool = False,
                    max_chars: int = 0) -> list[Record]:
    """All records of one file of the AlpacaEval benchmark layout.

    Parameters
    ----------
    split : {"teachers_reference", "teachers_audit", "students_audit"}
        The candidate teachers' outputs on the reference half (fit on these), the same
        teachers on the audit half, or the students' outputs on the audit half (each with
        ``student`` and its documented ``teacher``, ``none`` for human-data models).
    data_dir : str or Path, optional
        Directory holding ``{split}.jsonl``; default ``$TEACHER_ATTRIBUTION_ALPACAEVAL``.
        :func:`build_alpacaeval` (CLI: ``attribute-teacher data alpacaeval -o DIR``) writes it.
    skip_invalid, max_chars
        As for :class:`~attribution.io.RecordReader` (default: no length limit).

    Raises
    ------
    InputError
        ``E603`` for an unknown split; ``E602`` when no directory is given or it lacks the
        file; ``E110`` when the file holds no valid record; a bad record otherwise.
    """
    check_choice("split", split, ALPACAEVAL_SPLITS)
    root = data_dir if data_dir is not None else os.environ.get(ALPACAEVAL_ENV)
    name = f"{split}.jsonl"
    if not root:
        raise missing_data_error(ALPACAEVAL_TASK, split, f"(no directory: pass data_dir= or set {ALPACAEVAL_ENV})",
                       f"{name}; build it with 'attribute-teacher data alpacaeval -o DIR' when online")
    path = Path(root) / name
    if not path.is_file():
        raise missing_data_error(ALPACAEVAL_TASK, split, Path(root), name)
    return read_records(path, require_teacher=split.startswith("teachers"), skip_invalid=skip_invalid,
                        max_chars=max_chars)


def alpacaeval_cache_dir() -> Path:
    """Download cache of AlpacaEval outputs: ``$XDG_CACHE_HOME/teacher-attribution/alpaca_eval``."""
    return default_cache_dir().parent / "alpaca_eval"


def fetch_alpacaeval_outputs(model: str, *, cache_dir: str | os.PathLike | None = None,
                             base_url: str = ALPACAEVAL_URL, download: bool = True) -> Path:
    """Path of ``<model>/model_outputs.json`` in the cache, downloaded first when missing.

    Raises
    ------
    AttributionError
        ``E601`` when the download fails (offline: pass a local copy of AlpacaEval's
        ``results/`` folder as ``cache_dir``); ``E602`` when missing and ``download=False``.
    """
    cache = Path(cache_dir) if cache_dir is not None else alpacaeval_cache_dir()
    path = cache / model / "model_outputs.json"
    if path.is_file():
        return path
    if not download:
        raise missing_data_error(ALPACAEVAL_TASK, model, cache, f"{model}/model_outputs.json")
    url = f"{base_url.rstrip('/')}/{urllib.parse.quote(model)}/model_outputs.json"
    try:
        return fetch(url, path)
    except AttributionError as err:
        cause = err.__cause__
        detail = getattr(cause, "reason", None) or cause or err
        raise AttributionError(f"could not download {url}: {detail}. Offline? Pass cache_dir= (CLI: --cache-dir) "
                               "naming a copy of AlpacaEval's results/ folder (<model>/model_outputs.json)",
                               code="E601") from err


def read_alpacaeval_outputs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of one ``model_outputs.json`` (a JSON list of ``{instruction, output, generator, dataset}``).

    Raises
    ------
    InputError
        When the file is not such a list (naming the file and the first bad row).
    """
    source = str(path)
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"not a JSON list of model outputs: {err}", source=source, code="E102") from None
    if not isinstance(rows, list):
        raise InputError("not a JSON list of model outputs", source=source, code="E102")
    for number, row in enumerate(rows):
        if not (isinstance(row, dict) and isinstance(row.get("instruction"), str)
                and isinstance(row.get("output", ""), (str, type(None)))):
            raise InputError(f"item {number} needs a string 'instruction' and 'output'", source=source, code="E102")
    return rows


def build_alpacaeval(out_dir: str | os.PathLike, *, teachers: Sequence[str] = ALPACAEVAL_TEACHERS,
                     students: Sequence[str] | Mapping[str, str | None] = ALPACAEVAL_STUDENTS,
                     seed: int = ALPACAEVAL_SEED, cache_dir: str | os.PathLike | None = None,
                     base_url: str = ALPACAEVAL_URL, download: bool = True,
                     families: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Build the benchmark layout from AlpacaEval's published per-model outputs.

    Each model's ``model_outputs.json`` is read from the cache (downloaded when missing).
    The instructions (all models' together) are split by :func:`split_instructions`;
    teachers' outputs go to ``teachers_reference.jsonl`` and ``teachers_audit.jsonl``
    (``teacher`` = the model), students' audit-half outputs to ``students_audit.jsonl``
    (``student`` = the model, ``teacher`` = its documented teacher), and the audit half's
    instructions, one record each, to ``prompts_audit.jsonl`` (the prompts a suspect model
    answers). Every record has ``id`` (:func:`alpacaeval_id`), ``task="alpaca_eval"`` and
    ``prompt`` (the instruction). Empty outputs are left out (counted in ``empty``), as is a
    repeated instruction of one model. A ``manifest.json`` records the models, seed, sources
    and counts. Everything is read before anything is written, and the files appear together
    (an error leaves none of them).

    Parameters
    ----------
    out_dir : str or Path
        Target directory (created if needed).
    teachers : sequence of str
        Candidate teachers (AlpacaEval folder names).
    students : sequence of str, or mapping of str to str or None
        Students; a mapping gives each one's teacher label, a sequence takes it from
        :func:`documented_teacher` (no ``teacher`` field when undocumented).
    seed : int, default=0
        Seed of the split (0 reproduces the shared copy).
    cache_dir, base_url, download
        See :func:`fetch_alpacaeval_outputs`.
    families : mapping of str to str, optional
        Each teacher's family, written as ``family`` into its records (every teacher needs one).

    Returns
    -------
    dict
        ``files`` (``{file name: number of records}``), ``instructions``, ``reference``,
        ``audit`` (half sizes), ``empty`` (``{model: outputs left out}``).
    """
    # over 60 lines only by its numpydoc docstring; the body is 28 lines
    labels = dict(students) if isinstance(students, Mapping) else {s: documented_teacher(s) for s in students}
    if not teachers:
        raise input_error("E603", field="teachers", what="teachers", value="(none)", choices="AlpacaEval models")
    unfamiliar = [t for t in teachers if families is not None and t not in families]
    if unfamiliar:
        raise input_error("E603", field="families", what="teacher (it has no family)", value=unfamiliar[0],
                          choices="teachers the families name")
    overlap = sorted(set(teachers) & set(labels))
    if overlap:
        raise input_error("E603", field="students", what="student (it is also a teacher)", value=overlap[0],
                          choices="models not among the teachers")
    rows: dict[str, list[dict[str, Any]]] = {}
    sources: dict[str, str] = {}
    for model in [*teachers, *labels]:
        path = fetch_alpacaeval_outputs(model, cache_dir=cache_dir, base_url=base_url, download=download)
        rows[model] = read_alpacaeval_outputs(path)
        sources[model] = hashlib.sha256(path.read_bytes()).hexdigest()
    texts = {alpacaeval_id(row["instruction"]): row["instruction"] for model in rows.values() for row in model}
    reference, audit = split_instructions(texts.values(), seed=seed)
    halves = {**{i: "reference" for i in reference}, **{i: "audit" for i in audit}}
    files, empty = _split_files(rows, labels, halves, families or {})
    files[ALPACAEVAL_PROMPTS] = [{"id": key, "task": ALPACAEVAL_TASK, "prompt": texts[key]} for key in audit]
    manifest = {"source": base_url, "seed": seed, "task": ALPACAEVAL_TASK, "instructions": len(halves),
                "reference": len(reference), "audit": len(audit), "teachers": list(teachers),
                "students": {s: labels[s] for s in labels}, "model_outputs_sha256": sources, "empty": empty}
    if families is not None:
        manifest["families"] = {t: families[t] for t in teachers}
    counts = _write_layout(Path(out_dir), files, manifest)
    return {"files": counts, "instructions": len(halves), "reference": len(reference), "audit": len(audit),
            "empty": empty}


def _write_layout(out: Path, files: dict[str, list[dict[str, Any]]], manifest: dict[str, Any]) -> dict[str, int]:
    """Write each file's records and ``manifest.json`` (with ``files``: the counts) into ``out``, all together or
    none; returns the counts."""
    with write_together():
        counts = {name: write_jsonl(out / name, records) for name, records in files.items()}
        with atomic_write(out / "manifest.json") as handle:
            json.dump({**manifest, "files": counts}, handle, indent=2, sort_keys=True)
            handle.write("\n")
    return counts


def _split_files(rows: dict[str, list[dict[str, Any]]], labels: Mapping[str, str | None], halves: dict[str, str],
                 families: Mapping[str, str]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """The records of each output file by its name (teachers' of both halves, students' of the audit half, each
    sorted by id) and the number of empty outputs left out per model."""
    files: dict[str, list[dict[str, Any]]] = {f"{split}.jsonl": [] for split in ALPACAEVAL_SPLITS}
    empty: dict[str, int] = {}
    for model, model_rows in rows.items():
        is_teacher = model not in labels
        by_id, n_empty = _model_records(model_rows, _labels(model, labels, families))
        if n_empty:
            empty[model] = n_empty
        for key in sorted(by_id):
            half = halves[key]
            if is_teacher:
                files[f"teachers_{half}.jsonl"].append(by_id[key])
            elif half == "audit":
                files["students_audit.jsonl"].append(by_id[key])
    return files, empty


def _labels(model: str, students: Mapping[str, str | None], families: Mapping[str, str]) -> dict[str, str]:
    """The fields that say whose output a record is: a teacher's name (and its ``family`` when known), or a
    student's name and its ``teacher`` when documented."""
    if model not in students:
        return {"teacher": model, **({"family": families[model]} if model in families else {})}
    teacher = students[model]
    return {"student": model, **({"teacher": teacher} if teacher is not None else {})}


def _model_records(rows: list[dict[str, Any]], labels: dict[str, str]) -> tuple[dict[str, dict[str, Any]], int]:
    """One model's records by id (its first answer to each instruction, with ``labels``) and how many outputs
    were empty."""
    by_id: dict[str, dict[str, Any]] = {}
    n_empty = 0
    for row in rows:
        key = alpacaeval_id(row["instruction"])
        output = row.get("output") or ""
        if not output.strip():
            n_empty += 1
            continue
        if key not in by_id:
            by_id[key] = {"id": key, "task": ALPACAEVAL_TASK, "prompt": row["instruction"], "output": output,
                          **labels}
    return by_id, n_empty


@lru_cache(maxsize=2)
def _package_table(name: str) -> str:
    """The text of a JSON table under ``attribution/data/`` (package data)."""
    return resources.files("attribution").joinpath(f"data/{name}").read_text(encoding="utf-8")


def documented_teachers() -> list[dict[str, Any]]:
    """Documented teachers of well-known distilled models (package data), one dict per model.

    Keys: ``model``, ``alpaca_eval`` (its AlpacaEval folder, or None), ``base``, ``teacher``
    (AlpacaEval spelling of the teacher; ``none`` for human-written data), ``data`` (what
    the fine-tuning data was) and ``sources`` (model card / paper URLs). The teacher is the
    *dominant documented* source; some data sets mix sources.
    """
    return json.loads(_package_table("documented_teachers.json"))["models"]


def documented_teacher(model: str) -> str | None:
    """The documented teacher of ``model`` (its name or AlpacaEval folder), ``"none"`` for a
    model trained on human-written data, None when the table does not know it."""
    for row in documented_teachers():
        if model in (row["model"], row["alpaca_eval"]):
            return row["teacher"]
    return None


def bank_candidates() -> list[dict[str, str]]:
    """The AlpacaEval candidate bank (package data): 26 LLMs with full published AlpacaEval outputs.

    One dict per candidate, in the bank's order: ``teacher`` (its AlpacaEval folder, the label its
    records carry), ``family`` (the model line: ``gpt-4``, ``claude-3``, ...) and ``provider``.
    """
    return json.loads(_package_table("alpacaeval_bank.json"))["candidates"]


def build_alpacaeval_bank(out_dir: str | os.PathLike, *, teachers: Sequence[str] | None = None,
                          students: Sequence[str] | Mapping[str, str | None] = ALPACAEVAL_STUDENTS,
                          seed: int = ALPACAEVAL_SEED, cache_dir: str | os.PathLike | None = None,
                          base_url: str = ALPACAEVAL_URL, download: bool = True) -> dict[str, Any]:
    """Build the candidate bank: :func:`build_alpacaeval` on the :func:`bank_candidates`, with families.

    The layout of :func:`build_alpacaeval` (same split, ids and records), each teacher record
    also carrying its ``family``, and ``candidates.tsv`` (``teacher``, ``family``, ``provider``:
    a ``--families`` table). ``teachers`` keeps some of the bank's candidates (default all 26);
    the other parameters are :func:`build_alpacaeval`'s. All files appear together or none.

    Raises
    ------
    InputError
        ``E603`` for a name that is not a bank candidate; as :func:`build_alpacaeval` otherwise.
    """
    bank = bank_candidates()
    known = [c["teacher"] for c in bank]
    for name in teachers or ():
        if name not in known:
            raise input_error("E603", field="teachers", what="bank candidate", value=name, choices=", ".join(known))
    chosen = [c for c in bank if teachers is None or c["teacher"] in teachers]
    table = "".join(f"{c['teacher']}\t{c['family']}\t{c['provider']}\n" for c in chosen)
    with write_together():
        result = build_alpacaeval(out_dir, teachers=[c["teacher"] for c in chosen], students=students, seed=seed,
                                  cache_dir=cache_dir, base_url=base_url, download=download,
                                  families={c["teacher"]: c["family"] for c in chosen})
        with atomic_write(Path(out_dir) / BANK_CANDIDATES_FILE) as handle:
            handle.write("teacher\tfamily\tprovider\n" + table)
    result["files"][BANK_CANDIDATES_FILE] = len(chosen)
    return result
