"""The digits MLP with eggroll.torch.ES on torch.distributed: each rank evaluates its block of
the population, only the fitness crosses between ranks, every rank applies the same update.

    torchrun --standalone --nproc_per_node 2 examples/distributed/torch_digits.py
    torchrun --standalone --nproc_per_node 2 examples/distributed/torch_digits.py --smoke

Every rank loads the same data split, initialises the same model (torch.manual_seed) and
draws the same minibatch each step (one generator, same seed): the ranks must share the data
order and the seeds (docs/distributed.md). gloo on CPUs; with --backend nccl each rank uses
cuda:LOCAL_RANK. Rank 0 prints and appends the gathered fitness to a fitness log
(examples/out/torch_digits.fitlog) that, with a checkpoint, resumes the run bit for bit.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "out"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="ES steps (default 300)")
    ap.add_argument("--population", type=int, default=512, help="members (even; default 512)")
    ap.add_argument("--batch", type=int, default=64, help="minibatch rows per step")
    ap.add_argument("--sigma", type=float, default=0.05)
    ap.add_argument("--lr", type=float, default=0.02, help="Adam learning rate")
    ap.add_argument("--seed", type=int, default=0, help="data split, init and noise seed")
    ap.add_argument("--backend", default="gloo", help="gloo (CPU) or nccl (GPUs)")
    ap.add_argument("--init-method", default="env://", help="torch.distributed init_method "
                    "(env:// under torchrun; file:///path works without TCP)")
    ap.add_argument("--wire", default="float32", choices=["float32", "sign"])
    ap.add_argument("--fitness-log", type=Path, default=OUT / "torch_digits.fitlog",
                    help="rank 0's fitness log")
    ap.add_argument("--smoke", action="store_true", help="a few steps (tests)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.population = 4, 32
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        import torch
        import torch.distributed as dist
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:
        print(f"needs torch and scikit-learn: pip install torch scikit-learn ({e})",
              file=sys.stderr)
        return 2
    from torch import nn

    import eggroll.torch
    from eggroll.distributed import FitnessLog
    from eggroll.distributed.torch import DistributedES

    # RANK and WORLD_SIZE come from torchrun (or whoever starts the ranks); a timeout makes a
    # rank that died leave the others with an error instead of a long wait.
    dist.init_process_group(args.backend, init_method=args.init_method,
                            rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]),
                            timeout=datetime.timedelta(seconds=120))
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    device = torch.device("cuda" if args.backend == "nccl" else "cpu")
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.25, random_state=args.seed,
                                          stratify=y)
    Xtr, Xte = (torch.tensor(a, dtype=torch.float32, device=device) for a in (Xtr, Xte))
    ytr, yte = torch.tensor(ytr, device=device), torch.tensor(yte, device=device)
    torch.manual_seed(args.seed)                          # the same initial model everywhere
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)).to(device)
    es = eggroll.torch.ES(model, sigma=args.sigma, population=args.population, seed=args.seed,
                          shaping="antithetic_sign" if args.wire == "sign" else "centered_rank")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    log = None
    if rank == 0:
        args.fitness_log.parent.mkdir(parents=True, exist_ok=True)
        args.fitness_log.unlink(missing_ok=True)                  # a fresh run: a fresh log
        log = FitnessLog(args.fitness_log, population=args.population, mode=args.wire)
    des = DistributedES(es, wire=args.wire, digest_every=25, log=log)
    gen = torch.Generator().manual_seed(args.seed + 1)    # the same minibatches everywhere
    M, b = len(des.members), args.batch
    if rank == 0:
        print(f"torch.distributed ({args.backend}): {world} ranks, population "
              f"{args.population}, members per rank {des.plan.sizes}, wire {args.wire} "
              f"({des.exchange.wire.frame_size} bytes per rank per step)")
    t0 = time.perf_counter()
    for t in range(args.steps):
        idx = torch.randperm(len(Xtr), generator=gen)[:b].to(device)
        xb, yb = Xtr[idx], ytr[idx]
        with des.ask():                                    # this rank's members only
            logits = model(xb.expand(M, b, 64))            # [M, b, 10]
        ce = nn.functional.cross_entropy(logits.reshape(M * b, 10), yb.repeat(M),
                                         reduction="none").reshape(M, b).mean(dim=1)
        des.tell(-ce)                                      # all-gather fitness, es.tell
        opt.step()
        if rank == 0 and (t % 50 == 0 or t == args.steps - 1):
            with torch.no_grad():
                acc = float((model(Xte).argmax(1) == yte).float().mean())
            print(f"step {t:4d}  block loss {float(ce.mean()):.3f}  test acc {acc * 100:.1f}%",
                  flush=True)
    took = time.perf_counter() - t0
    if rank == 0:
        print(f"{args.steps} steps in {took:.1f} s ({took / args.steps * 1e3:.1f} ms/step); "
              f"fitness log {args.fitness_log} ({len(log)} generations)")
        log.close()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
