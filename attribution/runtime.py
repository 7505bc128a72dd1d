"""Process-wide state the library touches, kept scoped: torch's thread count and the caches.

A library call must leave the process as it found it, apart from what it caches on purpose:

=======================================  ===============================  ======================================
cache                                    filled by                        bound
=======================================  ===============================  ======================================
loaded taggers, with the tags of texts   :func:`attribution.get_tagger`   8 taggers; 50,000 texts each
BERTScore encoders, token embeddings     ``baselines.bertscore``          2 encoders; the texts of their last run
perplexity language models, scores       ``baselines.perplexity``         2 models (a score is 2 numbers a text)
=======================================  ===============================  ======================================

Tagged texts are also kept on disk between runs (:mod:`attribution.tagcache`, bounded by
``ATTRIBUTION_CACHE_MAX_MB``, off with ``ATTRIBUTION_NO_CACHE=1``), and tagged words and tags are interned
(at most 2,000,000 distinct strings). :func:`clear_caches` drops them all (the next call loads what it needs
again); the disk cache's file stays, its connection is closed. ``threads=`` options
limit torch for the duration of one call (:func:`torch_threads`); the garbage collector, the umask
and warning filters are left alone. Only the command line changes process state, and only while a
command runs (signal handlers; ``TQDM_DISABLE`` under ``baseline --quiet``); Dask workers, processes
of their own, run on one thread each.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_CLEARERS: list[Callable[[], None]] = []


def register_cache(clear: Callable[[], None]) -> Callable[[], None]:
    """Have :func:`clear_caches` call ``clear`` (a module registers each cache it keeps when imported)."""
    _CLEARERS.append(clear)
    return clear


def clear_caches() -> None:
    """Drop every process-wide cache: loaded taggers and their tags, BERTScore encoders and their
    embeddings, perplexity models and their scores. Fitted models keep what they hold.

    Examples
    --------
    >>> import attribution
    >>> attribution.clear_caches()
    """
    for clear in _CLEARERS:
        clear()


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Limit torch to ``threads`` CPU threads inside the block, then restore the previous count.

    ``None`` or 0 leaves torch as it is (and does not import it)."""
    if not threads:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def with_torch_threads(func: F) -> F:
    """Decorator: run ``func`` under :func:`torch_threads` of its ``threads`` argument."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        threads = signature.bind_partial(*args, **kwargs).arguments.get("threads")
        with torch_threads(threads):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
