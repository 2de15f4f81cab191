#!/usr/bin/env bash
# The glue's size: the bindings (cpp/bindings/*) and the Python adapters (the op layer and the
# framework modules; the trainers, the reference and the benchmarks are not glue). Counts code
# lines: blank lines, comment lines and Python docstrings are not counted (C++: lines that are
# only a // or /* */ comment; Python: comments and docstrings, by the tokenizer). Prints one
# line per file, the total, and the same files' raw line count (wc -l) for comparison.
# Usage: tools/glue_lines.sh        (budget: 2,000 code lines)
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=(cpp/bindings/*.h cpp/bindings/*.cpp
       python/eggroll/__init__.py python/eggroll/_ops.py python/eggroll/numpy.py
       python/eggroll/cupy.py
       python/eggroll/torch/__init__.py python/eggroll/torch/_ops.py
       python/eggroll/torch/_threads.py
       python/eggroll/jax/__init__.py python/eggroll/jax/_ops.py python/eggroll/jax/_ffi.py
       python/eggroll/jax/_cuda.py)
python3 - "${FILES[@]}" <<'PY'
import io, sys, tokenize

SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
        tokenize.ENDMARKER}

def python_lines(path):
    toks = list(tokenize.generate_tokens(io.StringIO(open(path).read()).readline))
    code = set()
    for i, t in enumerate(toks):
        if t.type in SKIP:
            continue
        if t.type == tokenize.STRING:       # a docstring: a string that is a whole statement
            j = i - 1
            while j >= 0 and toks[j].type in (tokenize.NL, tokenize.COMMENT):
                j -= 1
            prev_ok = j < 0 or toks[j].type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
            if prev_ok and toks[i + 1].type == tokenize.NEWLINE:
                continue
        code.update(range(t.start[0], t.end[0] + 1))
    return len(code)

def cpp_lines(path):
    n, block = 0, False
    for line in open(path):
        s = line.strip()
        if block:
            block = "*/" not in s
            continue
        if not s or s.startswith("//"):
            continue
        if s.startswith("/*"):
            block = "*/" not in s
            continue
        n += 1
    return n

total = raw = 0
for p in sys.argv[1:]:
    n = python_lines(p) if p.endswith(".py") else cpp_lines(p)
    total += n
    raw += sum(1 for _ in open(p))
    print(f"{n:6d}  {p}")
print(f"{total:6d}  code lines in total ({raw} lines with blanks, comments and docstrings)")
PY
