"""The package's layers (README, "Layout"): a module imports only from its own layer or the ones below, packages
form no import cycle, and ``import yollava`` / the CLI's module load no torch. Every import counts, also those
inside functions (only ``if TYPE_CHECKING:`` blocks are skipped)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: bottom to top; a module belongs to the longest prefix that names it
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("yollava.errors", "yollava.paths", "yollava.safejson", "yollava.images", "yollava.calibration",
                    "yollava.prompts", "yollava.recipes")),
    ("models", ("yollava.runtime", "yollava.vision", "yollava.models")),
    ("concepts", ("yollava.concepts",)),
    ("engine", ("yollava.engine",)),
    ("data", ("yollava.data",)),
    ("train", ("yollava.train",)),
    ("who", ("yollava.who",)),
    ("making concepts", ("yollava.personalize", "yollava.many", "yollava.yochameleon")),
    ("api", ("yollava.api", "yollava.pocket_training")),
    ("applications", ("yollava.eval", "yollava.serve", "yollava.demo")),
    ("command line", ("yollava.cli", "yollava.eval.__main__", "yollava.serve.__main__")),
    ("package", ("yollava",)),
)


def layer_of(module: str) -> int:
    best, length = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = i, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to the README's layout)")
    return best


def _module_name(path: Path, src: Path) -> tuple[str, str]:
    parts = list(path.relative_to(src).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    name = ".".join(parts)
    return name, name if is_package else name.rsplit(".", 1)[0]


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports_of(source: str, module: str, package: str) -> list[tuple[str, int]]:
    """(imported module, line) for every ``yollava`` import in ``source``; ``from X import name`` counts as
    ``X.name`` when that is a module of the package (so ``from yollava import who`` is ``yollava.who``)."""
    out: list[tuple[str, int]] = []
    tree = ast.parse(source)
    skip = {id(n) for node in ast.walk(tree) if _type_checking_only(node) for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "yollava" or target.startswith("yollava."):
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    out.append((sub if _is_module(sub) else target, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name == "yollava" or a.name.startswith("yollava.")]
    return out


def _is_module(name: str) -> bool:
    path = SRC.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def import_graph(src: Path = SRC) -> list[tuple[str, str, int]]:
    edges = []
    for path in sorted((src / "yollava").rglob("*.py")):
        module, package = _module_name(path, src)
        edges += [(module, target, line) for target, line in imports_of(path.read_text(encoding="utf-8"), module, package)]
    return edges


def upward_imports(edges) -> list[str]:
    return [f"{m}:{line} imports {t} ({LAYERS[layer_of(m)][0]} -> {LAYERS[layer_of(t)][0]})"
            for m, t, line in edges if layer_of(t) > layer_of(m)]


def package_cycles(edges) -> list[list[str]]:
    """Groups of second-level packages (``yollava.eval``, ``yollava.serve``...) that import each other."""
    def pkg(m: str) -> str:  # an entry point (``python -m yollava.eval``) is imported by nothing: its own node
        return m if m.endswith(".__main__") else ".".join(m.split(".")[:2])

    graph: dict[str, set[str]] = {}
    for m, t, _ in edges:
        if pkg(m) != pkg(t) and "yollava" not in (pkg(m), pkg(t)):
            graph.setdefault(pkg(m), set()).add(pkg(t))

    def reach(start: str) -> set[str]:
        found, stack = set(), [start]
        while stack:
            for nxt in graph.get(stack.pop(), ()):
                if nxt not in found:
                    found.add(nxt)
                    stack.append(nxt)
        return found

    groups = {tuple(sorted(n for n in reach(a) if a in reach(n))) for a in graph if a in reach(a)}
    return sorted(list(g) for g in groups)


def test_no_module_imports_from_a_layer_above_its_own():
    bad = upward_imports(import_graph())
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_packages_form_no_import_cycle():
    assert package_cycles(import_graph()) == []


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path):
    """The checks above, on a copy of the package with one function-level upward import added: the engine asking
    ``who`` (the cycle this layering removed)."""
    import shutil

    shutil.copytree(SRC / "yollava", tmp_path / "yollava")
    pipeline = tmp_path / "yollava" / "engine" / "pipeline.py"
    pipeline.write_text(pipeline.read_text() + "\n\ndef who(engine, image):\n    from ..who import who\n\n    return who(engine, image)\n")
    edges = import_graph(tmp_path)
    assert any("yollava.engine.pipeline" in b and "yollava.who" in b for b in upward_imports(edges))
    assert any({"yollava.engine", "yollava.who"} <= set(group) for group in package_cycles(edges))
    # ... and a TYPE_CHECKING-only import is not one
    assert not imports_of("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..who import who\n",
                          "yollava.engine.pipeline", "yollava.engine")


@pytest.mark.parametrize("module", ["yollava", "yollava.cli", "yollava.recipes", "yollava.calibration", "yollava.prompts"])
def test_importing_the_package_and_the_cli_loads_no_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout.split()
    assert out == ["False", "False"], (module, out)


def test_the_lazy_package_gives_the_public_names():
    import yollava
    from yollava.api import YoLLaVA
    from yollava.engine import Engine

    assert yollava.YoLLaVA is YoLLaVA and issubclass(YoLLaVA, Engine)
    assert {"YoLLaVA", "TrainConfig", "DataConfig", "Recognition", "get_recipe"} <= set(dir(yollava))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        yollava.nothing  # noqa: B018
