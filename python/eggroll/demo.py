"""The training demo: an MLP digit classifier trained by eggroll.ES on the CPU, no gradients.

    eggroll demo                      # or: python -m eggroll demo, python examples/digits.py
    eggroll demo --quick              # a few steps (CI smoke test)

scikit-learn's bundled 8x8 digits (1797 images, no download), MLP 64 -> hidden -> 10,
fitness = minus the cross-entropy of each member on a minibatch shared by the whole
population, Adam. At the end it times the same ES with full_rank=True (the OpenES baseline:
same population, sizes and data) for a few steps and reports both medians and the speed-up.
Needs the optional extra: pip install "eggroll-hyperscale[demo]" (scikit-learn, tqdm).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

import numpy as np

EXTRA_HINT = ('the demo needs scikit-learn and tqdm, the "demo" extra: '
              'pip install "eggroll-hyperscale[demo]"  (or: pip install scikit-learn tqdm)')


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="eggroll demo", description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=None,
                    help="ES steps (default 600, or 20 with --quick)")
    ap.add_argument("--population", type=int, default=512, help="members (even; default 512)")
    ap.add_argument("--seed", type=int, default=0, help="data split, init and noise seed")
    ap.add_argument("--hidden", type=int, default=64, help="hidden units (default 64)")
    ap.add_argument("--batch", type=int, default=64, help="minibatch rows per step (default 64)")
    ap.add_argument("--sigma", type=float, default=0.05, help="perturbation scale")
    ap.add_argument("--lr", type=float, default=0.02, help="Adam learning rate (start)")
    ap.add_argument("--rank", type=int, default=1, help="rank of the perturbations")
    ap.add_argument("--baseline-steps", type=int, default=None,
                    help="steps timed for each of low / full rank (default 20, 3 with --quick)")
    ap.add_argument("--quick", action="store_true", help="smoke mode: a few steps, < 15 s")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cpu (NumPy, the C++ core) or cuda (CuPy arrays, the CUDA kernels)")
    args = ap.parse_args(argv)
    if args.steps is None:
        args.steps = 20 if args.quick else 600
    if args.baseline_steps is None:
        args.baseline_steps = 3 if args.quick else 20
    for name in ("steps", "population", "hidden", "batch", "rank"):
        if getattr(args, name) < 1:
            ap.error(f"--{name}: must be >= 1")
    if args.population % 2:
        ap.error("--population: must be even (antithetic pairs)")
    return args


class MLP:
    """64 -> hidden (tanh) -> 10, evaluated for the whole population with one ES."""

    def __init__(self, n_in: int, hidden: int, n_out: int, rng: np.random.Generator) -> None:
        self.init = {
            "W1": (rng.standard_normal((hidden, n_in)) / np.sqrt(n_in)).astype(np.float32),
            "b1": np.zeros(hidden, np.float32),
            "W2": (rng.standard_normal((n_out, hidden)) / np.sqrt(hidden)).astype(np.float32),
            "b2": np.zeros(n_out, np.float32),
        }

    @staticmethod
    def population_logits(pop: Any, x: np.ndarray) -> np.ndarray:
        """x [b, 64], every member's input -> logits [N, b, 10], member i with its own
        perturbed weights (x @ W1.T computed once, plus each member's low-rank correction)."""
        h = pop.linear("W1", x, bias="b1", shared=True)
        _xp(h).tanh(h, out=h)
        return pop.linear("W2", h, bias="b2")

    @staticmethod
    def logits(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        """The mean model on x [B, 64] -> [B, 10] (plain NumPy)."""
        h = _xp(x).tanh(x @ params["W1"].T + params["b1"])
        return h @ params["W2"].T + params["b2"]


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean cross-entropy over the batch axis: logits [..., b, C], labels [b] -> [...]."""
    xp = _xp(logits)
    z = logits - logits.max(axis=-1, keepdims=True)
    lse = xp.log(xp.exp(z).sum(axis=-1))
    picked = xp.take_along_axis(z, xp.broadcast_to(labels[:, None], z.shape[:-1] + (1,)),
                                axis=-1)[..., 0]
    return (lse - picked).mean(axis=-1)


def _xp(a: Any) -> Any:
    """numpy, or cupy for CuPy arrays (--device cuda)."""
    if type(a).__module__.split(".")[0] == "cupy":
        import cupy
        return cupy
    return np


def _median_steps(steps: dict[str, Callable[[], Any]], n: int) -> dict[str, float]:
    """Median seconds per call of each step function, calls interleaved (a, b, a, b, ...) so
    that a change in machine load hits every contender alike; one warm-up call each."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    for k, f in steps.items():
        f()
    for _ in range(n):
        for k, f in steps.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    args = _parse(argv)
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        from tqdm import tqdm
    except ImportError as e:
        print(f"eggroll demo: {EXTRA_HINT}\n  ({e})", file=sys.stderr)
        return 2
    import eggroll

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=args.seed,
                                          stratify=y)
    rng = np.random.default_rng(args.seed)
    model = MLP(X.shape[1], args.hidden, 10, rng)
    N, b, steps = args.population, args.batch, args.steps
    xp = np
    if args.device == "cuda":
        if not eggroll.cuda_available():
            print("eggroll demo: --device cuda needs a CUDA build of eggroll, CuPy and a GPU "
                  "(eggroll.cuda_available() is False)", file=sys.stderr)
            return 2
        import cupy as xp
    init = {k: xp.asarray(v) for k, v in model.init.items()}
    ytr_d = xp.asarray(ytr)

    def make_es(full_rank: bool) -> Any:
        return eggroll.ES(init, sigma=args.sigma,
                          lr=lambda t: args.lr * max(0.1, 1.0 - t / steps),
                          population=N, rank=args.rank, seed=args.seed, optimizer="adam",
                          shaping="centered_rank", full_rank=full_rank)

    batch_rng = np.random.default_rng(args.seed + 1)

    def step(es: Any) -> dict[str, Any]:
        idx = batch_rng.choice(len(Xtr), size=b, replace=False)
        xb = xp.asarray(Xtr[idx])                       # the same minibatch for every member
        ce = cross_entropy(MLP.population_logits(es.ask(), xb), ytr_d[xp.asarray(idx)])  # [N]
        stats = es.tell(-ce)
        stats["loss"] = float(ce.mean())
        return stats

    def accuracy(es: Any, Xs: np.ndarray, ys: np.ndarray) -> float:
        return float((MLP.logits(es.params, xp.asarray(Xs)).argmax(axis=1) == xp.asarray(ys)).mean())

    print(f"digits: {len(Xtr)} train / {len(Xte)} test, MLP 64-{args.hidden}-10 (tanh), "
          f"population {N}, rank {args.rank}, batch {b}, sigma {args.sigma}, Adam lr "
          f"{args.lr}, {steps} steps, "
          + ("CUDA (CuPy)" if args.device == "cuda" else f"{eggroll.get_num_threads()} threads"))
    es = make_es(False)
    times = []
    t_train = time.perf_counter()
    bar = tqdm(range(steps), desc="ES", unit="step", dynamic_ncols=True,
               mininterval=0.5, file=sys.stdout)
    for t in bar:
        t0 = time.perf_counter()
        stats = step(es)
        times.append(time.perf_counter() - t0)
        if t % 25 == 0 or t == steps - 1:
            bar.set_postfix(loss=f"{stats['loss']:.3f}",
                            acc=f"{accuracy(es, Xtr, ytr):.3f}", refresh=False)
    bar.close()
    train_s = time.perf_counter() - t_train
    test_acc = accuracy(es, Xte, yte)
    low = float(np.median(times))

    # The OpenES baseline: the same ES with full-rank noise, timed in this run alongside a
    # fresh low-rank ES on the same footing (steps interleaved, same warm-up and count).
    n = args.baseline_steps
    es_low, es_full = make_es(False), make_es(True)
    med = _median_steps({"low": lambda: step(es_low), "full": lambda: step(es_full)}, n)
    low_again, full = med["low"], med["full"]
    total = time.perf_counter() - t_start

    # Every ratio printed is computed from the figures printed beside it (3 significant
    # digits), so a reader can check it; the training median is not mixed into it.
    low_ms, full_ms = float(f"{low_again * 1e3:.3g}"), float(f"{full * 1e3:.3g}")
    print(f"test accuracy      {test_acc * 100:.1f}%  (train {accuracy(es, Xtr, ytr) * 100:.1f}%)")
    print(f"training           {steps} steps, {low * 1e3:.3g} ms/step median, {train_s:.1f} s")
    print(f"low vs full rank   {n} steps each, interleaved (same population, sizes and data):")
    print(f"  {f'EGGROLL (rank {args.rank})':18s} {low_ms:g} ms/step median")
    print(f"  {'full rank (OpenES)':18s} {full_ms:g} ms/step median")
    print(f"  {'speed-up':18s} {full_ms / low_ms:.2f}x  (= {full_ms:g} / {low_ms:g})")
    print(f"total wall time    {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
