"""Packaging: the ``all`` extra installs every optional dependency, and the package ships its type marker."""

from __future__ import annotations

import sys

from conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def _pyproject() -> dict:
    with open(REPO / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)


def test_all_extra_is_the_union_of_the_others():
    extras = _pyproject()["project"]["optional-dependencies"]
    others = {req for name, reqs in extras.items() if name != "all" for req in reqs}
    assert sorted(set(extras["all"])) == sorted(others)
    assert len(extras["all"]) == len(set(extras["all"]))  # no duplicates


def test_py_typed_ships():
    assert (REPO / "attribution" / "py.typed").is_file()
    assert "py.typed" in _pyproject()["tool"]["setuptools"]["package-data"]["attribution"]


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = [line for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines() if line.strip()]
    assert ci_lines[-1] in (REPO / "README.md").read_text(encoding="utf-8")


def test_error_rate_artifact_ships():
    """The benchmarks' error-rate artifact, read by every result's ``power``, is package data."""
    import fnmatch

    from attribution.report.error_rates import ARTIFACT, ARTIFACT_NAME

    relative = ARTIFACT.relative_to(REPO / "attribution").as_posix()
    assert ARTIFACT_NAME == f"attribution/{relative}" and ARTIFACT.is_file()
    assert any(fnmatch.fnmatch(relative, p) for p in _pyproject()["tool"]["setuptools"]["package-data"]["attribution"])
