"""Scale-out on Dask: tagging on a cluster, and fit and rank of files the workers read in byte ranges.

- :mod:`attribution.parallel.cluster`: the Dask client (local worker processes or an existing cluster) and the
  tagging backend (:func:`dask_tagging`, :func:`tag_texts`); its public names are importable from here.
- :mod:`attribution.parallel.ranges`: a JSON Lines file read in byte ranges, with the same records and errors.
- :mod:`attribution.parallel.fit`: :func:`~attribution.parallel.fit.fit_file`, the workers read, tag, count and
  featurize the references; the same model bytes as one process.
- :mod:`attribution.parallel.rank`: :func:`~attribution.parallel.rank.rank_file` and
  :func:`~attribution.parallel.rank.worker_records`, the workers read, tag and score the student file; the same
  result as one process.

Dask is imported only when a client is made: importing this package costs nothing more than the core install.
"""

from .cluster import (
    DEFAULT_PARTITION_SIZE,
    SINGLE_THREAD_ENV,
    DaskTagging,
    check_scheduler,
    dask_client,
    dask_tagging,
    local_cluster,
    partitions,
    pin_threads,
    tag_partition,
    tag_texts,
    worker_threads,
)

__all__ = ["DEFAULT_PARTITION_SIZE", "SINGLE_THREAD_ENV", "DaskTagging", "check_scheduler", "dask_client",
           "dask_tagging", "local_cluster", "partitions", "pin_threads", "tag_partition", "tag_texts", "worker_threads"]
