"""Named components: feature sets, vectorizers, baselines, taggers and input formats.

Each kind of component has one :class:`Registry`, filled by decorators where the component
is defined and, for installed plugins, by ``importlib.metadata`` entry points (the spaCy and
``catalogue`` pattern). A third-party package adds a feature set without touching this one::

    # pyproject.toml of the plugin
    [project.entry-points."attribution.feature_sets"]
    my-set = "my_package.features:my_set"

Names are what users type (``--features``, ``--tagger``, ``baseline NAME``) and what model files
store; a model file can only *pick* a registered name, so it never decides which code runs.
CLI choices and help texts are generated from :meth:`Registry.names` and :meth:`Registry.help`; a component's
options (:class:`Option`, metadata ``options``) become CLI options of the commands that run it
(:meth:`Registry.options`), and ``python -m attribution.registry --markdown`` prints the feature-set table
of the docs.

Entry points are listed (which reads package metadata only) when names are asked for, and a
plugin is imported only when its name is first looked up with :meth:`Registry.get`.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: Entry-point group of each registry, ``attribution.<name>``.
ENTRY_POINT_PREFIX = "attribution."


@dataclass
class Entry(Generic[T]):
    """One registered component: its object (or, until first use, where to import it from),
    a one-line help text and free metadata."""

    name: str
    obj: T | None = None
    target: str = ""  # "package.module:attribute" of a component not imported yet
    help: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def load(self) -> T:
        """The component, importing it on first use."""
        if self.obj is None:
            module, _, attribute = self.target.partition(":")
            obj: Any = importlib.import_module(module)
            for part in attribute.split("."):
                obj = getattr(obj, part)
            self.obj = obj
        return self.obj


@dataclass(frozen=True)
class Option:
    """One option a component takes, declared once with it: the keyword it receives, the type, default and
    help of the CLI option built from it (``--name-with-dashes`` unless ``flags`` says otherwise).

    ``choices`` limits a string to those values; ``multiple`` makes a repeatable option (a list);
    ``minimum`` bounds a number from below.
    """

    name: str
    type: type = str
    default: Any = None
    help: str = ""
    flags: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    multiple: bool = False
    minimum: int | None = None

    @property
    def cli_flags(self) -> tuple[str, ...]:
        """The option's CLI flags: ``flags``, else ``--`` and the name with dashes."""
        return self.flags or ("--" + self.name.replace("_", "-"),)


class Registry(Generic[T]):
    """A name -> component table, filled by :meth:`register`, :meth:`declare` and entry points.

    Parameters
    ----------
    kind : str
        What the components are (``"feature_sets"``); the entry-point group is
        ``attribution.<kind>``.
    unknown : callable, optional
        ``unknown(name, choices)`` returns the exception raised for an unknown name (each
        registry keeps its stable error code); by default a ``KeyError``.

    Examples
    --------
    >>> shapes = Registry("shapes")
    >>> @shapes.register("square", help="four equal sides")
    ... def square(side):
    ...     return side * side
    >>> shapes.get("square")(3), shapes.names(), shapes.help()
    (9, ('square',), 'square (four equal sides)')
    """

    def __init__(self, kind: str, *, unknown: Callable[[str, str], Exception] | None = None) -> None:
        self.kind = kind
        self.group = ENTRY_POINT_PREFIX + kind
        self._unknown = unknown
        self._entries: dict[str, Entry[T]] = {}
        self._plugins: dict[str, Any] | None = None

    # -- filling -------------------------------------------------------------------------
    def register(self, name: str, obj: T | None = None, *, help: str = "", **meta: Any) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, a decorator that registers what it decorates.

        Registering a name again replaces the earlier entry (a plugin may override a built-in on purpose).
        """
        self._check_name(name)

        def add(target: T) -> T:
            self._entries[name] = Entry(name, obj=target, help=help, meta=dict(meta))
            return target

        return add if obj is None else add(obj)

    def declare(self, name: str, target: str, *, help: str = "", **meta: Any) -> None:
        """Register the component at ``"module:attribute"`` without importing it yet (how the
        built-ins are registered: ``--help`` and name checks then import no scikit-learn or torch)."""
        self._check_name(name)
        if ":" not in target:
            raise ValueError(f"{self.kind}: target must be 'module:attribute' (got {target!r})")
        self._entries[name] = Entry(name, target=target, help=help, meta=dict(meta))

    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind}: a name must be a non-empty string (got {name!r})")

    def _entry_points(self) -> dict[str, Any]:
        """Installed plugins' entry points, listed once per process (reading metadata only)."""
        if self._plugins is None:
            self._plugins = {ep.name: ep for ep in importlib.metadata.entry_points(group=self.group)}
        return self._plugins

    # -- lookup --------------------------------------------------------------------------
    def entry(self, name: str) -> Entry[T]:
        """The :class:`Entry` of ``name`` (an installed plugin's is added on first use); unknown
        names raise the registry's error."""
        entry = self._entries.get(name) if isinstance(name, str) else None
        if entry is None and isinstance(name, str):
            ep = self._entry_points().get(name)
            if ep is not None:
                entry = self._entries[name] = Entry(name, target=ep.value)
        if entry is None:
            choices = ", ".join(self.names())
            raise (self._unknown(name, choices) if self._unknown
                   else KeyError(f"unknown {self.kind} {name!r}; choose from {choices}"))
        return entry

    def get(self, name: str) -> T:
        """The component registered as ``name``, imported on first use."""
        return self.entry(name).load()

    def names(self) -> tuple[str, ...]:
        """Registered names in registration order, then installed plugins' names (sorted)."""
        plugins = sorted(n for n in self._entry_points() if n not in self._entries)
        return (*self._entries, *plugins)

    def help(self) -> str:
        """``name (help), name, ...``: the names for a CLI help text (imports nothing)."""
        entries = [self._entries.get(n) for n in self.names()]
        return ", ".join(f"{e.name} ({e.help})" if e and e.help else (e.name if e else n)
                         for n, e in zip(self.names(), entries))

    def options(self, names: Iterable[str] | None = None) -> dict[str, Option]:
        """The options (metadata ``options``) the components ``names`` take (default: every registered one),
        each once, by keyword; two components declaring one keyword differently is an error."""
        found: dict[str, tuple[str, Option]] = {}
        for name in self.names() if names is None else names:
            entry = self._entries.get(name)
            for option in entry.meta.get("options", ()) if entry else ():
                first = found.setdefault(option.name, (name, option))
                if first[1] != option:
                    raise ValueError(f"{self.kind}: option {option.name!r} is declared differently by "
                                     f"{first[0]!r} and {name!r}")
        return {key: option for key, (_, option) in found.items()}

    def option_values(self, names: Iterable[str], values: Mapping[str, Any]) -> dict[str, Any]:
        """Of ``values`` (keyword -> value, e.g. from the CLI), those the components ``names`` take and that
        were given (not None)."""
        wanted = self.options(names)
        return {key: value for key, value in values.items() if key in wanted and value is not None}

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self._entry_points())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={list(self.names())})"


def _unknown(code: str, **extra: Any) -> Callable[[str, str], Exception]:
    """An ``unknown`` callback raising the coded error ``code`` of :mod:`attribution.errors`
    (a :class:`~attribution.errors.ModelError` for E2xx, a ``BaselineError`` for E5xx)."""

    def make(name: str, choices: str) -> Exception:
        from .errors import AttributionError, BaselineError, Errors, ModelError

        message = getattr(Errors, code).format(name=name, choices=choices, **extra)
        klass = {"E2": ModelError, "E5": BaselineError}.get(code[:2], AttributionError)
        return klass(message, code=code)

    return make


#: Feature sets: ``name -> factory()`` returning fresh ``[(block, vectorizer), ...]``
#: (see :func:`attribution.features.make_feature_blocks`).
feature_sets: Registry[Callable[[], list[tuple[str, Any]]]] = Registry("feature_sets", unknown=_unknown("E205"))
#: Vectorizer classes a model file may name, under their class name.
vectorizers: Registry[type] = Registry("vectorizers")
#: Baselines: ``name -> run(references, students, **options) -> BaselineScores``; metadata
#: ``needs_model`` (needs the baselines extra: torch) and ``options`` (the :class:`Option` s it takes, which
#: the ``baseline`` and ``evaluate`` commands offer).
baselines: Registry[Callable[..., Any]] = Registry("baselines", unknown=_unknown("E502"))
#: Taggers: ``name -> load(batch_size=..., n_process=...) -> Tagger``.
taggers: Registry[Callable[..., Any]] = Registry("taggers", unknown=_unknown("E302"))
#: Input formats: ``name -> rows(reader) -> iterator of (line, row or InputError)``; metadata ``suffixes``.
input_formats: Registry[Callable[..., Any]] = Registry("input_formats")

# -- the built-ins: one line each, imported on first use ---------------------------------------
#: The feature set used when none is named (``--features``, ``TeacherAttributor(features=...)``).
DEFAULT_FEATURE_SET = "combined"
# Each feature set's one description: CLI help, the tables in README.md and docs/how-it-works.md
# (``python -m attribution.registry --markdown``; tests/test_registry.py checks) and the estimator's docstring.
for _name, _target, _help in [
    ("pos-paper", "attribution.features:pos_paper",
     "the paper's PoS templates: tag 4-grams, top 50 over all references, binary"),
    ("ngram-paper", "attribution.features:ngram_paper",
     "the paper's baseline: word 1-3 grams, 10,000 most frequent, counts"),
    ("pos-rich", "attribution.features:pos_rich", "tag 1-4 grams, top 2,000, sublinear TF-IDF"),
    ("ngram-tfidf", "attribution.features:ngram_tfidf", "word 1-3 grams, top 20,000, sublinear TF-IDF"),
    ("combined", "attribution.features:combined", "pos-rich + word 1-3 grams (top 5,000, sublinear TF-IDF)"),
    ("char-tfidf", "attribution.chars:char_tfidf",
     "character 1-5 grams within words, top 20,000, sublinear TF-IDF"),
]:
    feature_sets.declare(_name, _target, help=_help)
for _name in ("SequenceNgramVectorizer", "PosTemplateVectorizer", "WordNgramVectorizer"):
    vectorizers.declare(_name, f"attribution.features:{_name}")
vectorizers.declare("CharNgramVectorizer", "attribution.chars:CharNgramVectorizer")
#: The built-in baselines' options, each declared once; a baseline lists the ones it takes.
_OPTIONS = {option.name: option for option in [
    Option("model", str, "minilm", "Encoder for bertscore/embedding: hub id (e.g. roberta-large), local dir, or "
           "'minilm' (offline default).", flags=("--model", "-m")),
    Option("num_layers", int, None, "Encoder layer (default: bert-score's choice; 6 for minilm).", minimum=0),
    Option("device", str, "auto", "auto (CUDA if available), cpu or cuda.", choices=("auto", "cpu", "cuda")),
    Option("batch_size", int, None, "Texts per model batch.", minimum=1),
    Option("alignment", str, "auto", "auto (same id for all teachers, else best match), id, or best.",
           choices=("auto", "id", "best")),
    Option("teacher_models", str, (), "NAME=MODEL for the perplexity baselines, once per teacher: hub id, dir, "
           ".gguf file, or alias smollm2 / gemma3-270m.", flags=("--teacher-model", "-t"), multiple=True),
    Option("prompt_format", str, ("plain",), "Perplexity framing: plain, chat, or a template with {prompt}; "
           "NAME=FORMAT for one teacher (repeatable). Match how each teacher was queried.", multiple=True),
    Option("n_calibration", int, 100, "perplexity-normalized: own references per teacher for the z-score.",
           minimum=2),
]}
_ENCODER = ("model", "num_layers", "device", "batch_size")
_PERPLEXITY = ("teacher_models", "prompt_format", "device", "batch_size")
for _name, _help, _needs_model, _takes in [
    ("bertscore", "BERTScore F1 against the teachers' answers", True, (*_ENCODER, "alignment")),
    ("embedding", "classifier on mean encoder embeddings", True, _ENCODER),
    ("perplexity", "perplexity under each teacher's model", True, _PERPLEXITY),
    ("perplexity-normalized", "perplexity z-scored per teacher", True, (*_PERPLEXITY, "n_calibration")),
    ("cosine", "bag-of-words cosine", False, ("alignment",)),
    ("rouge", "ROUGE-L F", False, ("alignment",)),
    ("rouge1", "ROUGE-1 F", False, ("alignment",)),
    ("rouge2", "ROUGE-2 F", False, ("alignment",)),
]:
    baselines.declare(_name, f"attribution.baselines:run_{_name.replace('-', '_')}", help=_help,
                      needs_model=_needs_model, options=tuple(_OPTIONS[o] for o in _takes))
taggers.declare("spacy", "attribution.tagging:SpacyTagger", help="default: en_core_web_sm")
taggers.declare("nltk", "attribution.tagging:NltkTagger", help="NLTK's averaged perceptron")
input_formats.declare("jsonl", "attribution.io:RecordReader.jsonl_rows", help="JSON Lines",
                      suffixes=(".jsonl", ".json", ".ndjson"))
input_formats.declare("csv", "attribution.io:RecordReader.csv_rows", help="CSV with a header row",
                      suffixes=(".csv",))
del _name, _target, _help, _needs_model, _takes

def feature_set_table() -> str:
    """The feature sets as the Markdown table of the docs: name (the default marked) and description."""
    rows = [f"| `{name}`{' (default)' if name == DEFAULT_FEATURE_SET else ''} | {feature_sets.entry(name).help} |"
            for name in feature_sets.names()]
    return "\n".join(["| name | what |", "|---|---|", *rows])


def feature_set_list(indent: str = "") -> str:
    """The feature sets as a reStructuredText list (for docstrings), each line starting with ``indent``."""
    return "\n".join(f"{indent}- ``\"{name}\"``{' (default)' if name == DEFAULT_FEATURE_SET else ''}: "
                     f"{feature_sets.entry(name).help}" for name in feature_sets.names())


def main(argv: list[str] | None = None) -> int:
    """``python -m attribution.registry --markdown``: print the feature-set table the docs contain."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m attribution.registry", description=main.__doc__)
    parser.add_argument("--markdown", action="store_true", help="print the feature-set table (Markdown)")
    args = parser.parse_args(argv)
    print(feature_set_table() if args.markdown else "\n".join(f"{kind.kind}: {kind.help()}" for kind in
                                                               (feature_sets, baselines, taggers, input_formats)))
    return 0


__all__ = ["DEFAULT_FEATURE_SET", "Entry", "Option", "Registry", "baselines", "feature_set_list", "feature_set_table",
           "feature_sets", "input_formats", "taggers", "vectorizers"]

if __name__ == "__main__":
    raise SystemExit(main())
