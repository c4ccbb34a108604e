"""The layers of the code, checked from the imports themselves.

``shared`` ← ``hardware`` ← ``terminal``; the server builds on ``shared`` (and on the one
owner of the face engine in ``hardware``), never on ``terminal``; ``server.books`` (pure
money) imports no other area of the server; nothing imports ``simulator`` or ``bench``
except themselves and the tests. No module takes part in an import circle (imports inside
functions count: a circle hidden in a function is still a circle), nor does any area of the
server. An import inside a function is allowed only to avoid loading a heavy or optional
dependency, and says so in a comment on its line or the line above.

``make test`` runs this file; each rule also has a test that plants a violation and shows
the rule fails on it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "hardware", "terminal", "server", "simulator", "bench")

# what each top-level package may import of the project (besides itself)
ALLOWED: Mapping[str, frozenset[str]] = {
    "shared": frozenset(),
    "hardware": frozenset({"shared"}),
    "terminal": frozenset({"shared", "hardware"}),
    "server": frozenset({"shared", "hardware"}),
    "simulator": frozenset({"shared", "hardware", "terminal", "server"}),
    "bench": frozenset({"shared", "hardware", "terminal", "server", "simulator"}),
}
# areas of the server, bottom up: an area imports only areas of a lower rank, so infra and
# books (pure money) import no other area; the server package itself imports nothing
SERVER_RANK: Mapping[str, int] = {
    "infra": 0,
    "books": 0,
    "downstream": 1,
    "registry": 2,
    "sales": 3,
    "closing": 4,
    "api": 5,
    "web": 5,
    "app": 6,
    "service": 7,
    "cli": 8,
}
# packages whose __init__ is a docstring and nothing else (importing one loads nothing)
EMPTY_PACKAGES = ("server", "simulator")


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported module, dotted (as far as it resolves to a project module)
    line: int
    inner: bool  # inside a function or class body
    commented: bool  # a comment on the import's line (or just above) says why


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "stubs" in path.parts:
                continue
            modules[_module_name(path, root)] = path
    return modules


def _resolve(name: str, modules: Mapping[str, Path]) -> str | None:
    """The longest project module that ``name`` names or lies in (a function name drops off)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: Mapping[str, Path]) -> list[Import]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, inner: bool) -> None:
        for child in ast.iter_child_nodes(node):
            child_inner = inner or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import | ast.ImportFrom):
                names: list[str] = []
                if isinstance(child, ast.Import):
                    names = [alias.name for alias in child.names]
                else:
                    base = child.module or ""
                    if child.level:
                        anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                        base = ".".join([*anchor, base] if base else anchor)
                    names = [f"{base}.{alias.name}" for alias in child.names] or [base]
                for name in names:
                    target = _resolve(name, modules)
                    if target is None or target == module:
                        continue
                    above = lines[child.lineno - 2].strip() if child.lineno > 1 else ""
                    commented = "#" in lines[child.lineno - 1] or above.startswith("#")
                    found.append(Import(module, target, child.lineno, inner, commented))
            visit(child, child_inner)

    visit(ast.parse(source), False)
    return found


def all_imports(root: Path = ROOT) -> list[Import]:
    modules = discover(root)
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


def _top(module: str) -> str:
    return module.split(".")[0]


def _server_area(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "server" and len(parts) > 1 else None


def layer_violations(imports: Iterable[Import]) -> list[str]:
    out = []
    for imp in imports:
        src, dst = _top(imp.source), _top(imp.target)
        if src != dst and dst not in ALLOWED.get(src, frozenset()):
            out.append(f"{imp.source}:{imp.line} imports {imp.target} ({src} may not import {dst})")
        area, target_area = _server_area(imp.source), _server_area(imp.target)
        if src == dst == "server" and area != target_area:
            if area is None or target_area is None or SERVER_RANK[target_area] >= SERVER_RANK[area]:
                out.append(
                    f"{imp.source}:{imp.line} imports {imp.target} "
                    f"(server.{area} may import only the areas below it)"
                )
    return out


def package_init_imports(root: Path = ROOT) -> list[str]:
    out = []
    for package in EMPTY_PACKAGES:
        for init in sorted((root / package).rglob("__init__.py")):
            relative = init.relative_to(root).as_posix()
            if relative in ("server/api/__init__.py", "server/cli/__init__.py"):
                continue  # api registers its blueprints; cli finds main lazily (its entry point)
            tree = ast.parse(init.read_text(encoding="utf-8"))
            if any(isinstance(n, ast.Import | ast.ImportFrom) for n in ast.walk(tree)):
                out.append(relative)
    return out


def _cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = 0

    def strong(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                strong(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            strong(node)
    return result


def module_circles(imports: Iterable[Import]) -> list[list[str]]:
    edges: dict[str, set[str]] = {}
    for imp in imports:
        # a package's __init__ is not a step of a circle through its own modules
        if imp.target.startswith(imp.source + "."):
            continue
        edges.setdefault(imp.source, set()).add(imp.target)
    return _cycles(edges)


def server_area_circles(imports: Iterable[Import]) -> list[list[str]]:
    edges: dict[str, set[str]] = {}
    for imp in imports:
        a, b = _server_area(imp.source), _server_area(imp.target)
        if a and b and a != b:
            edges.setdefault(a, set()).add(b)
    return _cycles(edges)


def unexplained_inner_imports(imports: Iterable[Import]) -> list[str]:
    return [
        f"{imp.source}:{imp.line} imports {imp.target} inside a function without a comment saying why"
        for imp in imports
        if imp.inner and not imp.commented
    ]


# --- the rules on the real code -------------------------------------------------------------


def test_no_lower_layer_imports_a_higher_one() -> None:
    assert layer_violations(all_imports()) == []


def test_no_module_takes_part_in_an_import_circle() -> None:
    assert module_circles(all_imports()) == []


def test_no_area_of_the_server_takes_part_in_a_circle() -> None:
    assert server_area_circles(all_imports()) == []


def test_imports_inside_functions_say_why() -> None:
    assert unexplained_inner_imports(all_imports()) == []


def test_packages_import_nothing() -> None:
    assert package_init_imports() == []


def test_importing_the_money_rules_loads_no_web_framework() -> None:
    code = "import sys, server.books.spend, server.books.ledger; sys.exit('flask' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0


# --- each rule fails on a planted violation -------------------------------------------------


def _plant(tmp_path: Path, files: Mapping[str, str]) -> list[Import]:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    modules = discover(tmp_path, PACKAGES)
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


def test_a_planted_upward_import_is_caught(tmp_path: Path) -> None:
    imports = _plant(
        tmp_path,
        {
            "shared/__init__.py": "",
            "shared/money.py": "from terminal.store import Store\n",
            "terminal/__init__.py": "",
            "terminal/store.py": "Store = 1\n",
            "server/__init__.py": "",
            "server/books/__init__.py": "",
            "server/books/ledger.py": "from server.registry.units import unit\n",
            "server/infra/__init__.py": "",
            "server/infra/db.py": "from server.books.ledger import post\n",
            "server/registry/__init__.py": "",
            "server/registry/units.py": "from simulator.world import w\nunit = 1\n",
            "simulator/__init__.py": "",
            "simulator/world.py": "w = 1\n",
        },
    )
    found = layer_violations(imports)
    assert any("shared.money" in v and "terminal.store" in v for v in found)
    assert any("server.books.ledger" in v and "only the areas below it" in v for v in found)
    assert any("server.registry.units" in v and "simulator" in v for v in found)
    assert any("server.infra.db" in v and "server.books.ledger" in v for v in found)


def test_a_planted_circle_hidden_in_a_function_is_caught(tmp_path: Path) -> None:
    imports = _plant(
        tmp_path,
        {
            "server/__init__.py": "",
            "server/sales/__init__.py": "",
            "server/sales/apply.py": "from server.downstream.log import record\n",
            "server/downstream/__init__.py": "",
            "server/downstream/log.py": "def record():\n    from server.sales.apply import x  # late\n",
        },
    )
    assert module_circles(imports) == [["server.downstream.log", "server.sales.apply"]]
    assert server_area_circles(imports) == [["downstream", "sales"]]


def test_a_planted_import_in_a_package_init_is_caught(tmp_path: Path) -> None:
    _plant(tmp_path, {"server/__init__.py": "from server.app import create_app\n", "server/app.py": ""})
    assert package_init_imports(tmp_path) == ["server/__init__.py"]


def test_a_planted_unexplained_inner_import_is_caught(tmp_path: Path) -> None:
    imports = _plant(
        tmp_path,
        {
            "terminal/__init__.py": "",
            "terminal/a.py": "def f():\n    from terminal.b import g\n    return g\n",
            "terminal/b.py": "def g():\n    import terminal.a  # heavy: loads the camera\n",
        },
    )
    assert unexplained_inner_imports(imports) == [
        "terminal.a:2 imports terminal.b inside a function without a comment saying why"
    ]
