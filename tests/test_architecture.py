"""The layout shows the architecture (issue 20): packages by stage, imports that point down the
layers, no import cycles, few flat modules, a docstring on every package. Drawn from the source
with ``ast`` (imports inside functions count too), so a new import that climbs up fails here."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "dukd_cli"

# Lowest first. A module may import its own room and any room of a lower layer.
LAYERS = [
    {"errors", "runtime", "__init__"},
    {"registry", "rundir", "sources"},
    {"images"},
    {"data"},
    {"zoo", "models"},
    {"upscale"},
    {"evaluate"},
    {"export"},
    {"distill"},
    {"report", "study"},
    {"commands"},
    {"cli", "__main__"},
]
MAX_FLAT = 8

# Known climbs, each with the reason it is still there (the list only shrinks).
ALLOWED: dict[tuple[str, str], str] = {}


def room(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "zoo":
        return "zoo"
    return parts[1] if len(parts) > 1 else "__init__"


def layer(r: str) -> int:
    for i, rooms in enumerate(LAYERS):
        if r in rooms:
            return i
    raise AssertionError(f"room {r!r} is in no layer: add it to LAYERS")


def modules() -> dict[str, Path]:
    out = {}
    for base in (PKG, ROOT / "zoo"):
        for p in base.rglob("*.py"):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


def imports(path: Path, known: set[str]) -> set[str]:
    """Our modules that ``path`` imports (a name imported from a package counts as the submodule
    when it is one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for n in names:
            while n and n not in known:
                n = n.rpartition(".")[0]
            if n and n.split(".")[0] in ("dukd_cli", "zoo"):
                found.add(n)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    g = {}
    for m, p in mods.items():
        deps = imports(p, known) - {m}
        # importing a package's submodule runs the package's __init__, which is lazy here: ignore
        # the edge to a parent package that only re-exports lazily.
        g[m] = {d for d in deps if not m.startswith(d + ".")}
    return g


def test_no_import_cycles():
    g = graph()
    index, low, stack, on, cycles = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_imports_point_down():
    bad = []
    for m, deps in graph().items():
        for d in deps:
            if layer(room(d)) > layer(room(m)) and (m, d) not in ALLOWED:
                bad.append(f"{m} -> {d}")
    assert not bad, "imports that climb up a layer:\n" + "\n".join(sorted(bad))


def test_few_flat_modules_and_documented_rooms():
    flat = sorted(p.name for p in PKG.glob("*.py"))
    assert len(flat) <= MAX_FLAT, flat
    for init in PKG.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"{init.relative_to(ROOT)} needs a docstring saying what the room owns"


def test_light_rooms_do_not_import_torch_at_module_level():
    """The rooms that `dukd --help` passes through stay free of torch at import time."""
    for rel in ("runtime", "sources", "registry.py", "errors.py", "rundir.py"):
        for p in [PKG / rel] if rel.endswith(".py") else (PKG / rel).rglob("*.py"):
            if not p.exists():
                continue
            tree = ast.parse(p.read_text())
            for node in tree.body:
                if isinstance(node, ast.Import):
                    assert all(a.name.split(".")[0] != "torch" for a in node.names), p
                if isinstance(node, ast.ImportFrom) and node.module:
                    assert node.module.split(".")[0] != "torch", p
