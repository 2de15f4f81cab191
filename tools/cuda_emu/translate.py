"""Rewrites cuda/*.cu for the host emulation: each kernel<<<grid, block, ...>>>(args) becomes
emu::Launch{dim3(grid), dim3(block)}([&](auto... a) { kernel(a...); })(args). Usage: translate.py CUDA_DIR OUT_DIR."""
import pathlib
import re
import sys

src = pathlib.Path(sys.argv[1])
out = pathlib.Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
def split_top(s):
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch in "(<[{": depth += 1
        if ch in ")>]}": depth -= 1
        if ch == "," and depth == 0: parts.append(cur); cur = ""
        else: cur += ch
    parts.append(cur); return [p.strip() for p in parts]
pat = re.compile(r"([A-Za-z_][\w:]*(?:<[^<>;()]*>)?)<<<(.*?)>>>\(", re.S)
for f in list(src.glob("*.cu")) + [src / "common.cuh"]:
    t = f.read_text()
    def rep(m):
        args = split_top(m.group(2))
        # a generic lambda around the kernel, so that a template kernel's arguments are
        # deduced from the call, as nvcc deduces them from kernel<<<...>>>(args)
        return (f"emu::Launch{{dim3({args[0]}), dim3({args[1]})}}"
                f"([&](auto... a) {{ {m.group(1)}(a...); }})(")
    t2, n = pat.subn(rep, t)
    (out / (f.stem + (".cpp" if f.suffix == ".cu" else ".cuh"))).write_text(t2)
    print(f.name, n, "launches")
