"""Registries: names in order, lazy built-ins, entry-point plugins, coded errors, CLI help from names."""

from __future__ import annotations

import sys
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


def test_builtins_cost_no_import():
    assert "attribution.chars" not in sys.modules or registry.feature_sets.entry("char-tfidf").obj is not None
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
