"""``attribute-teacher probes``: the prompts worth asking a suspect first, from a fitted model alone.

Ranks the prompts every candidate answered (the model's paired answers) by how well the candidates' own
answers to them separate the candidates, or their families (:mod:`attribution.probes`). With ``--reference``
the prompt texts are added, so the file can be given to ``attribute-teacher generate -p`` or ``collect -p``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from ._app import QUIET_OPTION, TAGGER_HELP, app, log


def _prompt_texts(path: Path) -> dict[tuple[str | None, str], str]:
    """(task, id) -> prompt text of a file with ``id`` and ``prompt`` fields (the first record of each;
    also under task None, for a model fitted without tasks or a file without them)."""
    from ..io import RecordReader

    reader = RecordReader(path, text_field="prompt", max_chars=0)
    texts: dict[tuple[str | None, str], str] = {}
    for record in reader:
        if record.id is not None:
            texts.setdefault((record.task, record.id), record.output)
            texts.setdefault((None, record.id), record.output)
    if reader.n_read == 0:
        raise reader.no_records_error()
    return texts


def _rows(table: Any, texts: Optional[dict[tuple[str | None, str], str]], source: Optional[Path]) -> list[dict]:
    from ..errors import input_error

    rows = []
    for row in table.itertuples(index=False):
        out: dict[str, Any] = {"id": row.id, "task": row.task, "score": round(float(row.score), 6),
                               "rank": int(row.rank)}
        if texts is not None:
            text = texts.get((row.task, row.id), texts.get((None, row.id)))
            if text is None:
                where = f" of task '{row.task}'" if row.task is not None else ""
                raise input_error("E241", source=str(source), id=row.id, where=where)
            out["prompt"] = text
        if out["task"] is None:
            del out["task"]
        rows.append(out)
    return rows


@app.command("probes")
def probes_cli(
    model_path: Path = typer.Option(..., "--model", "-m", dir_okay=False,
                                    help="A model saved by 'attribute-teacher fit' on references with paired "
                                    "answers (every candidate answered the same prompts, same 'id')."),
    n: Optional[int] = typer.Option(None, "--top", "-n", min=1,
                                    help="Keep the N most informative prompts of each task (default: all)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", dir_okay=False, allow_dash=True,
                                          help="Write the ranked prompts as JSON Lines here (default: stdout)."),
    reference: Optional[Path] = typer.Option(None, "--reference", "-r", dir_okay=False,
                                             help="A file with 'id' and 'prompt' fields (e.g. the references the "
                                             "model was fitted on): adds each prompt's text."),
    tagger: Optional[str] = typer.Option(None, "--tagger", help=f"{TAGGER_HELP} Only to allow a model saved with "
                                         "a spaCy package other than the default."),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Rank a fitted model's paired prompts by how well the candidates' answers to them separate the
    candidates (or families): the prompts to ask a suspect first. Writes JSON Lines: id, task (for a model
    fitted with tasks), score, rank (1 = best, per task) and, with --reference, prompt."""
    from ..errors import input_error
    from ..io import check_outputs, write_jsonl
    from ..persistence import load_model
    from ..probes import rank_probes
    from ._app import output_file

    output = output_file(output)
    check_outputs([output], [model_path, reference])
    if not model_path.is_file():
        raise input_error("E109", source=str(model_path))
    model = load_model(model_path, tagger=tagger)
    texts = _prompt_texts(reference) if reference is not None else None
    table = rank_probes(model, n)
    from ..multitask import as_multitask

    for task, sub in as_multitask(model).models_.items():
        if sub.paired_ is None:
            log(f"note: task '{task}' has no paired answers; its prompts are not ranked", quiet=quiet)
    rows = _rows(table, texts, reference)
    if output is None:
        from ..sanitize import json_for_terminal

        for row in rows:
            typer.echo(json_for_terminal(json.dumps(row, ensure_ascii=False, sort_keys=True)))
    else:
        write_jsonl(output, rows)
        log(f"wrote {len(rows)} probe prompt(s) to {output}", quiet=quiet)
