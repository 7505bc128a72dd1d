"""The persistent tag cache: tagged documents kept on disk between runs, so a text is tagged once.

Tagging is most of the cost of ``fit``, ``rank``, ``evaluate`` and ``tag``; a second run over the same
texts reads their tags back instead (``fit`` of the 26-candidate bank: see ``docs/speed.md``). Every
:class:`~attribution.tagging.Tagger` consults the cache before tagging and stores what it tagged
(:meth:`Tagger.tag <attribution.tagging.Tagger.tag>`), in this process and in Dask workers that read
files themselves (:mod:`attribution.parallel.fit`, :mod:`attribution.parallel.rank`); texts sent to
workers by :func:`attribution.parallel.dask_tagging` are looked up, and stored, by the calling process.

**Key.** A keyed BLAKE2b hash of the text exactly as it was tagged (after normalization: a different
normalization that gives another text gives another key, the same text the same tags), keyed by the
tagger's :attr:`~attribution.tagging.Tagger.cache_identity`: its name and version (the spaCy package
and its version, or NLTK's perceptron and its weights), the spaCy or NLTK library version, and the
rules that cut long texts into pieces (:data:`attribution.tagging.TAG_RULES`). Another tagger, model
version or library version reads none of the entries of this one.

**Value.** Data only, never pickle: a small JSON header (token count, text length, the tag names) and
zlib-compressed integer arrays (tag indices, token starts and lengths), with a BLAKE2b checksum. A value
is checked when read (checksum, header types, lengths, every token inside the text, every tag index
known); one that fails is treated as missing: the text is tagged again and the entry replaced. Nothing
read from the cache decides which code runs.

**Storage.** One SQLite database (``tags-v1.sqlite3``) in write-ahead-log mode with a busy timeout, so
concurrent processes (several ``fit`` runs, Dask workers on one machine) read and write it safely, and
a process killed at any moment (SIGKILL included) leaves it readable: SQLite rolls back the transaction
it did not commit. Each batch of tagged texts is committed as it is tagged.

**Size.** Bounded: when the entries take more than the cap (``ATTRIBUTION_CACHE_MAX_MB``, default
:data:`DEFAULT_MAX_MB` MB), the least recently used ones are deleted down to 80% of it (an entry's use is
recorded at most once an hour) and the file is shrunk. About 1 KB per AlpacaEval output (the 20,924
outputs of the 26-candidate bank: 19 MB). The same database keeps fitted regressions
(:mod:`attribution.fitcache`, about 1.5 MB each on that bank, 27 per fit), under the same cap and switches.

**Where, and how to turn it off.**

=============================  ====================================================================
``ATTRIBUTION_CACHE_DIR``      directory of the database (default ``$XDG_CACHE_HOME/teacher-attribution``,
                               else ``~/.cache/teacher-attribution``)
``ATTRIBUTION_CACHE_MAX_MB``   size cap in MB (default :data:`DEFAULT_MAX_MB`)
``ATTRIBUTION_NO_CACHE=1``     no cache at all (the CLI's ``--no-cache`` sets it for one command)
=============================  ====================================================================

Workers of an existing Dask cluster (``--scheduler``) use the settings of their own environment. A cache
that cannot be used (an unwritable directory, a damaged database) is reported once with a warning
(:class:`TagCacheWarning`, ``E307``) and the run continues without it; the results never depend on the
cache (the same model bytes with or without it).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import warnings
import zlib
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import Errors, InputError

#: File name of the database in the cache directory (the number is the format: a new format, a new file).
DB_NAME = "tags-v1.sqlite3"
#: Format of the tables (``PRAGMA user_version``); a file of another format is not used (warned once).
SCHEMA_VERSION = 1
#: Default size cap (MB).
DEFAULT_MAX_MB = 1024
#: After eviction the entries take at most this share of the cap (so eviction is not run at every write).
LOW_WATER = 0.8
#: An entry's last use is written again only when it is older than this (seconds): reads stay reads.
TOUCH_SECONDS = 3600
#: Seconds a process waits for another's write lock before giving up on one read or write.
BUSY_TIMEOUT_S = 60
#: Keys per SQL statement.
_CHUNK = 500
_MAGIC = b"TAGC"
_DIGEST = 16

ENV_DIR = "ATTRIBUTION_CACHE_DIR"
ENV_MAX_MB = "ATTRIBUTION_CACHE_MAX_MB"
ENV_OFF = "ATTRIBUTION_NO_CACHE"


class TagCacheWarning(UserWarning):
    """The tag cache could not be used; the run goes on without it (results are the same)."""


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/teacher-attribution`` (an absolute ``XDG_CACHE_HOME`` only, as the XDG
    specification says), else ``~/.cache/teacher-attribution``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "teacher-attribution"


def settings() -> tuple[Path, int] | None:
    """``(directory, max bytes)`` from the environment, or ``None`` when the cache is off (E306 for a
    size cap that is not a whole number of megabytes)."""
    if os.environ.get(ENV_OFF, "").strip().lower() not in ("", "0", "false", "no"):
        return None
    raw = os.environ.get(ENV_MAX_MB, "").strip()
    try:
        max_mb = int(raw) if raw else DEFAULT_MAX_MB
    except ValueError:
        max_mb = -1
    if max_mb < 1:
        raise InputError(Errors.E306.format(name=ENV_MAX_MB, expected="a whole number of megabytes, at least 1",
                                            got=raw), code="E306")
    where = os.environ.get(ENV_DIR, "").strip()
    return (Path(where).expanduser() if where else default_dir()), max_mb << 20


# -- values: tagged documents as data ---------------------------------------------------------------
def encode(words: Sequence[str], tags: Sequence[str], offsets: Sequence[int], n_chars: int) -> bytes:
    """A tagged document as bytes: header, compressed arrays, checksum (see the module doc)."""
    names = sorted(set(tags))
    index = {name: i for i, name in enumerate(names)}
    wide = len(names) > 255
    idx = np.fromiter((index[t] for t in tags), dtype="<u2" if wide else np.uint8, count=len(tags))
    starts = np.asarray(offsets, dtype=np.int64)
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    ends = starts + lengths
    gaps = starts - np.concatenate(([0], ends[:-1]))
    payload = idx.tobytes() + gaps.astype("<u4").tobytes() + lengths.astype("<u4").tobytes()
    header = json.dumps({"n": len(words), "chars": n_chars, "tags": names, "wide": wide},
                        ensure_ascii=True, separators=(",", ":")).encode("ascii")
    body = _MAGIC + len(header).to_bytes(4, "little") + header + zlib.compress(payload, 1)
    return body + hashlib.blake2b(body, digest_size=_DIGEST).digest()


def decode(blob: bytes, text: str, share: Callable[[str, str], str]) -> tuple[tuple[str, ...], tuple[str, ...],
                                                                             array] | None:
    """``(words, tags, offsets)`` of ``text`` from a value of :func:`encode`, or ``None`` when the value is
    damaged or does not fit ``text`` (it is then tagged again). Words and tags are ``share(s, s)``
    (:func:`attribution.tagging.interner`: one string object per distinct token text)."""
    try:
        return _decode(bytes(blob), text, share)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, zlib.error, MemoryError):
        return None


def _decode(blob: bytes, text: str, share: Callable[[str, str], str]) -> tuple[tuple[str, ...], tuple[str, ...],
                                                                              array] | None:
    if len(blob) < 8 + _DIGEST or blob[:4] != _MAGIC:
        return None
    body = blob[:-_DIGEST]
    if hashlib.blake2b(body, digest_size=_DIGEST).digest() != blob[-_DIGEST:]:
        return None
    size = int.from_bytes(body[4:8], "little")
    header = json.loads(body[8:8 + size].decode("ascii"))
    n, names, wide = header["n"], header["tags"], header["wide"]
    if (not isinstance(n, int) or isinstance(n, bool) or n < 0 or header["chars"] != len(text)
            or not isinstance(wide, bool) or not isinstance(names, list)
            or not all(isinstance(name, str) for name in names)):
        return None
    width = 2 if wide else 1
    payload = zlib.decompress(body[8 + size:])
    if len(payload) != n * (width + 8):
        return None
    idx = np.frombuffer(payload, dtype="<u2" if wide else np.uint8, count=n)
    gaps = np.frombuffer(payload, dtype="<u4", count=n, offset=n * width).astype(np.int64)
    lengths = np.frombuffer(payload, dtype="<u4", count=n, offset=n * (width + 4)).astype(np.int64)
    if n and (int(idx.max()) >= len(names) or int(lengths.min()) < 1):
        return None
    ends = np.cumsum(gaps + lengths)
    if n and int(ends[-1]) > len(text):
        return None
    starts = ends - lengths
    tag_names = [share(name, name) for name in names]
    pieces = [text[s:e] for s, e in zip(starts.tolist(), ends.tolist())]
    words = tuple(map(share, pieces, pieces))
    tags = tuple(map(tag_names.__getitem__, idx.tolist()))
    offsets = array("I")
    offsets.frombytes(starts.astype(np.uint32).tobytes())
    return words, tags, offsets


# -- the database -------------------------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key BLOB PRIMARY KEY,
    kind TEXT NOT NULL,
    value BLOB NOT NULL,
    size INTEGER NOT NULL,
    used INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_used ON entries(used);
"""


class TagStore:
    """One process's connection to the database at ``path`` (created when missing), capped at ``max_bytes``.

    Thread-safe (one lock around the connection). Every failure of SQLite is turned into a miss (reads)
    or a skipped write, and reported once by :func:`_warn_once`: the cache never stops a run.
    """

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                # before the first table: shrinking needs incremental auto-vacuum, set only on an empty file
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: a crash never damages the file
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:  # a new file (two processes may both create the tables: IF NOT EXISTS)
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"a cache of format {version}; this version reads format {SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        """The stored values of those ``keys`` that are present; records their use."""
        found: dict[bytes, bytes] = {}
        stale: list[bytes] = []
        now = int(time.time())
        with self._lock:
            for start in range(0, len(keys), _CHUNK):
                part = list(keys[start:start + _CHUNK])
                marks = ",".join("?" * len(part))
                for key, value, used in self._conn.execute(
                        f"SELECT key, value, used FROM entries WHERE key IN ({marks})", part):
                    found[bytes(key)] = value
                    if used < now - TOUCH_SECONDS:
                        stale.append(bytes(key))
            if stale:
                with _transaction(self._conn):
                    self._conn.executemany("UPDATE entries SET used = ? WHERE key = ?", [(now, k) for k in stale])
        return found

    def put_many(self, items: Sequence[tuple[bytes, bytes]], kind: str = "tags") -> None:
        """Store ``(key, value)`` pairs of one ``kind`` (``tags``, or ``fit``: :mod:`attribution.fitcache`),
        replacing what was there, then evict if over the cap."""
        if not items:
            return
        now = int(time.time())
        with self._lock:
            with _transaction(self._conn):
                self._conn.executemany("INSERT OR REPLACE INTO entries (key, kind, value, size, used) "
                                       "VALUES (?, ?, ?, ?, ?)", [(k, kind, v, len(v) + len(k), now) for k, v in items])
            if self._used_bytes() > self.max_bytes:
                self._evict()

    def delete(self, keys: Sequence[bytes]) -> None:
        with self._lock, _transaction(self._conn):
            self._conn.executemany("DELETE FROM entries WHERE key = ?", [(k,) for k in keys])

    def keys(self, kind: str) -> list[bytes]:
        """Every key of one kind (``tags`` or ``fit``)."""
        with self._lock:
            return [bytes(k) for (k,) in self._conn.execute("SELECT key FROM entries WHERE kind = ?", (kind,))]

    def _used_bytes(self) -> int:
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * self._conn.execute("PRAGMA page_size").fetchone()[0])

    def _evict(self) -> None:
        """Delete the least recently used entries until the file holds at most LOW_WATER of the cap."""
        excess = self._used_bytes() - int(LOW_WATER * self.max_bytes)
        with _transaction(self._conn):
            doomed, freed = [], 0
            for key, size in self._conn.execute("SELECT key, size FROM entries ORDER BY used, key"):
                if freed >= excess:
                    break
                doomed.append((key,))
                freed += size
            self._conn.executemany("DELETE FROM entries WHERE key = ?", doomed)
        self._conn.execute("PRAGMA incremental_vacuum")

    def stats(self) -> dict[str, Any]:
        """Entries (in all and per kind) and bytes used (for benchmarks and tests)."""
        with self._lock:
            kinds = dict(self._conn.execute("SELECT kind, COUNT(*) FROM entries GROUP BY kind"))
            return {"path": str(self.path), "entries": int(sum(kinds.values())), "kinds": kinds,
                    "bytes": self._used_bytes(), "max_bytes": self.max_bytes}


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error): the write lock is taken up front, so the
    busy timeout applies to it and no transaction has to be retried half-way."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        self.conn.execute("COMMIT" if kind is None else "ROLLBACK")


# -- the process's store -----------------------------------------------------------------------------
_state_lock = threading.Lock()
_open: dict[tuple[int, str, int], TagStore] = {}
_failed: set[str] = set()


def _warn_once(where: str, err: BaseException) -> None:
    if where in _failed:
        return
    _failed.add(where)
    message = Errors.E307.format(path=where, detail=f"{type(err).__name__}: {err}", env=ENV_DIR, off=ENV_OFF)
    warnings.warn(f"{message} [E307]", TagCacheWarning, stacklevel=3)


def current() -> TagStore | None:
    """The store the environment names (opened once per process, path and cap), or ``None`` when the
    cache is off or cannot be opened (warned once)."""
    try:
        config = settings()
    except (RuntimeError, KeyError) as err:  # no home directory to find ~/.cache in
        _warn_once("~/.cache/teacher-attribution", err)
        return None
    if config is None:
        return None
    directory, max_bytes = config
    path = directory / DB_NAME
    key = (os.getpid(), str(path), max_bytes)
    with _state_lock:
        store = _open.get(key)
        if store is None and str(path) not in _failed:
            try:
                store = _open[key] = TagStore(path, max_bytes)
            except (OSError, sqlite3.Error) as err:
                _warn_once(str(path), err)
        return store


def guarded(store: TagStore, action: Callable[[], Any], default: Any) -> Any:
    """``action()``, or ``default`` when SQLite fails (warned once per file): a damaged or locked cache
    costs tagging time, never the run."""
    try:
        return action()
    except sqlite3.Error as err:
        _warn_once(str(store.path), err)
        return default


def close_all() -> None:
    """Close every store this process opened (``attribution.clear_caches()`` calls it)."""
    with _state_lock:
        for store in _open.values():
            try:
                store.close()
            except sqlite3.Error:
                pass
        _open.clear()
        _failed.clear()


__all__ = ["DB_NAME", "DEFAULT_MAX_MB", "ENV_DIR", "ENV_MAX_MB", "ENV_OFF", "TagCacheWarning", "TagStore", "current",
           "decode", "default_dir", "encode", "settings"]
