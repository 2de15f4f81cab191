"""Train a PyTorch MLP on scikit-learn's digits with eggroll.torch.ES and torch.optim.Adam.

    python examples/torch_digits.py            # ~97% test accuracy (target >= 90%)
    python examples/torch_digits.py --smoke    # a few steps, seconds

The model is a plain nn.Sequential (64 -> 64 tanh -> 10). Each step the whole population
evaluates one shared minibatch in one forward pass (inputs [population, batch, 64]; member i
sees its own low-rank perturbation of every nn.Linear weight), es.tell() writes the ES
gradient estimate into .grad, and Adam (with a LambdaLR schedule) steps the module.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

EXTRA_HINT = ('this example needs torch, scikit-learn and tqdm (and matplotlib for the plot): '
              'pip install torch "eggroll-hyperscale[examples]"')
DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "torch_digits.png"
TARGET = 0.90


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600, help="ES steps (default 600)")
    ap.add_argument("--population", type=int, default=512, help="members (even; default 512)")
    ap.add_argument("--batch", type=int, default=64, help="minibatch rows per step")
    ap.add_argument("--hidden", type=int, default=64, help="hidden units (default 64)")
    ap.add_argument("--sigma", type=float, default=0.05, help="perturbation scale")
    ap.add_argument("--lr", type=float, default=0.02, help="Adam learning rate (start)")
    ap.add_argument("--rank", type=int, default=1, help="rank of the perturbations")
    ap.add_argument("--seed", type=int, default=0, help="data split, init and noise seed")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (eggroll's ops run on them too); default: 1 on "
                         "machines with <= 2 CPUs, else torch's default; 0: torch's default")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="learning-curve PNG")
    ap.add_argument("--smoke", action="store_true", help="a few steps (tests)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.population = 5, 32
    if args.population % 2:
        ap.error("--population: must be even (antithetic pairs)")
    return args


def save_curve(path: Path, steps: list[int], loss: list[float], eval_steps: list[int],
               test_acc: list[float], title: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    ax.plot(steps, loss, lw=1.0, label="population mean minibatch loss")
    ax.set_xlabel("ES step")
    ax.set_ylabel("cross-entropy")
    ax2 = ax.twinx()
    ax2.plot(eval_steps, test_acc, "o-", ms=3, color="C1", label="mean model test accuracy")
    ax2.axhline(TARGET, color="grey", ls="--", lw=0.8)
    ax2.set_ylabel("test accuracy")
    ax2.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    fig.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    args = _parse(argv)
    try:
        import torch
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        from tqdm import tqdm
    except ImportError as e:
        print(f"torch_digits: {EXTRA_HINT}\n  ({e})", file=sys.stderr)
        return 2
    from torch import nn

    import eggroll
    import eggroll.torch

    # eggroll's ops on CPU tensors run on torch's own OpenMP threads (docs/torch.md
    # "Threads"). On <= 2 CPUs one thread is the default: with other processes on the cores,
    # torch's 2-thread team waits at every op's barrier for a descheduled thread (measured
    # in examples/README.md, "Threads").
    if args.threads is None:
        cpus = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                else os.cpu_count() or 1)
        args.threads = 1 if cpus <= 2 else 0
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.25, random_state=args.seed,
                                          stratify=y)
    Xtr, Xte = torch.tensor(Xtr, dtype=torch.float32), torch.tensor(Xte, dtype=torch.float32)
    ytr, yte = torch.tensor(ytr), torch.tensor(yte)
    torch.manual_seed(args.seed)
    model = nn.Sequential(nn.Linear(64, args.hidden), nn.Tanh(), nn.Linear(args.hidden, 10))
    P, b, steps = args.population, args.batch, args.steps
    es = eggroll.torch.ES(model, sigma=args.sigma, population=P, rank=args.rank,
                          seed=args.seed, shaping="centered_rank")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: max(0.1, 1.0 - t / steps))
    gen = torch.Generator().manual_seed(args.seed + 1)
    chunk = eggroll.chunk_size(b * args.hidden)     # [chunk, b, hidden] stays in cache

    def accuracy(Xs: torch.Tensor, ys: torch.Tensor) -> float:
        with torch.no_grad():
            return float((model(Xs).argmax(dim=1) == ys).float().mean())

    print(f"torch digits: {len(Xtr)} train / {len(Xte)} test, MLP 64-{args.hidden}-10 (tanh), "
          f"eggroll.torch.ES population {P}, rank {args.rank}, sigma {args.sigma}, "
          f"torch.optim.Adam lr {args.lr}, {steps} steps, {torch.get_num_threads()} torch "
          f"threads (eggroll's ops run on them)")
    curve_steps, curve_loss, eval_steps, eval_acc = [], [], [], []
    t_train = time.perf_counter()
    bar = tqdm(range(steps), desc="ES", unit="step", dynamic_ncols=True, mininterval=0.5,
               file=sys.stdout)
    for t in bar:
        idx = torch.randperm(len(Xtr), generator=gen)[:b]
        xb, yb = Xtr[idx], ytr[idx]
        ce = torch.empty(P)
        with es.ask() as pop:                            # population mode
            for sub in pop.chunks(chunk):                # `chunk` members at a time
                logits = model(xb.expand(len(sub), b, 64))   # [chunk, b, 10]: xb shared
                ce[sub.rows] = eggroll.fitness.cross_entropy(logits, yb)
        es.tell(-ce)                                     # .grad = -(ES estimate)
        opt.step()
        sched.step()
        curve_steps.append(t)
        curve_loss.append(float(ce.mean()))
        if t % 25 == 0 or t == steps - 1:
            eval_steps.append(t)
            eval_acc.append(accuracy(Xte, yte))
            bar.set_postfix(loss=f"{curve_loss[-1]:.3f}", test=f"{eval_acc[-1]:.3f}",
                            refresh=False)
    bar.close()
    train_s = time.perf_counter() - t_train
    test_acc = accuracy(Xte, yte)
    ok = test_acc >= TARGET
    title = (f"eggroll.torch.ES + Adam, digits MLP 64-{args.hidden}-10, population {P}: "
             f"test {test_acc * 100:.1f}%")
    if save_curve(args.out, curve_steps, curve_loss, eval_steps, eval_acc, title):
        print(f"learning curve     {args.out}")
    print(f"test accuracy      {test_acc * 100:.1f}%  (train {accuracy(Xtr, ytr) * 100:.1f}%; "
          f"target {TARGET * 100:.0f}%: {'reached' if ok else 'NOT reached'})")
    print(f"training time      {train_s:.1f} s ({train_s / steps * 1e3:.1f} ms/step); total "
          f"wall time {time.perf_counter() - t_start:.1f} s")
    return 0 if ok or args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
