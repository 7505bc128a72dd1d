"""Package layout: modules import downwards (no import cycles), and no module reaches into another's private names.

Read from the source with ``ast`` (imports inside functions count; imports under ``if TYPE_CHECKING`` do not).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "attribution"


def _modules() -> dict[str, tuple[ast.Module, list[str]]]:
    """Module name -> (syntax tree, the package its relative imports start from)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        package = parts[:-1]
        if parts[-1] == "__init__":
            parts = package
        out[".".join(parts)] = (ast.parse(path.read_text(encoding="utf-8")), package)
    return out


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    return {id(node) for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for node in ast.walk(block)}


def _imports(modules: dict[str, tuple[ast.Module, list[str]]]) -> dict[str, dict[str, set[str]]]:
    """Module -> {imported module -> names imported from it} (module-level and in functions)."""
    graph: dict[str, dict[str, set[str]]] = {}
    for name, (tree, package) in modules.items():
        skip = _type_checking_nodes(tree)
        edges: dict[str, set[str]] = {}
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                target = ".".join([*base, node.module] if node.module else base)
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in modules:
                        edges.setdefault(sub, set())
                    else:
                        edges.setdefault(target, set()).add(alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    edges.setdefault(alias.name, set())
        graph[name] = {k: v for k, v in edges.items() if k in modules and k != name}
    return graph


def _cycles(graph: dict[str, dict[str, set[str]]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    graph = _imports(_modules())
    assert graph["attribution.persistence"] and graph["attribution.multitask"]  # the walk saw the imports
    assert "attribution.baselines" in graph["attribution.evaluation"]  # evaluation scores the baselines ...
    assert not [m for m in graph["attribution.baselines"] if m.startswith("attribution.evaluation")]  # not back
    cycles = [sorted(cycle) for cycle in _cycles(graph)]
    assert not cycles, cycles


def test_low_level_modules_import_no_workflow_or_component():
    graph = _imports(_modules())
    assert "attribution.api" not in graph["attribution.distill.manifest"]  # file_digest lives in io
    assert not [m for m in graph["attribution.registry"] if m.startswith("attribution.baselines")]
    assert "attribution.persistence" not in graph["attribution.multitask"]  # saving writes model files
    assert "attribution.outputs" in graph["attribution.audit"]  # to_json lives in outputs, for the CLI and audit
    upward = {module: sorted(m for m in imported if m.startswith("attribution.cli"))
              for module, imported in graph.items()
              if not module.startswith("attribution.cli") and module != "attribution.__main__"}
    assert not {module: cli for module, cli in upward.items() if cli}, "only the CLI and __main__ import the CLI"


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b": set()}, "b": {"c": set()}, "c": {"a": set()}, "d": {"a": set()}}
    assert _cycles(graph) == {frozenset("abc")}


def _private_uses(modules: dict[str, tuple[ast.Module, list[str]]]) -> dict[str, set[str]]:
    """Private name -> the modules that import it from another module or read it as ``other._name``."""
    uses: dict[str, set[str]] = {}
    for module, names in _imports(modules).items():
        for name in set().union(*names.values()) if names else ():
            if name.startswith("_") and not name.startswith("__"):
                uses.setdefault(name, set()).add(module)
    for module, (tree, _) in modules.items():
        own = {node.name for node in ast.walk(tree)
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        own |= {node.attr for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)}
        own |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and node.attr not in own and ast.unparse(node.value) not in ("self", "cls", "os", "super()")):
                uses.setdefault(node.attr, set()).add(module)
    return uses


def test_private_use_finder_sees_imports_and_attribute_reads():
    modules = {"p.a": (ast.parse("def _own(): pass\n_own()\n"), ["p"]),
               "p.b": (ast.parse("from .a import _own, public\nimport p.a\np.a._other(self._mine)\n"), ["p"])}
    assert _private_uses(modules) == {"_own": {"p.b"}, "_other": {"p.b"}}


def test_no_module_uses_another_modules_private_names():
    uses = _private_uses(_modules())
    assert not uses, {name: sorted(where) for name, where in uses.items()}


def _reexports(tree: ast.Module) -> set[str]:
    """Names in a module's ``__all__`` that it imports rather than defines."""
    exported = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets))
    imported = {alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    return set(exported) & imported


def test_api_reexports_are_used_by_its_readers():
    """A name ``attribution.api`` re-exports earns its place: the README, the docs, a notebook, an example, a test or
    a benchmark imports it from there (else import it from the module that defines it)."""
    import re

    repo = PACKAGE.parent
    readers = [repo / "README.md", *[p for folder in ("docs", "notebooks", "examples", "tests", "benchmarks")
                                     for p in (repo / folder).rglob("*") if p.suffix in (".md", ".ipynb", ".py")]]
    text = "\n".join(p.read_text(encoding="utf-8") for p in readers if p.name != Path(__file__).name)
    imported = {name for line in re.findall(r"attribution\.api import ([^\n]*)", text)
                for name in re.findall(r"\w+", line.split("#")[0])}
    imported |= set(re.findall(r"attribution\.api\.(\w+)", text))
    reexports = _reexports(_modules()["attribution.api"][0])
    assert {"evaluate", "file_digest"} <= reexports  # the finder sees them
    assert reexports <= imported, sorted(reexports - imported)
