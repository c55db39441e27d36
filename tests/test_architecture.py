"""The package's shape: arrows point one way, no import cycles, no private names across files,
modules of one concept (≤ 400 lines), a registry for methods and stages.

Every import is read, including those inside functions (the lazy ones are still dependencies).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "usssl"

# Lowest first: a module may import its own layer or any layer below it, never one above.
LAYERS = [
    {"errors", "lazy", "config"},
    {"engine"},
    {"io", "privacy"},
    {"speech", "models"},
    {"data"},
    {"methods", "downstream"},
    {"stages"},
    {"pipeline"},
    {"cli"},
]
LAYER_OF = {part: i for i, parts in enumerate(LAYERS) for part in parts}
MAX_LINES = 400


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def part_of(module: str) -> str | None:
    """The top-level folder (or root module) of ``usssl.x.y`` -> ``x``; None for ``usssl`` itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported usssl module, names taken from it, line) for every import in the file."""
    tree = ast.parse(path.read_text())
    here = module_name(path)
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                   for n in ast.walk(block)}  # imports for type checkers only: not dependencies
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("usssl")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = here.split(".")[: len(here.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("usssl"):
                out.append((base, [a.name for a in node.names], node.lineno))
    return out


FILES = sorted(PACKAGE.rglob("*.py"))
GRAPH = {module_name(f): imports(f) for f in FILES}


def test_every_module_is_in_a_layer():
    missing = sorted({part_of(m) for m in GRAPH if part_of(m) not in LAYER_OF and part_of(m) is not None})
    assert missing == []


def test_arrows_point_one_way():
    upward = []
    for module, deps in GRAPH.items():
        src = part_of(module)
        if src is None:
            continue
        for target, _, line in deps:
            dst = part_of(target)
            if dst is not None and LAYER_OF[dst] > LAYER_OF[src]:
                upward.append(f"{module}:{line} imports {target}")
    assert upward == []


def test_config_is_a_leaf():
    outside = [f"{m}:{line} imports {t}" for m, deps in GRAPH.items() if part_of(m) == "config"
               for t, _, line in deps if part_of(t) not in ("config", "errors")]
    assert outside == []


def _resolve(target: str, names: list[str]) -> list[str]:
    """Modules a ``from target import names`` depends on (a name may be a submodule)."""
    found = [f"{target}.{n}" for n in names if f"{target}.{n}" in GRAPH]
    return found or [target]


def test_no_import_cycles_between_modules():
    edges: dict[str, set[str]] = defaultdict(set)
    for module, deps in GRAPH.items():
        for target, names, _ in deps:
            for dep in _resolve(target, names):
                # a package's __init__ re-exporting its own modules is not a cycle of concepts
                if dep != module and not (module.startswith(dep + ".") or dep.startswith(module + ".")):
                    edges[module].add(dep)
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(GRAPH):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_no_private_name_leaves_its_file():
    leaks = [f"{m}:{line} takes {n} from {t}" for m, deps in GRAPH.items() for t, names, line in deps
             for n in names if n.startswith("_") and not n.startswith("__")]
    assert leaks == []
    for f in FILES:  # module._private attribute use
        tree = ast.parse(f.read_text())
        aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   and (node.module or "").startswith("usssl") for a in node.names}
        used = [f"{f.name}:{n.lineno} {n.value.id}.{n.attr}" for n in ast.walk(tree)
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases
                and n.attr.startswith("_") and not n.attr.startswith("__")]
        assert used == []


def test_modules_stay_small():
    long = [f"{f.relative_to(PACKAGE)}: {n}" for f in FILES if (n := len(f.read_text().splitlines())) > MAX_LINES]
    assert long == []


@pytest.mark.parametrize("registry, folder", [("usssl.methods:METHODS", "methods"), ("usssl.stages:STAGES", "stages")])
def test_registries_name_real_modules(registry, folder):
    import importlib

    module, name = registry.split(":")
    table = getattr(importlib.import_module(module), name)
    for path in table.values():
        assert (PACKAGE.parent / (path.replace(".", "/") + ".py")).is_file(), path


def test_methods_and_their_settings_are_registered_together():
    from usssl.config import METHOD_SETTINGS
    from usssl.methods import METHODS

    assert sorted(METHODS) == sorted(METHOD_SETTINGS) == ["cvrl", "frame_contrastive", "order_transform", "tcgl", "video_speech"]


@pytest.mark.parametrize("package", ["config", "data", "downstream", "engine", "io", "methods", "models", "privacy",
                                     "speech", "stages"])
def test_every_subpackage_exports_its_public_names(package):
    import importlib

    module = importlib.import_module(f"usssl.{package}")
    names = module.__all__
    assert names and all(not n.startswith("_") for n in names)
    for name in names:
        assert getattr(module, name) is not None, f"usssl.{package}.{name}"
