"""The seams between the packages (issue 13): dependencies point downward only.

    spendlake/ (commands) → alerting/ → aggregator/ → ingest/ → pricing/

A module may import its own package and the packages below it, never one above. This is checked on
the SOURCE, not on what happens to be imported at run time: every .py under the five packages is
parsed with `ast` and every import statement counts, wherever it is (module level, inside a
function, under `if TYPE_CHECKING:`), and so does `importlib.import_module("...")` /
`__import__("...")` with a literal name. Relative imports are resolved against the module's package.

Also: no import cycle between the modules of spendlake/ (function-level imports included: a cycle
that only works because one side imports late is still a cycle).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conftest import ROOT

# Top to bottom: a layer may import itself and anything after it.
LAYERS = ("spendlake", "alerting", "aggregator", "ingest", "pricing")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted ("alerting.report")
    path: str  # its file, relative to the root ("alerting/report.py")
    line: int
    target: str  # the imported module, dotted, resolved as far as the source tree says


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([name] if name else [])])


def _is_module(root: Path, dotted: str) -> bool:
    p = root.joinpath(*dotted.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def imports_of(root: Path, path: Path) -> Iterator[Import]:
    """Every import in one file, at any nesting level."""
    module = module_name(root, path)
    rel = path.relative_to(root).as_posix()
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, rel, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve_relative(module, is_package, node.level, node.module) if node.level
                    else node.module or "")  # fmt: skip
            for alias in node.names:
                # `from pkg import sub` imports the module pkg.sub when there is one
                sub = f"{base}.{alias.name}"
                yield Import(module, rel, node.lineno, sub if alias.name != "*" and _is_module(root, sub) else base)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield Import(module, rel, node.lineno, node.args[0].value)


def source_files(root: Path, packages: tuple[str, ...] = LAYERS) -> list[Path]:
    return sorted(p for pkg in packages for p in (root / pkg).rglob("*.py"))


def all_imports(root: Path, packages: tuple[str, ...] = LAYERS) -> list[Import]:
    return [imp for path in source_files(root, packages) for imp in imports_of(root, path)]


def layer_violations(root: Path, layers: tuple[str, ...] = LAYERS) -> list[str]:
    """ "file:line imports X (layer A may not import layer B)" for every upward import."""
    rank = {name: i for i, name in enumerate(layers)}
    out = []
    for imp in all_imports(root, layers):
        own, other = imp.module.split(".")[0], imp.target.split(".")[0]
        if other in rank and rank[other] < rank[own]:
            out.append(f"{imp.path}:{imp.line} imports {imp.target} (layer {own} may not import layer {other})")
    return out


def cycles(root: Path, package: str) -> list[str]:
    """Every import cycle among the modules of one package, each as its chain of edges
    ("a.py:3 imports pkg.b → b.py:7 imports pkg.a"); one chain per strongly connected component."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in all_imports(root, (package,)):
        if imp.target.split(".")[0] == package and imp.target != imp.module:
            edges.setdefault(imp.module, {}).setdefault(imp.target, imp)
    for imp in all_imports(root, (package,)):  # self-imports are cycles too
        if imp.target == imp.module:
            edges.setdefault(imp.module, {})[imp.module] = imp

    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            components.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)

    out = []
    for comp in components:
        members = set(comp)
        if len(comp) == 1 and comp[0] not in edges.get(comp[0], {}):
            continue
        # one concrete cycle through the component: walk from its smallest member back to it
        start = min(comp)
        path, seen, node = [start], {start}, start
        while True:
            nxt = sorted(w for w in edges[node] if w in members)
            back = [w for w in nxt if w == start]
            node = back[0] if back else next((w for w in nxt if w not in seen), nxt[0])
            if node == start or node in seen:
                path.append(node)
                break
            path.append(node)
            seen.add(node)
        chain = " → ".join(f"{edges[a][b].path}:{edges[a][b].line} imports {b}" for a, b in zip(path, path[1:]))
        out.append(f"import cycle among {', '.join(sorted(comp))}: {chain}")
    return out


# --- the repository --------------------------------------------------------------------------


def test_every_package_is_parsed() -> None:
    for pkg in LAYERS:
        files = source_files(ROOT, (pkg,))
        assert (ROOT / pkg / "__init__.py") in files, f"{pkg}/ has no __init__.py"
    assert len(all_imports(ROOT)) > 100  # the walk really sees the imports


def test_packages_depend_downward_only() -> None:
    problems = layer_violations(ROOT)
    assert not problems, "imports against the layering " + " → ".join(LAYERS) + ":\n" + "\n".join(problems)


def test_no_import_cycle_between_spendlake_modules() -> None:
    problems = cycles(ROOT, "spendlake")
    assert not problems, "\n".join(problems)


# --- the checker itself can fail -------------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return root


def test_checker_finds_upward_imports_at_any_level(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        **{f"{pkg}/__init__.py": "" for pkg in LAYERS},
        "spendlake/cmd.py": "def evaluate(): ...\n",
        "alerting/ok.py": "import aggregator.x\nfrom ingest import y\nfrom pricing import *\n",
        "alerting/bad.py": "import os\n\n\ndef f():\n    from spendlake.cmd import evaluate\n    return evaluate\n",
        "aggregator/bad.py": "if False:\n    import alerting.ok\n",
        "ingest/bad.py": "import importlib\nm = importlib.import_module('aggregator')\n",
        "pricing/sub/__init__.py": "",
        "pricing/sub/bad.py": "from ...ingest import bad\nfrom .. import sub\n",
    })  # fmt: skip
    assert sorted(layer_violations(root)) == [
        "aggregator/bad.py:2 imports alerting.ok (layer aggregator may not import layer alerting)",
        "alerting/bad.py:5 imports spendlake.cmd (layer alerting may not import layer spendlake)",
        "ingest/bad.py:2 imports aggregator (layer ingest may not import layer aggregator)",
        "pricing/sub/bad.py:1 imports ingest.bad (layer pricing may not import layer ingest)",
    ]


def test_checker_finds_cycles_through_function_level_imports(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "spendlake/__init__.py": "",
        "spendlake/cli.py": "def main():\n    from spendlake.demo import run\n",
        "spendlake/demo.py": "from spendlake import settings\n\n\ndef run():\n    from spendlake.cli import Progress\n",
        "spendlake/settings.py": "",
        "spendlake/progress.py": "",
    })  # fmt: skip
    assert cycles(root, "spendlake") == [
        "import cycle among spendlake.cli, spendlake.demo: "
        "spendlake/cli.py:2 imports spendlake.demo → spendlake/demo.py:5 imports spendlake.cli"
    ]
    (root / "spendlake/demo.py").write_text("def run():\n    from spendlake.progress import Progress\n")
    assert cycles(root, "spendlake") == []
