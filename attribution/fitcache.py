"""Fitted logistic regressions kept in the cache (:mod:`attribution.tagcache`): a second fit on the same features
fits no regression again.

On a large candidate bank the regressions cost more than tagging (the 26-candidate bank: one regression on all
references plus one per left-out teacher for the unlisted-teacher test, about 70% of a first fit). A second
fit on the same references builds the same feature matrix, so :func:`fit_classifier` looks the regression up
first, keyed by a BLAKE2b hash of everything its result depends on: the matrix (its values, indices and
row pointers, shape and dtypes), the labels in order, the classifier's class and parameters, and the versions
of scikit-learn, SciPy and NumPy and the BLAS library and CPU architecture they run on. The solver is
deterministic, so the result read back is the one a fit would give: the same model bytes (tested).

Values are data only: a JSON header (shapes, memory order, iterations) and the coefficients and intercepts as raw
little-endian float64, with a checksum; checked on read (shapes against the matrix and the labels, every
number finite) and refitted when anything is off. They share the tag cache's database, size cap, eviction and
switches (``ATTRIBUTION_NO_CACHE``, ``--no-cache``). Adding references (``fit --add``) changes the matrix of
every regression, so those are fitted again.
"""

from __future__ import annotations

import hashlib
import json
import platform
from typing import Any

import numpy as np
import scipy.sparse as sp

from . import tagcache

_MAGIC = b"FITC"
_DIGEST = 16


def _environment() -> str:
    """The libraries and machine a fit's floating-point result depends on."""
    import scipy
    import sklearn
    from threadpoolctl import threadpool_info

    blas = sorted((i.get("internal_api", ""), i.get("version", ""), i.get("architecture", ""))
                  for i in threadpool_info() if i.get("user_api") == "blas")
    return json.dumps({"sklearn": sklearn.__version__, "scipy": scipy.__version__, "numpy": np.__version__,
                       "blas": blas, "machine": platform.machine()}, sort_keys=True, default=str)


def fit_key(classifier: Any, X: sp.csr_matrix, y: np.ndarray) -> bytes:
    """The cache key of ``classifier.fit(X, y)`` (see the module doc)."""
    params = json.dumps(classifier.get_params(), sort_keys=True, default=repr)
    digest = hashlib.blake2b(digest_size=20, key=b"attribution.fitcache/1")
    digest.update(f"{type(classifier).__module__}.{type(classifier).__qualname__}|{params}|{_environment()}".encode())
    digest.update(repr((X.shape, X.data.dtype.str, X.indices.dtype.str, X.indptr.dtype.str)).encode())
    for part in (X.data, X.indices, X.indptr):
        digest.update(np.ascontiguousarray(part).data.cast("B"))  # no copy of the matrix
    digest.update(json.dumps(np.asarray(y).tolist(), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return digest.digest()


def encode(classifier: Any) -> bytes:
    """A fitted classifier's coefficients, intercepts and iterations as bytes."""
    fortran = bool(classifier.coef_.flags.f_contiguous and not classifier.coef_.flags.c_contiguous)
    coef = np.ascontiguousarray(classifier.coef_, dtype="<f8")
    intercept = np.ascontiguousarray(classifier.intercept_, dtype="<f8")
    header = json.dumps({"coef": list(coef.shape), "intercept": list(intercept.shape), "fortran": fortran,
                         "n_iter": np.asarray(classifier.n_iter_).tolist()}).encode("ascii")
    body = _MAGIC + len(header).to_bytes(4, "little") + header + coef.tobytes() + intercept.tobytes()
    return body + hashlib.blake2b(body, digest_size=_DIGEST).digest()


def restore(classifier: Any, blob: bytes, X: sp.csr_matrix, y: np.ndarray) -> bool:
    """Set ``classifier``'s fitted attributes from ``blob`` as ``fit(X, y)`` sets them; False (nothing set)
    when the value is damaged or does not fit ``X`` and ``y``."""
    try:
        blob = bytes(blob)
        body = blob[:-_DIGEST]
        if blob[:4] != _MAGIC or hashlib.blake2b(body, digest_size=_DIGEST).digest() != blob[-_DIGEST:]:
            return False
        size = int.from_bytes(body[4:8], "little")
        header = json.loads(body[8:8 + size].decode("ascii"))
        classes = np.unique(y)
        rows = len(classes) if len(classes) > 2 else 1
        if header["coef"] != [rows, X.shape[1]] or header["intercept"] != [rows]:
            return False
        data = body[8 + size:]
        if len(data) != 8 * rows * (X.shape[1] + 1):
            return False
        values = np.frombuffer(data, dtype="<f8").astype(np.float64)
        n_iter = np.asarray(header["n_iter"], dtype=np.int32)
        if not np.isfinite(values).all() or n_iter.shape != (1,) or not isinstance(header["fortran"], bool):
            return False
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        return False
    classifier.n_features_in_ = X.shape[1]
    classifier.classes_ = classes
    classifier.n_iter_ = n_iter
    coef = values[:rows * X.shape[1]].reshape(rows, X.shape[1])
    classifier.coef_ = np.asfortranarray(coef) if header["fortran"] else coef  # as fit left it: the saved bytes
    classifier.intercept_ = values[rows * X.shape[1]:]
    return True


def fit_classifier(classifier: Any, X: Any, y: Any) -> Any:
    """``classifier.fit(X, y)``, or its result read back from the cache when this fit was made before
    (then stored: see the module doc). Returns the classifier."""
    store = tagcache.current()
    if store is None or not sp.issparse(X):
        return classifier.fit(X, y)
    X, y = sp.csr_matrix(X), np.asarray(y)
    key = fit_key(classifier, X, y)
    found = tagcache.guarded(store, lambda: store.get_many([key]), {})
    if key in found and restore(classifier, found[key], X, y):
        return classifier
    classifier.fit(X, y)
    value = encode(classifier)
    tagcache.guarded(store, lambda: store.put_many([(key, value)], kind="fit"), None)
    return classifier


__all__ = ["encode", "fit_classifier", "fit_key", "restore"]
