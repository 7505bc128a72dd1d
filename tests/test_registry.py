"""Registries: names in order, lazy built-ins, entry-point plugins, coded errors, CLI help from names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from attribution import registry
from attribution.errors import AttributionError, ModelError
from attribution.registry import Registry


def test_register_declare_and_order():
    reg: Registry = Registry("things")
    reg.register("b", 2, help="two")
    reg.declare("a", "math:pi", help="pi")
    assert reg.names() == ("b", "a") and list(reg) == ["b", "a"] and len(reg) == 2
    assert reg.entry("a").obj is None  # declared: nothing imported until first use
    assert reg.get("a") == pytest.approx(3.14159, abs=1e-5) and reg.help() == "b (two), a (pi)"
    assert "a" in reg and "c" not in reg and 3 not in reg
    with pytest.raises(KeyError, match="choose from b, a"):
        reg.get("c")
    with pytest.raises(ValueError):
        reg.declare("x", "no_colon")


def test_entry_point_plugins_are_listed_then_imported_on_use(monkeypatch):
    ep = SimpleNamespace(name="plug", value="json:dumps")
    monkeypatch.setattr(registry.importlib.metadata, "entry_points",
                        lambda group: [ep] if group == "attribution.things" else [])
    reg: Registry = Registry("things")
    reg.register("own", 1)
    assert reg.names() == ("own", "plug") and "plug" in reg
    import json

    assert reg.get("plug") is json.dumps


def test_unknown_names_keep_their_error_codes():
    with pytest.raises(ModelError) as info:
        registry.feature_sets.get("pos-fancy")
    assert info.value.code == "E205" and "char-tfidf" in str(info.value)
    with pytest.raises(AttributionError) as info:
        registry.taggers.get("stanza")
    assert info.value.code == "E302"
    with pytest.raises(AttributionError) as info:
        registry.baselines.get("bleu")
    assert info.value.code == "E502"


#: Run in a fresh interpreter, so what other tests imported cannot hide an import (or fake one).
LISTING_IMPORTS_NOTHING = """
import sys
from attribution import registry

kinds = (registry.feature_sets, registry.vectorizers, registry.baselines, registry.taggers, registry.input_formats)
for reg in kinds:
    reg.names(), reg.help()
heavy = ("attribution.chars", "attribution.features", "sklearn", "spacy", "torch")
assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]
registry.feature_sets.get("char-tfidf")  # the first use imports the module the check looked for
assert "attribution.chars" in sys.modules and "sklearn" in sys.modules
"""


def test_listing_registered_names_imports_no_component():
    """Names and help texts (CLI choices, --help) import no feature set, vectorizer, baseline or tagger."""
    proc = subprocess.run([sys.executable, "-c", LISTING_IMPORTS_NOTHING], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr


def test_vectorizers_are_registered_under_their_class_names():
    assert all(registry.vectorizers.get(n).__name__ == n for n in registry.vectorizers.names())


def test_cli_help_and_choices_come_from_the_registry():
    from typer.testing import CliRunner

    from attribution.cli import _register_commands, app

    _register_commands()
    runner = CliRunner()
    rank_help = runner.invoke(app, ["rank", "--help"], terminal_width=300).output
    assert "char-tfidf" in rank_help and "character" in rank_help
    assert "char-tfidf" in runner.invoke(app, ["evaluate", "--help"], terminal_width=300).output
    result = runner.invoke(app, ["evaluate", "-r", "x.jsonl", "-s", "y.jsonl", "--features", "nope"])
    assert result.exit_code == 2 and "char-tfidf" in result.output


def test_baseline_options_are_declared_once_and_offered_by_both_commands():
    """Each option a baseline declares in the registry is an option of `baseline` and of `evaluate`, with its help."""
    from typer.testing import CliRunner

    from attribution.cli import _register_commands, app

    _register_commands()
    runner = CliRunner()
    helps = {command: " ".join(runner.invoke(app, [command, "--help"], terminal_width=400).output.split())
             for command in ("baseline", "evaluate")}
    options = registry.baselines.options()
    assert {"model", "alignment", "teacher_models", "n_calibration"} <= set(options)
    for option in options.values():
        flag = "--baseline-model" if option.name == "model" else option.cli_flags[0]
        for command, text in helps.items():
            assert (flag if command == "evaluate" else option.cli_flags[0]) in text, (command, flag)
            assert option.help in text, (command, option.name)
    assert registry.baselines.options(["cosine"]).keys() == {"alignment"}
    assert "<auto|id|best>" in helps["baseline"] and "<auto|cpu|cuda>" in helps["evaluate"]


def test_a_declared_option_reaches_the_baseline(tmp_path):
    from conftest import DATA, run_cli

    runs = {}
    for alignment in ("best", "id"):
        out = tmp_path / f"{alignment}.json"
        result = run_cli("baseline", "cosine", "-r", DATA / "reference.jsonl", "-s", DATA / "student.jsonl",
                         "--alignment", alignment, "-o", out, "-q")
        assert result.returncode == 0, result.stderr
        runs[alignment] = json.loads(out.read_text())
    assert {m["alignment"] for m in runs["best"]["meta"].values()} == {"best"}
    assert {m["alignment"] for m in runs["id"]["meta"].values()} == {"id"}
    bad = run_cli("baseline", "cosine", "-r", DATA / "reference.jsonl", "-s", DATA / "student.jsonl",
                  "--alignment", "nearest")
    assert bad.returncode == 2 and "nearest" in bad.stderr


def test_registry_options_become_typer_options():
    """A component's options, declared once, are built into any command: flags, types, bounds, choices, lists."""
    import typer
    from typer.testing import CliRunner

    from attribution.cli._options import FROM_REGISTRY, registry_options
    from attribution.registry import Option

    tools: Registry = Registry("tools")
    tools.declare("hammer", "math:floor", options=(Option("weight", int, 2, "Weight in kg.", minimum=1),
                                                  Option("grip", str, "rubber", "Grip.", choices=("rubber", "wood"))))
    tools.declare("saw", "math:ceil", options=(Option("teeth", str, (), "Teeth, repeatable.", flags=("--tooth", "-T"),
                                                      multiple=True),))
    received = []
    app = typer.Typer()

    @app.command()
    @registry_options(tools, "options", flags={"grip": ("--handle",)})
    def use(name: str, options: dict = FROM_REGISTRY, loud: bool = False) -> None:
        received.append((name, options, loud))

    runner = CliRunner()
    result = runner.invoke(app, ["hammer", "--weight", "5", "--handle", "wood", "-T", "a", "--tooth", "b", "--loud"])
    assert result.exit_code == 0, result.output
    assert received == [("hammer", {"weight": 5, "grip": "wood", "teeth": ["a", "b"]}, True)]
    assert runner.invoke(app, ["saw", "--weight", "0"]).exit_code == 2  # below the minimum
    assert runner.invoke(app, ["saw", "--handle", "steel"]).exit_code == 2  # not a choice
    assert tools.option_values(["saw"], received[0][1]) == {"teeth": ["a", "b"]}
    help_text = " ".join(runner.invoke(app, ["--help"], terminal_width=300).output.split())
    assert "Weight in kg." in help_text and "--tooth" in help_text and "<rubber|wood>" in help_text


def test_one_option_declared_two_ways_is_refused():
    from attribution.registry import Option

    reg: Registry = Registry("things")
    reg.declare("a", "math:pi", options=(Option("size", int, 1),))
    reg.declare("b", "math:e", options=(Option("size", int, 2),))
    with pytest.raises(ValueError, match="'size' is declared differently by 'a' and 'b'"):
        reg.options()


def test_docs_list_the_feature_sets_as_registered():
    """README, docs/how-it-works.md and the estimator's docstring show each feature set's registered description."""
    from attribution.estimator import TeacherAttributor

    from conftest import REPO

    proc = subprocess.run([sys.executable, "-m", "attribution.registry", "--markdown"], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout.strip().splitlines()
    assert table == registry.feature_set_table().splitlines()
    assert len(table) == 2 + len(registry.feature_sets) and "| `combined` (default) |" in proc.stdout
    for doc in ("README.md", "docs/how-it-works.md"):
        lines = [line.strip() for line in (REPO / doc).read_text(encoding="utf-8").splitlines()]
        start = lines.index(table[0])
        assert lines[start:start + len(table) + 1] == [*table, ""], doc  # the whole table, nothing more
    doc = " ".join((TeacherAttributor.__doc__ or "").split())
    for name in registry.feature_sets.names():
        assert f'``"{name}"``' in doc and registry.feature_sets.entry(name).help in doc
