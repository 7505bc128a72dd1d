"""Distributed tagging on Dask: local worker processes or an existing cluster.

Tagging is most of the cost of fitting and ranking (spaCy, ~35-40k tokens/s per core), so it is the
part sent to a Dask cluster; everything else (normalization, n-gram counting, vocabulary selection,
the logistic regressions, the bootstrap) stays in the calling process, where it costs a few percent
of tagging and where its results cannot depend on how the work was split.

Use it like :func:`joblib.parallel_backend`: inside the context, every tagger loaded with
:func:`attribution.tagging.get_tagger` (which is what :class:`~attribution.estimator.TeacherAttributor`,
:func:`~attribution.api.fit_reference` and :func:`~attribution.api.rank_student` use) sends the
texts it has not tagged yet to the cluster, in order-preserving partitions, and gets back exactly the
tags it would have computed itself::

    from attribution.parallel import dask_tagging
    with dask_tagging(n_workers=2):                      # a LocalCluster, started and closed here
        model = fit_reference(records)
    with dask_tagging(scheduler="tcp://10.0.0.5:8786"):  # an existing cluster (dask scheduler/worker)
        result = rank_student(model, read_records("student.jsonl"))
    with dask_tagging(client=client): ...                # a distributed.Client of your own

Each worker loads the tagger once (the per-process cache of :func:`get_tagger`) and pins BLAS to one
thread. Dask is imported only here and only when a context is entered: the core install stays light.

Here the calling process still reads every record. For files too large for that, the workers read
byte ranges themselves and return sums (the same results): :func:`attribution.parallel.fit.fit_file`
and :func:`attribution.parallel.rank.rank_file`, on a client from :func:`dask_client`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import AttributionError, Errors, InputError, missing_dependency, short_error
from ..tagging import TaggedDoc, Tagger, get_tagger, using_backend

#: Most texts in one task sent to a worker (smaller batches are split evenly over the workers).
DEFAULT_PARTITION_SIZE = 256
#: Environment of local worker processes: one BLAS/OpenMP thread each (one task at a time per worker).
SINGLE_THREAD_ENV = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}

_pinned = False


def pin_threads() -> None:
    """On a worker: one BLAS thread (and one torch thread when thinc imported torch), once per process."""
    global _pinned
    if _pinned:
        return
    import sys

    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    _pinned = True


def tag_partition(name: str, batch_size: int, texts: list[str]) -> tuple[str, list[TaggedDoc]]:
    """Worker side: tag ``texts`` with the process's cached tagger, in the tagger's own batches.

    Returns the tagger's signature with the tags, so that the client can refuse workers whose
    tagger differs from its own (another spaCy model or version would give other tags).
    """
    pin_threads()
    tagger = get_tagger(name, batch_size=batch_size)
    docs: list[TaggedDoc] = []
    for start in range(0, len(texts), tagger.batch_size):
        docs.extend(tagger.tag_bounded(texts[start:start + tagger.batch_size]))
    return tagger.signature, docs


def partitions(texts: Sequence[str], n_workers: int, partition_size: int) -> list[list[str]]:
    """Consecutive slices of ``texts`` (order kept): as even as possible over ``n_workers``, each at
    most ``partition_size`` texts."""
    if not texts:
        return []
    n_parts = max(max(1, n_workers), math.ceil(len(texts) / partition_size))
    n_parts = min(n_parts, len(texts))
    size = math.ceil(len(texts) / n_parts)
    return [list(texts[start:start + size]) for start in range(0, len(texts), size)]


def worker_threads(client: Any) -> int:
    """Worker threads ``client``'s scheduler knows now (at least 1)."""
    workers = client.scheduler_info().get("workers", {})
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


class DaskTagging:
    """The tagging backend behind :func:`dask_tagging`: tags texts on ``client``'s workers."""

    def __init__(self, client: Any, *, partition_size: int = DEFAULT_PARTITION_SIZE) -> None:
        if not isinstance(partition_size, int) or isinstance(partition_size, bool) or partition_size < 1:
            raise InputError(Errors.E702.format(name="partition_size", expected="a positive integer",
                                                      got=partition_size), code="E702")
        self.client = client
        self.partition_size = partition_size
        self.n_partitions = 0  # partitions sent so far (for tests and benchmarks)

    @property
    def n_workers(self) -> int:
        """Worker threads the scheduler knows now (workers may join or leave an existing cluster)."""
        return worker_threads(self.client)

    @property
    def read_ahead(self) -> int:
        """Batches a streaming caller (``rank``) keeps in flight: two per worker, so that workers tag
        the next batches while the client scores the previous ones."""
        return 2 * self.n_workers

    def tag(self, tagger: Tagger, config: tuple[str, int], texts: list[str]) -> list[TaggedDoc]:
        """Tag ``texts`` on the cluster, results in order; the workers' tagger must be ``tagger``'s."""
        return self.submit(tagger, config, texts)()

    def submit(self, tagger: Tagger, config: tuple[str, int],
               texts: list[str]) -> Callable[[], list[TaggedDoc]]:
        """Send ``texts`` to the workers now; returns a function that waits for their tags, in order."""
        parts = partitions(texts, self.n_workers, self.partition_size)
        name, batch_size = config
        futures = self.client.map(tag_partition, [name] * len(parts), [batch_size] * len(parts), parts,
                                  pure=False)
        return lambda: self._gather(tagger, futures)

    def _gather(self, tagger: Tagger, futures: list[Any]) -> list[TaggedDoc]:
        try:
            results = self.client.gather(futures)
        except AttributionError:
            raise
        except Exception as err:  # a worker failed for good (Dask already retried lost workers)
            raise AttributionError(Errors.E703.format(detail=f"{type(err).__name__}: {err}"), code="E703") from err
        self.n_partitions += len(futures)
        docs: list[TaggedDoc] = []
        for signature, part in results:
            if signature != tagger.signature:
                raise InputError(Errors.E704.format(worker=signature, local=tagger.signature), code="E704")
            docs.extend(doc.interned() for doc in part)  # one string object per token text, as tagged here
        return docs


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise missing_dependency("dask[distributed]", "dask") from None
    return distributed


def local_cluster(n_workers: int, **kwargs: Any) -> Any:
    """A :class:`distributed.LocalCluster` of ``n_workers`` single-threaded worker processes, BLAS
    pinned to one thread, the workers' profiler off, dashboard (with bokeh) on a free port, quiet logs
    (``kwargs`` override these)."""
    import logging

    distributed = _import_distributed()
    options = {"n_workers": n_workers, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0",
               "silence_logs": logging.ERROR, "env": dict(SINGLE_THREAD_ENV)}
    options.update(kwargs)
    import dask

    # Dask's sampling profiler wakes every 10 ms and takes the GIL from the tagging thread: off, tagging
    # 512 texts took 1.0 s of wall time per 0.95 s of CPU; on, 1.6-2.5 s (two busy cores).
    # Dask's MALLOC_TRIM_THRESHOLD_=65536 (memory handed back to the system at every free above 64 KiB) cost
    # tagging in a worker 30% more CPU than in one process (400 texts: 0.96-1.18 s against 0.74-0.85 s without it,
    # 0.79-0.82 s in one process); local workers live for one command or one `with` block: glibc's default kept.
    with dask.config.set({"distributed.worker.profile.enabled": False,
                          "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return distributed.LocalCluster(**options)


@contextlib.contextmanager
def dask_client(client: Any = None, *, n_workers: int | None = None, scheduler: str | None = None,
                timeout: float = 30) -> Iterator[Any]:
    """A :class:`distributed.Client` for exactly one of: an existing ``client`` (left open), a
    :func:`local_cluster` of ``n_workers`` (closed on exit) or a running ``scheduler``'s address
    (the connection is closed on exit, the cluster left running)."""
    given = [name for name, value in (("client", client), ("n_workers", n_workers), ("scheduler", scheduler))
             if value is not None]
    if len(given) != 1:
        raise InputError(Errors.E701.format(given=", ".join(given) or "none"), code="E701")
    if n_workers is not None and (isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1):
        raise InputError(Errors.E702.format(name="n_workers", expected="a positive integer", got=n_workers),
                               code="E702")
    if client is not None:
        yield client
        return
    distributed = _import_distributed()
    if scheduler is not None:
        check_scheduler(scheduler, timeout=timeout)
    with contextlib.ExitStack() as stack:
        address = stack.enter_context(local_cluster(n_workers)) if n_workers is not None else scheduler
        try:
            client = stack.enter_context(distributed.Client(address, timeout=timeout, set_as_default=False))
        except (OSError, TimeoutError) as err:
            raise InputError(Errors.E705.format(address=scheduler, detail=err), code="E705") from None
        yield client


def check_scheduler(address: str, *, timeout: float = 30) -> None:
    """Make sure ``address`` is a Dask scheduler before a :class:`distributed.Client` is made for it.

    Within ``timeout`` seconds in all, whatever the peer does: connect with Dask's own protocol and ask for
    the peer's identity. A malformed address or an unknown scheme is ``E702``, a peer that cannot be
    reached or never answers ``E705``, a peer that answers something else (a web server, say, whose
    answer Dask would read as a frame of exabytes: ``MemoryError``) ``E706``. No Client exists before this
    passes, so none is left half-made (whose ``__del__`` printed a traceback at exit).
    """
    import asyncio
    import threading

    from distributed.comm import connect
    from distributed.comm.addressing import parse_address

    try:
        scheme, _ = parse_address(address) if isinstance(address, str) and address else ("", "")
    except ValueError:
        scheme = ""
    if scheme not in ("tcp", "tls", "ws", "wss", "ucx", "inproc"):
        raise InputError(Errors.E702.format(name="scheduler", expected="a Dask scheduler address such as "
                                            "tcp://10.0.0.5:8786 (schemes tcp, tls, ws, wss, ucx)",
                                            got=address), code="E702")
    if scheme == "inproc":  # this process's own scheduler: nothing to probe over a network
        return

    async def identity() -> Any:
        comm = await connect(address, timeout=timeout)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    outcome: dict[str, Any] = {}

    def probe() -> None:  # in a thread of its own: the caller may be inside an event loop (a notebook)
        try:
            outcome["identity"] = asyncio.run(asyncio.wait_for(identity(), timeout))
        except BaseException as err:  # noqa: BLE001 - sorted out below, in the calling thread
            outcome["error"] = err

    thread = threading.Thread(target=probe, name="attribution-scheduler-check", daemon=True)
    thread.start()
    thread.join(timeout + 5)
    err = outcome.get("error")
    if isinstance(err, ValueError):  # no port, a bad host: not an address
        raise InputError(Errors.E702.format(name="scheduler", expected=f"a Dask scheduler address such as "
                                            f"tcp://10.0.0.5:8786 ({short_error(err)})", got=address),
                         code="E702") from None
    if thread.is_alive() or isinstance(err, (OSError, TimeoutError, asyncio.TimeoutError)):
        detail = str(err or "").strip() or f"no answer within {timeout:g} s"
        raise InputError(Errors.E705.format(address=address, detail=detail), code="E705") from None
    found = outcome.get("identity")
    if err is not None or not isinstance(found, dict) or found.get("type") != "Scheduler":
        detail = f"{type(err).__name__}: {short_error(err)}" if err is not None else (
            f"its identity is {type(found).__name__} {str(found)[:80]!r}")
        raise InputError(Errors.E706.format(address=address, detail=detail), code="E706") from None


@contextlib.contextmanager
def dask_tagging(client: Any = None, *, n_workers: int | None = None, scheduler: str | None = None,
                 partition_size: int = DEFAULT_PARTITION_SIZE, timeout: float = 30) -> Iterator[DaskTagging]:
    """Tag on Dask inside the ``with`` block; give exactly one of the three.

    Parameters
    ----------
    client : distributed.Client, optional
        An existing client (left open).
    n_workers : int, optional
        Start a :func:`local_cluster` of this many single-threaded processes, closed on exit.
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``); the connection is closed on exit,
        the cluster is left running.
    partition_size : int, default=256
        Most texts per task sent to a worker.
    timeout : float, default=30
        Seconds to wait for the scheduler (and for local workers to start).

    Results (tags, models, rankings) are identical to tagging in this process.
    """
    with dask_client(client, n_workers=n_workers, scheduler=scheduler, timeout=timeout) as connected:
        with using_backend(DaskTagging(connected, partition_size=partition_size)) as backend:
            yield backend


def tag_texts(texts: Sequence[str], *, tagger: str = "spacy", batch_size: int = 256, client: Any = None,
              n_workers: int | None = None, scheduler: str | None = None,
              partition_size: int = DEFAULT_PARTITION_SIZE) -> list[TaggedDoc]:
    """Tag ``texts`` on Dask (see :func:`dask_tagging` for the options); the same tags as
    ``get_tagger(tagger, batch_size=batch_size).tag(texts, cache=False)``."""
    with dask_tagging(client, n_workers=n_workers, scheduler=scheduler, partition_size=partition_size):
        return get_tagger(tagger, batch_size=batch_size).tag(list(texts), cache=False)
