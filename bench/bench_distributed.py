"""Benchmark of eggroll.distributed: the bytes a generation puts on the wire (measured on the
loopback interface, not computed) and the scaling of one population over processes.

Run:  PYTHONPATH=python python bench/bench_distributed.py [--quick] [--engines torch,jax,ray]
      [--population 2048] [--hidden 256] [--repeat 3] [--jsonl out.jsonl]
      (JSON lines on stdout, tables on stderr)

wire     Two ranks (torch: gloo; jax: jax.distributed + process_allgather; ray: a driver and
         two actors) run G generations inside a fresh network namespace (`unshare --net`,
         where the loopback interface carries nothing else); rank 0 (the driver for Ray)
         reads /proc/net/dev's lo counters before and after the generations: bytes/gen is
         every byte the job sent in that window (payload + TCP/IP headers + the engine's own
         control traffic), next to the wire format's payload (W frames of HEADER + 4 M bytes,
         docs/distributed.md) and the parameter bytes a weight broadcast would send instead.
         Without unshare (not root, no CAP_SYS_ADMIN) the host's lo is read and the row is
         marked shared (other processes' loopback traffic counts too).
scaling  The same task (MLP 64 -> hidden -> 10 on a 16-row batch, population P, Adam) as
         generations per second: 1 process x 1 thread vs 2 processes x 1 thread (torch gloo;
         jax with --engines jax), launched alternately --repeat times, medians. Target: >= 1.7x
         on 2 cores. Each rank times its generation loop after one warm-up generation and is
         pinned to one CPU (--no-pin to let the OS place it): eggroll, torch and BLAS run one
         thread by setting, XLA's CPU pool only by the CPUs the process may use. Also each
         rank's CPU seconds per generation (the work one rank does, all-gather included):
         less sensitive than wall time to other jobs on the machine, though not immune
         (caches and memory bandwidth are shared).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
N_IN, N_OUT, BATCH = 64, 10, 16


# ------------------------------------------------------------------------------------------
# the worker: one rank (or the Ray driver) of one measurement
# ------------------------------------------------------------------------------------------

def lo_bytes() -> tuple[int, int]:
    """(tx bytes, tx packets) of the loopback interface."""
    for line in open("/proc/net/dev"):
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            f = rest.split()
            return int(f[8]), int(f[9])
    return 0, 0


def _params(hidden: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"W1": (rng.standard_normal((hidden, N_IN)) / 8).astype(np.float32),
            "b1": np.zeros(hidden, np.float32),
            "W2": (rng.standard_normal((N_OUT, hidden)) / 16).astype(np.float32),
            "b2": np.zeros(N_OUT, np.float32)}


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return (rng.standard_normal((BATCH, N_IN)).astype(np.float32),
            rng.integers(0, N_OUT, BATCH))


def _gather_ms(exchange, n: int = 50) -> float:
    """Milliseconds per bare all-gather of one wire frame (the exchange's collective)."""
    frame = np.zeros(exchange.wire.frame_size, np.uint8)
    exchange._gather(frame)
    t0 = time.perf_counter()
    for _ in range(n):
        exchange._gather(frame)
    return (time.perf_counter() - t0) / n * 1e3


CPU_S: list[float] = []       # this process's CPU seconds per generation (set by _timed)


def _timed(step, generations: int) -> tuple[float, int, int]:
    """Seconds per generation and lo (bytes, packets) over `generations` after one warm-up."""
    step()
    b0, p0 = lo_bytes()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(generations):
        step()
    dt = time.perf_counter() - t0
    CPU_S.append((time.process_time() - c0) / generations)
    b1, p1 = lo_bytes()
    return dt / generations, b1 - b0, p1 - p0


def worker_torch(a: argparse.Namespace) -> dict:
    import torch
    import torch.distributed as dist

    import eggroll.torch as et
    from eggroll.distributed.torch import DistributedES
    torch.set_num_threads(1)
    if a.world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{a.port}", rank=a.rank,
                                world_size=a.world, timeout=datetime.timedelta(seconds=120))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(N_IN, a.hidden), torch.nn.Tanh(),
                                torch.nn.Linear(a.hidden, N_OUT))
    es = et.ES(model, sigma=0.05, population=a.population, seed=0,
               shaping="antithetic_sign" if a.wire == "sign" else "centered_rank")
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    des = DistributedES(es, wire=a.wire, digest_every=0) if a.world > 1 else None
    members = des.members if des else range(a.population)
    x, y = (torch.from_numpy(v) for v in _data())

    def step():
        with es.ask(members=members) as pop:
            logits = model(x.expand(len(pop), *x.shape))
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, N_OUT), y.repeat(len(pop)),
                                               reduction="none").reshape(len(pop), -1).mean(1)
        (des.tell if des else es.tell)(-ce)
        opt.step()
    sec, nbytes, packets = _timed(step, a.generations)
    frame = des.exchange.wire.frame_size if des else 0
    gather_ms = _gather_ms(des.exchange) if des else 0.0
    if a.world > 1:
        dist.destroy_process_group()
    return {"sec_per_gen": sec, "lo_bytes": nbytes, "lo_packets": packets, "frame": frame,
            "gather_ms": gather_ms,
            "param_bytes": sum(p.numel() * 4 for p in model.parameters())}


def worker_jax(a: argparse.Namespace) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    import eggroll.jax as ej
    from eggroll.distributed.jax import DistributedES
    if a.world > 1:
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{a.port}",
                                   coordinator_bind_address=f"127.0.0.1:{a.port}",
                                   num_processes=a.world, process_id=a.rank,
                                   initialization_timeout=120)
    params = {k: jnp.asarray(v) for k, v in _params(a.hidden).items()}
    es = ej.ES(params, sigma=0.05, population=a.population, seed=0)
    opt = optax.adam(0.01)
    des = DistributedES(es, params, digest_every=0) if a.world > 1 else None
    block = des.members if des else range(a.population)
    xb, yb = (jnp.asarray(v) for v in _data())

    @jax.jit
    def fitness(params, epoch):
        pop = es.ask(params, epoch, members=block)
        h = jnp.tanh(pop.linear("W1", xb, bias="b1", shared=True))
        logp = jax.nn.log_softmax(pop.linear("W2", h, bias="b2"), axis=-1)
        return (logp * jax.nn.one_hot(yb, N_OUT)).sum(-1).mean(-1)

    @jax.jit
    def update(params, opt_state, f, epoch):
        u, opt_state = opt.update(es.gradient(params, f, epoch), opt_state, params)
        return optax.apply_updates(params, u), opt_state
    state = {"p": params, "o": opt.init(params), "e": 0}

    def step():
        f = fitness(state["p"], state["e"])
        f = des.gather(f, state["p"], state["e"]) if des else f
        state["p"], state["o"] = update(state["p"], state["o"], f, state["e"])
        jax.block_until_ready(state["p"])
        state["e"] += 1
    sec, nbytes, packets = _timed(step, a.generations)
    out = {"sec_per_gen": sec, "lo_bytes": nbytes, "lo_packets": packets,
           "frame": des.exchange.wire.frame_size if des else 0,
           "gather_ms": _gather_ms(des.exchange) if des else 0.0,
           "param_bytes": sum(int(np.prod(v.shape)) * 4 for v in params.values())}
    if a.world > 1:
        jax.distributed.shutdown()
    return out


class _Replica:
    """A NumPy MLP replica for the Ray pool (the same task)."""

    def __init__(self, population: int, hidden: int) -> None:
        import eggroll
        self.es = eggroll.ES(_params(hidden), sigma=0.05, lr=0.01, population=population,
                             optimizer="adam", seed=0)
        self.x, self.y = _data()

    epoch = property(lambda self: self.es.epoch)
    population = property(lambda self: self.es.population)
    antithetic = property(lambda self: self.es.antithetic)

    def evaluate(self, members: range) -> np.ndarray:
        from eggroll.demo import MLP, cross_entropy
        return -cross_entropy(MLP.population_logits(self.es.ask(members=members), self.x),
                              self.y)

    def tell(self, f: np.ndarray) -> None:
        self.es.tell(f)

    def digest(self) -> int:
        from eggroll.distributed import param_digest
        return param_digest(self.es.params.items())


class _Factory:
    def __init__(self, population: int, hidden: int) -> None:
        self.args = (population, hidden)

    def __call__(self) -> _Replica:
        return _Replica(*self.args)


def worker_ray(a: argparse.Namespace) -> dict:
    import ray

    from eggroll.distributed.ray import RayPool
    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=a.world,
             log_to_driver=False, configure_logging=False)
    try:
        pool = RayPool(_Factory(a.population, a.hidden), num_actors=a.world, digest_every=0)
        sec, nbytes, packets = _timed(pool.step, a.generations)
        actor = pool._actors[0]
        ray.get(actor.where.remote())
        t0 = time.perf_counter()
        for _ in range(50):                               # one actor call's round trip
            ray.get(actor.where.remote())
        gather_ms = (time.perf_counter() - t0) / 50 * 1e3
        pool.shutdown()
    finally:
        ray.shutdown()
    return {"sec_per_gen": sec, "lo_bytes": nbytes, "lo_packets": packets, "frame": 0,
            "gather_ms": gather_ms,
            "param_bytes": sum(v.nbytes for v in _params(a.hidden).values())}


def worker_main(a: argparse.Namespace) -> int:
    if a.pin and a.worker != "ray":
        # One core per rank: XLA's CPU pool (which eggroll's JAX handlers run on) sizes itself
        # from the CPUs this process may use, so pinning is what makes a JAX rank one thread.
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[a.rank % len(cpus)]})
    import eggroll
    eggroll.set_num_threads(1)
    res = {"torch": worker_torch, "jax": worker_jax, "ray": worker_ray}[a.worker](a)
    res["cpu_s_per_gen"] = CPU_S[-1] if CPU_S else 0.0
    if a.rank == 0:
        print("RESULT " + json.dumps(res), flush=True)
    return 0


# ------------------------------------------------------------------------------------------
# the parent: launches, namespaces, tables
# ------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_cpu_multi_thread_eigen=false",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
               PYTHONWARNINGS="ignore")
    py = str(HERE.parents[1] / "python")
    if Path(py, "eggroll").is_dir():
        env["PYTHONPATH"] = os.pathsep.join([py, env.get("PYTHONPATH", "")])
    return env


def launch(engine: str, world: int, a: argparse.Namespace, netns: bool,
           wire: str = "float32", timeout: float = 600) -> dict:
    """Run one measurement: `world` ranks (the Ray driver alone starts its actors)."""
    port = _free_port()
    common = [f"--worker={engine}", f"--world={world}", f"--port={port}", f"--wire={wire}",
              "--pin" if a.pin else "--no-pin",
              f"--population={a.population}", f"--hidden={a.hidden}",
              f"--generations={a.generations}"]
    ranks = 1 if engine == "ray" else world
    script = " & ".join(
        f"{sys.executable} {HERE} {' '.join(common)} --rank={r}" for r in range(ranks))
    if netns:   # a private loopback: its counters see this job only
        cmd = ["unshare", "--net", "--", "sh", "-c", f"ip link set lo up && ({script} & wait)"]
    else:
        cmd = ["sh", "-c", f"({script} & wait)"]
    p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout,
                       start_new_session=True)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{engine} x{world} failed ({p.returncode}):\n{p.stdout[-2000:]}\n"
                       f"{p.stderr[-3000:]}")


def have_netns() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    r = subprocess.run(["unshare", "--net", "--", "sh", "-c", "ip link set lo up"],
                       capture_output=True)
    return r.returncode == 0


def emit(row: dict, jsonl: Path | None) -> None:
    line = json.dumps(row)
    print(line, flush=True)
    if jsonl:
        with open(jsonl, "a") as f:
            f.write(line + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--wire", default="float32", help=argparse.SUPPRESS)
    ap.add_argument("--engines", default="torch,jax,ray")
    ap.add_argument("--population", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--generations", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3, help="alternating launches per config")
    ap.add_argument("--quick", action="store_true", help="fewer generations and launches")
    ap.add_argument("--no-netns", action="store_true", help="read the host's lo counters")
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                    help="pin rank r to the r-th allowed CPU (default; not for Ray)")
    ap.add_argument("--jsonl", type=Path, default=None)
    a = ap.parse_args()
    if a.worker:
        return worker_main(a)
    if a.quick:
        a.generations, a.repeat, a.population = 8, 1, 1024
    engines = [e for e in a.engines.split(",") if e]
    netns = not a.no_netns and have_netns()
    load = os.getloadavg()
    print(f"bench_distributed: population {a.population}, MLP {N_IN}-{a.hidden}-{N_OUT}, batch "
          f"{BATCH}, {a.generations} generations per launch; lo counters "
          f"{'in a private network namespace' if netns else 'of the host (shared)'}; load "
          f"average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", file=sys.stderr)
    rows = []
    for engine in engines:                                         # bytes on the wire
        for wire in (("float32", "sign") if engine == "torch" else ("float32",)):
            r = launch(engine, 2, a, netns, wire)
            payload = 2 * r["frame"]
            row = {"bench": "wire", "engine": engine, "wire": wire, "world": 2,
                   "population": a.population, "bytes_per_gen": r["lo_bytes"] / a.generations,
                   "packets_per_gen": r["lo_packets"] / a.generations,
                   "frame_payload_per_gen": payload, "param_bytes": r["param_bytes"],
                   "gather_ms": r["gather_ms"], "sec_per_gen": r["sec_per_gen"],
                   "netns": netns, "load": load[0]}
            emit(row, a.jsonl)
            rows.append(row)
    print(f"\n{'engine':6} {'wire':8} {'bytes/gen':>10} {'packets/gen':>11} "
          f"{'frames (W x frame)':>18} {'params (a broadcast)':>20} {'gather ms':>9}",
          file=sys.stderr)
    for r in rows:
        print(f"{r['engine']:6} {r['wire']:8} {r['bytes_per_gen']:10.0f} "
              f"{r['packets_per_gen']:11.1f} {r['frame_payload_per_gen'] or '-':>18} "
              f"{r['param_bytes']:20d} {r['gather_ms']:9.2f}", file=sys.stderr)
    print("(gather ms: one bare all-gather of a frame; Ray: one actor call's round trip)",
          file=sys.stderr)
    scaling = [e for e in engines if e in ("torch", "jax")]
    for engine in scaling:                                          # 1 x 1 vs 2 x 1
        times: dict[int, list[float]] = {1: [], 2: []}
        cpu: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(a.repeat):
            for world in (1, 2):
                r = launch(engine, world, a, netns)
                times[world].append(r["sec_per_gen"])
                cpu[world].append(r["cpu_s_per_gen"])
        one, two = float(np.median(times[1])), float(np.median(times[2]))
        c1, c2 = float(np.median(cpu[1])), float(np.median(cpu[2]))
        row = {"bench": "scaling", "engine": engine, "population": a.population,
               "hidden": a.hidden, "gen_per_s_1x1": 1 / one, "gen_per_s_2x1": 1 / two,
               "speedup": one / two, "cpu_s_per_gen_1x1": c1, "cpu_s_per_gen_rank0_2x1": c2,
               "cpu_ratio": c1 / c2, "runs": a.repeat, "load": os.getloadavg()[0]}
        emit(row, a.jsonl)
        print(f"\nscaling {engine}: 1 process x 1 thread {1 / one:.1f} gen/s, 2 processes x 1 "
              f"thread {1 / two:.1f} gen/s: {one / two:.2f}x (target >= 1.7x; load average "
              f"now {os.getloadavg()[0]:.2f}); CPU seconds per generation {c1 * 1e3:.1f} ms "
              f"(1 process) vs {c2 * 1e3:.1f} ms (rank 0 of 2): {c1 / c2:.2f}x", file=sys.stderr)
    return 0


if __name__ == "__main__":
    tempfile.tempdir = tempfile.gettempdir()
    raise SystemExit(main())
