"""The package's import graph has no cycles, and ``import eggroll`` imports no framework.

Edges: every import statement of every eggroll module that names another eggroll module,
resolved as Python does (``from . import name`` is the submodule ``name`` when there is one,
else the package itself, whose ``__init__`` must then have run). The implicit import of a
module's parent packages is not an edge (it is always acyclic by construction). Imports
inside functions count too: they run later, but a cycle through them is still a cycle in the
design (a module reaching back into one that depends on it)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import eggroll

PKG = Path(eggroll.__file__).resolve().parent


# The compiled modules (leaves: they import nothing of eggroll), built or not.
EXTENSIONS = ("eggroll._core", "eggroll._cuda", "eggroll._xla_ffi", "eggroll._xla_ffi_cuda")


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = dict.fromkeys(EXTENSIONS, PKG / "__init__.py")
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _edges(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            deps |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target not in modules:
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                deps.add(sub if sub in modules else target)
    deps.discard(name)
    return deps


def test_no_import_cycles():
    modules = _modules()
    graph = {m: set() if m in EXTENSIONS else _edges(m, p, modules) for m, p in modules.items()}
    state: dict[str, int] = {}      # 1: on the current path, 2: done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(path[path.index(d):] + [d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
    assert graph["eggroll.es"] and "eggroll._trainer" in graph["eggroll.jax.es"]  # the walk sees edges


def test_import_eggroll_imports_no_framework():
    code = ("import sys, eggroll, eggroll.numpy; "
            "print(sorted(m for m in ('torch', 'jax', 'cupy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PKG.parent)
    assert out.stdout.strip() == "[]"


def test_one_version_source():
    """eggroll.__version__ comes from the compiled module, which CMake's project() got from
    pyproject.toml (scikit-build-core's SKBUILD_PROJECT_VERSION, or the file itself)."""
    import tomllib
    repo = Path(__file__).resolve().parents[1]
    meta = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    assert meta["name"] == "eggroll-hyperscale"
    assert eggroll.__version__ == eggroll._core.__version__ == meta["version"]
    cmake = (repo / "CMakeLists.txt").read_text()
    assert "project(eggroll VERSION ${_eggroll_version}" in cmake   # no second literal
