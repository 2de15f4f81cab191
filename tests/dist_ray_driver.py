"""The Ray test's driver (tests/test_distributed_ray.py runs it as a subprocess with a hard
timeout): a local Ray pool on 127.0.0.1 with 2 actors trains eggroll.ES for 6 generations
while one actor is killed mid-generation (and restarted by Ray, catching up from the fitness
log) and another straggles until its chunk is duplicated; then checkpoint + replay. Writes the parameters of the pool, of a
one-process run and of the replayed run, the pool's statistics and the listening addresses
of every process of the Ray session to --out (.npz)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback

import numpy as np

POPULATION, STEPS = 14, 6


def make_es():
    import eggroll
    rng = np.random.default_rng(0)
    params = {"W1": rng.standard_normal((5, 6)).astype(np.float32),
              "b1": np.zeros(5, np.float32),
              "W2": rng.standard_normal((3, 5)).astype(np.float32)}
    return eggroll.ES(params, sigma=0.1, lr=0.05, population=POPULATION, rank=2, seed=11,
                      optimizer="adam")


def fitness(pop):
    rng = np.random.default_rng(3)
    x = np.broadcast_to(rng.standard_normal((4, 6)).astype(np.float32), (len(pop), 4, 6)).copy()
    y = pop.linear("W2", np.tanh(pop.linear("W1", x, bias="b1")))
    return -np.square(y - 0.25).mean(axis=(1, 2))


class Factory:
    """Builds the replica; in an actor (not the driver) it also plays the faults, once each:
    at epoch 3 the actor evaluating member 0 kills itself mid-evaluation (restarted by Ray,
    it needs epochs 0-2, the oldest read back from the fitness log); at epoch 4 the actor
    evaluating the last chunk straggles until the driver has duplicated it."""

    def __init__(self, marks: str, driver_pid: int) -> None:
        self.marks, self.driver_pid = marks, driver_pid

    def __call__(self):
        from eggroll.distributed.ray import ESReplica
        marks, driver = self.marks, self.driver_pid

        def faulty_fitness(pop):
            if os.getpid() != driver:
                e, lo = pop.epoch, pop.members.start
                if e == 3 and lo == 0 and _once(marks, "kill"):
                    os.kill(os.getpid(), signal.SIGKILL)
                if e == 4 and pop.members.stop == POPULATION:
                    if _once(marks, "sleep"):
                        # Straggle until the driver has given this chunk to the other actor
                        # (bounded): a fixed sleep raced the other actor's own work and
                        # restart on a loaded machine.
                        deadline = time.monotonic() + 60.0
                        while (not os.path.exists(os.path.join(marks, "dup"))
                               and time.monotonic() < deadline):
                            time.sleep(0.05)
                    else:
                        _once(marks, "dup")          # the duplicate: release the straggler
            return fitness(pop)
        return ESReplica(make_es(), faulty_fitness)


def _once(marks: str, name: str) -> bool:
    try:
        fd = os.open(os.path.join(marks, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def tree_listening(root: int) -> list[str]:
    """Listening TCP addresses of root and all its descendants (the Ray daemons and workers)."""
    from dist_worker import decode_address
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    pids, stack = set(), [root]
    while stack:
        p = stack.pop()
        if p not in pids:
            pids.add(p)
            stack.extend(children.get(p, []))
    inodes = set()
    for p in pids:
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                link = os.readlink(f"/proc/{p}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in open(table).read().splitlines()[1:]:
            f = row.split()
            if f[3] == "0A" and f[9] in inodes:
                out.append(decode_address(f[1]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    import eggroll
    eggroll.set_num_threads(1)
    try:
        out = run(a.tmp)
    except Exception as e:  # noqa: BLE001 - reported to the test
        err = {"type": type(e).__name__, "message": str(e), "trace": traceback.format_exc()}
        np.savez(a.out, _error=np.array(json.dumps(err)))
        return 3
    np.savez(a.out, **out)
    return 0


def run(tmp: str) -> dict:
    t0 = time.monotonic()
    import ray
    from eggroll.distributed import FitnessLog, replay
    from eggroll.distributed.ray import RayPool
    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=2,
             log_to_driver=False, configure_logging=False)
    out = {"_ray_start_s": np.array(time.monotonic() - t0)}
    try:
        log = FitnessLog(os.path.join(tmp, "fit.log"), population=POPULATION)
        pool = RayPool(Factory(tmp, os.getpid()), num_actors=2, chunks=3,
                       straggler_timeout=1.5, max_restarts=1, digest_every=1, log=log)
        for _ in range(STEPS):
            if pool.replica.epoch == 2:
                pool.replica.es.save(os.path.join(tmp, "ckpt.npz"))
            pool.step()
        out["_listening"] = np.array(tree_listening(os.getpid()), dtype=np.str_)
        out["_stats"] = np.array(json.dumps(pool.stats))
        out.update({f"pool/{k}": v for k, v in pool.replica.es.params.items()})
        pool.shutdown()
    finally:
        ray.shutdown()
    es = make_es()                                       # one process, no faults
    for _ in range(STEPS):
        es.tell(fitness(es.ask()))
    out.update({f"single/{k}": v for k, v in es.params.items()})
    resumed = eggroll_load(os.path.join(tmp, "ckpt.npz"))
    out["_replayed"] = np.array(replay(log, resumed.tell, resumed.epoch))
    log.close()
    out.update({f"replay/{k}": v for k, v in resumed.params.items()})
    return out


def eggroll_load(path):
    import eggroll
    return eggroll.ES.load(path)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    raise SystemExit(main())
