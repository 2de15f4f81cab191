"""Every fenced code block of README.md, docs/*.md and examples/README.md runs as shown (or is
an explicit fragment that at least parses), so the documentation cannot drift from the API.

Conventions (what a doc writer needs to know; also in README.md, "Developers"):

* A ```python block is a complete program: it runs on its own, as a fresh
  ``python -`` process in an empty temporary directory (its files land there), against the
  same eggroll as this test, within TIMEOUT_S. It must exit with status 0.
* Optional frameworks: a block that imports one of OPTIONAL (torch, jax, optax, cupy,
  scikit-learn, ...) is skipped, with the reason, where that module is not installed (a JAX
  block also needs the XLA FFI handlers, ``eggroll._xla_ffi``).
* Smaller sizes for the test: an HTML comment (invisible when rendered, visible in the
  source) directly above the block, ``<!-- docs-test: ... -->``, with directives separated
  by ``;``:
    ``replace "OLD" "NEW"``  substitute the text OLD (which must occur) by NEW before running,
                             e.g. ``replace "range(600)" "range(3)"``;
    ``env NAME=VALUE``       set an environment variable for the run;
    ``timeout SECONDS``      a different time limit;
    ``requires cuda``        run only where ``eggroll.cuda_available()``.
* A block that cannot run on its own says so on its first line, which the reader sees:
  ``# fragment: <what it needs>`` (``// fragment: ...`` in C++). A Python fragment must
  compile; a C++ fragment must have balanced brackets and every ``eggroll::name`` it uses
  must be declared in the public headers (cpp/eggroll/*.h). A C++ block that quotes a header
  starts with ``// excerpt: cpp/eggroll/<file>.h``: each of its code lines (comments and
  spacing aside) must occur in that header.
* A ```cmake block must be a fragment too (``# fragment: ...``) with balanced parentheses,
  and the targets ``eggroll::<name>`` it names must be exported by CMakeLists.txt.
* Any other language is an error here until this file learns to check it.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import eggroll

REPO = Path(__file__).resolve().parents[1]
REPO_PYTHON = Path(eggroll.__file__).resolve().parents[1]
DOCS = sorted([REPO / "README.md", REPO / "examples" / "README.md",
               *(REPO / "docs").glob("*.md")])
TIMEOUT_S = 120.0

# Import name -> what must also be importable for a block using it to run.
OPTIONAL = {
    "torch": ("torch",), "jax": ("jax", "eggroll._xla_ffi"), "optax": ("optax",),
    "cupy": ("cupy",), "sklearn": ("sklearn",), "gymnasium": ("gymnasium",),
    "matplotlib": ("matplotlib",), "tqdm": ("tqdm",), "transformers": ("transformers",),
    "ray": ("ray",), "evosax": ("evosax",), "evotorch": ("evotorch",), "scipy": ("scipy",),
}

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<lang>[\w+-]*)[^\n]*$")
DIRECTIVE = re.compile(r"<!--\s*docs-test:(?P<body>.*?)-->", re.S)


@dataclass
class Block:
    path: Path
    line: int                     # 1-based line of the opening fence
    lang: str
    code: str
    directives: list[list[str]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def marker(self) -> str | None:
        """'fragment' or 'excerpt' when the first line says so."""
        first = self.code.lstrip("\n").split("\n", 1)[0].strip()
        m = re.match(r"(?:#|//)\s*(fragment|excerpt)\s*:", first)
        return m.group(1) if m else None


def parse_blocks(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, with the docs-test directives of the HTML
    comment that ends on the line right above each (blank lines between are allowed)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m.group("indent"), m.group("fence")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence)
                                      and lines[j].strip().strip(fence[0]) == ""):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        if j == len(lines):
            raise AssertionError(f"{path}:{i + 1}: unterminated code fence")
        blocks.append(Block(path, i + 1, m.group("lang").lower(), "\n".join(body) + "\n",
                            _directives_above(lines, i)))
        i = j + 1
    return blocks


def _directives_above(lines: list[str], i: int) -> list[list[str]]:
    k = i - 1
    while k >= 0 and not lines[k].strip():
        k -= 1
    if k < 0 or not lines[k].rstrip().endswith("-->"):
        return []
    start = k
    while start >= 0 and "<!--" not in lines[start]:
        start -= 1
    m = DIRECTIVE.search("\n".join(lines[max(start, 0):k + 1]))
    if not m:
        return []
    return [shlex.split(d) for d in m.group("body").split(";") if d.strip()]


ALL_BLOCKS = [b for p in DOCS for b in parse_blocks(p)]
PY = [b for b in ALL_BLOCKS if b.lang in ("python", "py")]


def test_docs_found() -> None:
    """The files exist and hold Python blocks (a broken parser would pass every test)."""
    assert (REPO / "README.md").is_file() and len(DOCS) >= 5, DOCS
    assert len(PY) >= 5, [b.id for b in ALL_BLOCKS]


def test_every_block_has_a_known_language() -> None:
    bad = [f"{b.id} ({b.lang or 'no language'})" for b in ALL_BLOCKS
           if b.lang not in ("python", "py", "cpp", "c++", "cmake")]
    assert not bad, ("fenced blocks this test does not know how to check (give them a "
                     "language it checks, or teach tests/test_docs.py): " + ", ".join(bad))


def test_parser_reads_directives(tmp_path: Path) -> None:
    md = tmp_path / "x.md"
    md.write_text('text\n<!-- docs-test: replace "range(600)" "range(3)"; env A=1 -->\n\n'
                  '```python\nfor i in range(600):\n    pass\n```\n\n'
                  '  ```cpp\n  // fragment: x\n  int a;\n  ```\n')
    a, b = parse_blocks(md)
    assert (a.line, a.lang, a.directives) == (4, "python",
                                              [["replace", "range(600)", "range(3)"],
                                               ["env", "A=1"]])
    assert a.code == "for i in range(600):\n    pass\n" and a.marker is None
    assert (b.lang, b.code, b.marker, b.directives) == ("cpp", "// fragment: x\nint a;\n",
                                                        "fragment", [])


# ------------------------------------------------------------------------------ Python

def _needed(code: str) -> list[str]:
    """Optional modules the block imports (top-level names)."""
    tree = ast.parse(code)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return sorted({dep for n in names for dep in OPTIONAL.get(n, ())})


def _prepare(block: Block) -> tuple[str, dict[str, str], float]:
    """(code, environment, timeout) after the block's directives."""
    code = block.code
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_PYTHON)] + (
        [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("MPLBACKEND", "Agg")
    timeout = TIMEOUT_S
    for d in block.directives:
        kind, args = d[0], d[1:]
        if kind == "replace" and len(args) == 2:
            assert args[0] in code, f"{block.id}: replace: {args[0]!r} is not in the block"
            code = code.replace(args[0], args[1])
        elif kind == "env" and len(args) == 1 and "=" in args[0]:
            k, v = args[0].split("=", 1)
            env[k] = v
        elif kind == "timeout" and len(args) == 1:
            timeout = float(args[0])
        elif kind == "requires" and args == ["cuda"]:
            if not eggroll.cuda_available():
                pytest.skip(f"{block.id}: needs a CUDA GPU and a CUDA build of eggroll")
        else:
            raise AssertionError(f"{block.id}: unknown docs-test directive {d}")
    return code, env, timeout


@pytest.mark.parametrize("block", PY, ids=[b.id for b in PY])
def test_python_block(block: Block, tmp_path: Path) -> None:
    if block.marker == "fragment":
        assert not block.directives, f"{block.id}: a fragment is not run: drop its directives"
        compile(block.code, block.id, "exec")       # SyntaxError names the doc and line
        return
    assert block.marker is None, f"{block.id}: 'excerpt' is for C++ header quotes"
    for module in _needed(block.code):
        if importlib.util.find_spec(module) is None:
            if module == "eggroll._xla_ffi" and os.environ.get("EGGROLL_REQUIRE_JAX") == "1":
                pytest.fail("EGGROLL_REQUIRE_JAX=1 but eggroll._xla_ffi is missing")
            pytest.skip(f"{block.id} needs {module}, which is not installed")
    code, env, timeout = _prepare(block)
    try:
        res = subprocess.run([sys.executable, "-"], input=code, cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.id}: still running after {timeout:.0f} s (add a docs-test "
                    "'replace' directive that makes it smaller)")
    assert res.returncode == 0, (
        f"{block.id} failed (exit {res.returncode}); its code as run:\n{code}\n"
        f"--- stdout\n{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-5000:]}")


# ------------------------------------------------------------------------------ C++ / CMake

def _strip_cpp_comments(code: str) -> str:
    code = re.sub(r"/\*.*?\*/", " ", code, flags=re.S)
    return re.sub(r"//[^\n]*", "", code)


def _balanced(code: str, pairs: str = "()[]{}") -> bool:
    opening, closing = pairs[0::2], pairs[1::2]
    stack: list[str] = []
    for ch in re.sub(r'"(?:\\.|[^"\\])*"', '""', code):
        if ch in opening:
            stack.append(closing[opening.index(ch)])
        elif ch in closing:
            if not stack or stack.pop() != ch:
                return False
    return not stack


def _header_text() -> str:
    return "\n".join(p.read_text() for p in sorted((REPO / "cpp" / "eggroll").glob("*.h")))


CPP = [b for b in ALL_BLOCKS if b.lang in ("cpp", "c++")]
CMAKE = [b for b in ALL_BLOCKS if b.lang == "cmake"]


@pytest.mark.parametrize("block", CPP, ids=[b.id for b in CPP])
def test_cpp_block(block: Block) -> None:
    """C++ blocks are fragments (the complete program is examples/cpp, built and run by
    test_cpp_example.py) or header excerpts; both must match the headers."""
    assert block.marker in ("fragment", "excerpt"), (
        f"{block.id}: a C++ block must start with '// fragment: <what it needs>' or "
        "'// excerpt: cpp/eggroll/<file>.h'")
    code = _strip_cpp_comments(block.code)
    assert _balanced(code), f"{block.id}: unbalanced brackets"
    headers = _header_text()
    if block.marker == "excerpt":
        first = block.code.lstrip("\n").split("\n", 1)[0]
        header = REPO / first.split(":", 1)[1].strip()
        assert header.is_file(), f"{block.id}: no such header {header}"
        norm = lambda s: " ".join(s.split())  # noqa: E731
        text = norm(_strip_cpp_comments(header.read_text()))
        for line in code.splitlines():
            if line.strip():
                assert norm(line) in text, f"{block.id}: {line.strip()!r} is not in {header}"
    declared = set(re.findall(r"\b([A-Za-z_]\w*)\b", _strip_cpp_comments(headers)))
    used = set(re.findall(r"\beggroll::([A-Za-z_]\w*)", code))
    missing = sorted(used - declared)
    assert not missing, f"{block.id}: eggroll::{missing} not declared in cpp/eggroll/*.h"


@pytest.mark.parametrize("block", CMAKE, ids=[b.id for b in CMAKE])
def test_cmake_block(block: Block) -> None:
    assert block.marker == "fragment", (
        f"{block.id}: a CMake block must start with '# fragment: <where it goes>'")
    code = re.sub(r"#[^\n]*", "", block.code)
    assert _balanced(code, "()"), f"{block.id}: unbalanced parentheses"
    cmakelists = (REPO / "CMakeLists.txt").read_text()
    for target in re.findall(r"\beggroll::(\w+)", code):
        # installed as eggroll::<EXPORT_NAME> (install(EXPORT ... NAMESPACE eggroll::))
        assert re.search(rf"EXPORT_NAME\s+{target}\b", cmakelists), (
            f"{block.id}: CMakeLists.txt exports no target eggroll::{target}")
