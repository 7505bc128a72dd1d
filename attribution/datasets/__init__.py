"""The paper authors' released outputs, as :class:`~attribution.io.Record` streams.

Wadhwa et al. published the teacher rationales and the GPT-2 students' rationales of their
QA experiments in ``sominw/pattern_distillation`` (folder ``qa_outputs/``), one CSV per
task and model. :class:`PaperQAReader` reads them from one of two places:

- a **local directory** (``data_dir=`` or the ``TEACHER_ATTRIBUTION_DATA`` environment
  variable) in the toolkit's JSON Lines layout, ``{task}_teacher.jsonl`` and
  ``{task}_student.jsonl`` (what :func:`export_paper_qa` writes), or holding the authors'
  CSV files under their original names;
- otherwise the **download cache** (``~/.cache/teacher-attribution/paper_qa``, or
  ``$XDG_CACHE_HOME``), filled from GitHub on first use. Offline, this fails with an
  :class:`~attribution.errors.AttributionError` (``E601``) that says how to point at a
  local copy.

Records carry ``id``, ``task``, ``teacher`` (the toolkit's spelling, e.g. ``mistral-7b``),
``prompt`` (the question with its choices), ``output`` (the rationale) and, for student
files, ``student="gpt2"``. Files are read in a fixed order (task, then teacher), so the
record order never depends on the filesystem.

Examples
--------
>>> from attribution.datasets import load_paper_qa
>>> refs = load_paper_qa("teacher", tasks=["openbookqa"], data_dir="../shared/data/paper_qa")  # doctest: +SKIP
>>> refs[0].teacher, refs[0].task                                                                # doctest: +SKIP
('gemma-2-9b', 'openbookqa')

**AlpacaEval provenance benchmark.** Real instruction-tuned models and the teachers their
fine-tuning data came from, all answering AlpacaEval's 805 instructions:
:func:`load_alpacaeval` reads the layout ``teachers_reference.jsonl``, ``teachers_audit.jsonl``
and ``students_audit.jsonl`` from a directory (``data_dir=`` or ``TEACHER_ATTRIBUTION_ALPACAEVAL``),
:func:`build_alpacaeval` builds that layout from AlpacaEval's published per-model outputs for
any models, :func:`build_alpacaeval_bank` builds it for the 26-candidate bank
(:func:`bank_candidates`, each with its family), and :func:`documented_teachers` lists the
documented teachers of well-known distilled models, with their sources.

>>> from attribution.datasets import alpacaeval_id, bank_candidates, documented_teacher
>>> alpacaeval_id("How did US states get their names?")
'f2bf20386693'
>>> len(bank_candidates()), bank_candidates()[6]
(26, {'teacher': 'gpt4_0314', 'family': 'gpt-4', 'provider': 'openai'})
>>> documented_teacher("alpaca-7b"), documented_teacher("guanaco-33b"), documented_teacher("my-model")
('text_davinci_003', 'none', None)
"""

from __future__ import annotations

from .alpacaeval import (
    ALPACAEVAL_ENV,
    ALPACAEVAL_PROMPTS,
    ALPACAEVAL_SPLITS,
    ALPACAEVAL_STUDENTS,
    ALPACAEVAL_TASK,
    ALPACAEVAL_TEACHERS,
    ALPACAEVAL_URL,
    BANK_CANDIDATES_FILE,
    alpacaeval_cache_dir,
    alpacaeval_id,
    bank_candidates,
    build_alpacaeval,
    build_alpacaeval_bank,
    documented_teacher,
    documented_teachers,
    fetch_alpacaeval_outputs,
    load_alpacaeval,
    read_alpacaeval_outputs,
    split_instructions,
)
from .paper_qa import (
    DATA_ENV,
    PAPER_QA_TASKS,
    PAPER_QA_TEACHERS,
    PAPER_QA_URL,
    SPLITS,
    AuthorsCsvReader,
    PaperQAReader,
    csv_name,
    default_cache_dir,
    download_paper_qa,
    export_paper_qa,
    fetch,
    load_paper_qa,
    resolve_data_dir,
)

__all__ = ["ALPACAEVAL_ENV", "ALPACAEVAL_PROMPTS", "ALPACAEVAL_SPLITS", "ALPACAEVAL_STUDENTS", "ALPACAEVAL_TASK",
           "ALPACAEVAL_TEACHERS", "ALPACAEVAL_URL", "BANK_CANDIDATES_FILE", "DATA_ENV", "PAPER_QA_TASKS",
           "PAPER_QA_TEACHERS", "PAPER_QA_URL", "SPLITS", "AuthorsCsvReader", "PaperQAReader",
           "alpacaeval_cache_dir", "alpacaeval_id", "bank_candidates", "build_alpacaeval", "build_alpacaeval_bank",
           "csv_name", "default_cache_dir", "documented_teacher", "documented_teachers", "download_paper_qa",
           "export_paper_qa", "fetch", "fetch_alpacaeval_outputs", "load_alpacaeval", "load_paper_qa",
           "read_alpacaeval_outputs", "resolve_data_dir", "split_instructions"]
