"""One rank of the distributed tests (tests/test_distributed_*.py start it as a subprocess).

    python tests/dist_worker.py ENGINE --rank R --world W --rdzv DIR --out FILE [options]

ENGINE is torch (gloo, file rendezvous) or jax (jax.distributed on 127.0.0.1). world 1 runs
the same task in one process without any engine: the baseline the split runs must equal bit
for bit. The rank trains a small MLP for --steps generations and writes its final parameters,
the addresses its sockets listen on and any error to FILE (.npz), then exits (3 on error).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

import numpy as np

N_IN, HIDDEN, N_OUT, BATCH = 6, 5, 3, 4


def listening_addresses() -> list[str]:
    """Local addresses of this process's listening TCP sockets (from /proc/net/tcp{,6})."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if f[3] == "0A" and f[9] in inodes:          # 0A: LISTEN
                out.append(decode_address(f[1]))
    return out


def decode_address(hexaddr: str) -> str:
    """/proc/net/tcp's 'HEXIP:HEXPORT' -> 'a.b.c.d:port' or '[v6]:port'."""
    ip, port = hexaddr.split(":")
    raw = bytes.fromhex(ip)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1]) + f":{int(port, 16)}"
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
    b = b"".join(words)
    if b[:12] == b"\0" * 10 + b"\xff\xff":
        return ".".join(str(x) for x in b[12:]) + f":{int(port, 16)}"   # v4-mapped
    return "[" + b.hex() + f"]:{int(port, 16)}"


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0]
    return host.startswith("127.") or host == "[" + "0" * 31 + "1]"


def data(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((BATCH, N_IN)).astype(np.float32),
            rng.standard_normal((BATCH, N_OUT)).astype(np.float32))


# ------------------------------------------------------------------------------------------
# torch
# ------------------------------------------------------------------------------------------

def run_torch(a: argparse.Namespace) -> dict[str, np.ndarray]:
    import datetime

    import torch
    import torch.distributed as dist

    import eggroll.torch as et
    from eggroll.distributed.torch import DistributedES
    torch.set_num_threads(1)
    if a.world > 1:
        dist.init_process_group("gloo", init_method=f"file://{a.rdzv}/store", rank=a.rank,
                                world_size=a.world, timeout=datetime.timedelta(seconds=60))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(N_IN, HIDDEN), torch.nn.Tanh(),
                                torch.nn.Linear(HIDDEN, N_OUT), torch.nn.LayerNorm(N_OUT))
    seed = 7 + (a.rank if a.scenario == "seed" else 0)
    shaping = "antithetic_sign" if a.wire == "sign" else "centered_rank"
    es = et.ES(model, sigma=0.1, population=a.population, rank=2, seed=seed, shaping=shaping)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    des = DistributedES(es, wire=a.wire, digest_every=2) if a.world > 1 else None
    members = des.members if des else range(a.population)
    x, t = (torch.from_numpy(v) for v in data())
    for step in range(a.steps):
        with es.ask(members=members) as pop:
            y = model(x.expand(len(pop), *x.shape))
        f = -(y - t).square().mean(dim=(1, 2))                    # float32 [len(members)]
        (des.tell if des else es.tell)(f)
        opt.step()
        if a.scenario == "diverge" and a.rank == 1 and step == 2:
            with torch.no_grad():
                model[0].bias[0] += 1e-6
    out = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    out["_listening"] = np.array(listening_addresses(), dtype=np.str_)
    if a.world > 1:
        dist.destroy_process_group()
    return out


# ------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("engine", choices=["torch", "jax"])
    ap.add_argument("--rank", type=int, default=0)
    ap.add_argument("--world", type=int, default=1)
    ap.add_argument("--rdzv", default="")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--population", type=int, default=14)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--wire", default="float32")
    ap.add_argument("--scenario", default="ok", choices=["ok", "seed", "diverge", "shard"])
    a = ap.parse_args()
    import eggroll
    eggroll.set_num_threads(1)
    try:
        out = (run_torch if a.engine == "torch" else run_jax)(a)
    except Exception as e:  # noqa: BLE001 - reported to the test, which asserts on it
        err = {"type": type(e).__name__, "message": str(e), "trace": traceback.format_exc()}
        np.savez(a.out, _error=np.array(json.dumps(err)))
        return 3
    np.savez(a.out, **out)
    return 0


def run_jax(a: argparse.Namespace) -> dict[str, np.ndarray]:
    from dist_worker_jax import run
    return run(a)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    raise SystemExit(main())
