"""``attribute-teacher tag``: write Penn Treebank tags of each record as JSON Lines."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._app import (
    NO_CACHE_OPTION,
    NORMALIZE_OPTION,
    QUIET_OPTION,
    SCHEDULER_OPTION,
    SKIP_INVALID_OPTION,
    TAGGER_OPTION,
    TEXT_FIELD_OPTION,
    WORKERS_OPTION,
    app,
    log,
    report_skipped,
    tag_on_cluster,
    use_tag_cache,
)


@app.command("tag")
def tag_cli(
    ctx: typer.Context,
    inputs: Path = typer.Argument(..., dir_okay=False, help="Records to tag (.jsonl or .csv)."),
    output: Path = typer.Option(..., "--output", "-o", dir_okay=False, help="Tagged JSON Lines to write."),
    tagger: str = TAGGER_OPTION,
    normalize: bool = NORMALIZE_OPTION,
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Texts per tagging batch."),
    n_process: int = typer.Option(1, "--n-process", min=1, help="spaCy worker processes."),
    text_field: Optional[str] = TEXT_FIELD_OPTION,
    skip_invalid: bool = SKIP_INVALID_OPTION,
    workers: Optional[int] = WORKERS_OPTION,
    scheduler: Optional[str] = SCHEDULER_OPTION,
    no_cache: bool = NO_CACHE_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Tag each text once, in batches; one output line per record with its words and tags."""
    # over 60 lines only by its signature (typer: one parameter per option) and docstring; the body is 48 lines
    import collections
    import json

    from tqdm import tqdm

    from ..io import RecordReader, atomic_write, check_outputs
    from ..normalize import Normalizer
    from ..tagging import get_tagger, read_ahead

    check_outputs([output], [inputs])
    use_tag_cache(ctx, no_cache)
    tag_on_cluster(ctx, workers, scheduler, quiet=quiet)
    tag = get_tagger(tagger, batch_size=batch_size, n_process=n_process)
    reader = RecordReader(inputs, text_field=text_field, skip_invalid=skip_invalid)
    normalizer = Normalizer() if normalize else None
    count = 0
    with atomic_write(output) as handle, tqdm(desc="tagging", unit="text", disable=quiet, leave=False) as bar:
        batch: list = []
        in_flight: collections.deque = collections.deque()  # on Dask workers: batches sent ahead, in order

        def write(records: list, docs: list) -> None:
            for record, doc in zip(records, docs):
                row = {"id": record.key, "words": list(doc.words), "tags": list(doc.tags)}
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            bar.update(len(records))

        def flush() -> None:
            records = list(batch)
            batch.clear()
            texts = [normalizer(r.output) if normalizer else r.output for r in records]
            if not read_ahead():  # in this process, with the tag cache (a repeated text is tagged once)
                write(records, tag.tag(texts))
                return
            in_flight.append((records, tag.tag_later(texts)))
            while len(in_flight) > read_ahead():
                done, tags = in_flight.popleft()
                write(done, tags())

        for record in reader:
            batch.append(record)
            count += 1
            if len(batch) >= batch_size:
                flush()
        flush()
        while in_flight:
            done, tags = in_flight.popleft()
            write(done, tags())
    report_skipped(reader.skipped, quiet=quiet)
    log(f"tagged {count} texts with {tag.signature} -> {output}", quiet=quiet)
