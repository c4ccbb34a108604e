"""The server's areas stay layered: no import circles between modules nor between areas,
imports at the top of modules, and the money rules loadable without Flask."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "server"
# Each area may import only areas of a lower rank; books and infra import no other area.
RANK = {"infra": 0, "books": 0, "downstream": 1, "registry": 2, "sales": 3, "closing": 4,
        "api": 5, "app": 6, "service": 7, "cli": 8}
# (file, imported module) pairs allowed inside a function, and why
LAZY = {
    ("server/cli/__init__.py", "server.cli.root"): "the package imports nothing; server.cli:main is looked up lazily",
    ("server/cli/faces.py", "terminal.face_match"): "left for the move of face_match to shared/",
    ("server/cli/faces.py", "shared.face_match"): "left for the move of face_match to shared/",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SERVER.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(modules: dict[str, Path]) -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """Module → server modules it imports; and every import inside a function."""
    edges: dict[str, set[str]] = {m: set() for m in modules}
    lazy: list[tuple[str, str, int]] = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import):
                        lazy += [(str(path.relative_to(ROOT)), a.name, inner.lineno) for a in inner.names]
                    elif isinstance(inner, ast.ImportFrom):
                        lazy.append((str(path.relative_to(ROOT)), inner.module or "", inner.lineno))
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and t.startswith("server"):
                    edges[name].add(t)
    return edges, lazy


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "server"


def test_no_import_circles_between_server_modules() -> None:
    edges, _ = _imports(_modules())
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_each_area_imports_only_areas_below_it() -> None:
    edges, _ = _imports(_modules())
    wrong = sorted(
        f"{m} imports {n}"
        for m, ns in edges.items()
        for n in ns
        if _area(m) != _area(n) and _area(m) != "server"
        and not (RANK[_area(n)] < RANK[_area(m)] and _area(m) not in ("books", "infra"))
    )
    assert wrong == []


def test_imports_are_at_the_top_unless_they_avoid_something() -> None:
    _, lazy = _imports(_modules())
    heavy = ("face_recognition", "dlib", "cv2")  # optional dependencies: import them lazily, with a comment
    wrong = [(f, m, line) for f, m, line in lazy if (f, m) not in LAZY and not m.startswith(heavy)]
    assert wrong == []


def test_packages_import_nothing_and_the_money_rules_need_no_flask() -> None:
    for init in [SERVER / "__init__.py", *SERVER.glob("*/__init__.py")]:
        if init.parent.name in ("api", "cli"):  # api registers its blueprints; cli looks main up lazily
            continue
        tree = ast.parse(init.read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))], init
    code = "import server.books.spend, server.books.ledger, sys; assert 'flask' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
