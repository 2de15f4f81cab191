"""The digits demo's training run with a learning curve: loss and accuracy vs step, as a PNG.

    pip install ".[examples]" && python examples/digits_curve.py
    python examples/digits_curve.py --smoke      # a few steps (CI)

The same model, data, and hyper-parameters as `python -m eggroll demo` (examples/digits.py):
scikit-learn's bundled 8x8 digits, MLP 64 -> 64 (tanh) -> 10, population 512, rank 1, Adam
with lr 0.02 decaying linearly to 0.002, fitness = minus the cross-entropy on a 64-image
minibatch shared by the whole population. It reuses the demo's MLP and cross_entropy
(eggroll.demo) and records, every step, the population's mean minibatch loss and, every few
steps, the mean model's train and test accuracy. It skips the demo's full-rank timing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

EXTRA_HINT = ('this example needs scikit-learn and tqdm (and matplotlib for the plot), the '
              '"examples" extra: pip install "eggroll-hyperscale[examples]"  '
              '(or: pip install scikit-learn matplotlib tqdm)')
DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "digits.png"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python examples/digits_curve.py",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=None,
                    help="ES steps (default 600, or 10 with --smoke)")
    ap.add_argument("--population", type=int, default=None,
                    help="members, even (default 512, or 32 with --smoke)")
    ap.add_argument("--seed", type=int, default=0, help="data split, init and noise seed")
    ap.add_argument("--eval-every", type=int, default=10,
                    help="accuracy of the mean model every this many steps (default 10)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help=f"learning-curve PNG (default {DEFAULT_OUT})")
    ap.add_argument("--smoke", action="store_true", help="smoke mode: a few steps (< 10 s)")
    args = ap.parse_args(argv)
    if args.steps is None:
        args.steps = 10 if args.smoke else 600
    if args.population is None:
        args.population = 32 if args.smoke else 512
    if args.smoke:
        args.eval_every = min(args.eval_every, 2)
    for name in ("steps", "population", "eval_every"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')}: must be >= 1")
    if args.population % 2:
        ap.error("--population: must be even (antithetic pairs)")
    return args


def save_curve(path: Path, loss: np.ndarray, acc_steps: list[int], train_acc: list[float],
               test_acc: list[float], title: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    steps = np.arange(1, len(loss) + 1)
    ax1.plot(steps, loss, lw=0.6, alpha=0.5, label="per step")
    k = min(25, len(loss))
    if k > 1:
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax1.plot(steps[k - 1:], smooth, lw=1.5, label=f"mean of {k}")
    ax1.set_xlabel("step")
    ax1.set_ylabel("cross-entropy (population mean, minibatch)")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.plot(acc_steps, np.array(train_acc) * 100, "-", label="train")
    ax2.plot(acc_steps, np.array(test_acc) * 100, "-", label="test")
    ax2.set_xlabel("step")
    ax2.set_ylabel("accuracy of the mean model (%)")
    ax2.grid(alpha=0.3)
    ax2.legend(loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    args = _parse(argv)
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        from tqdm import tqdm
    except ImportError as e:
        print(f"digits_curve: {EXTRA_HINT}\n  ({e})", file=sys.stderr)
        return 2
    import eggroll
    from eggroll.demo import MLP, _parse as demo_defaults, cross_entropy

    d = demo_defaults([])                                       # the demo's hyper-parameters
    sigma, lr, hidden, b, rank = d.sigma, d.lr, d.hidden, d.batch, d.rank
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=args.seed,
                                          stratify=y)
    model = MLP(X.shape[1], hidden, 10, np.random.default_rng(args.seed))
    N, steps = args.population, args.steps
    es = eggroll.ES(model.init, sigma=sigma, lr=lambda t: lr * max(0.1, 1.0 - t / steps),
                    population=N, rank=rank, seed=args.seed, optimizer="adam",
                    shaping="centered_rank")
    batch_rng = np.random.default_rng(args.seed + 1)

    def accuracy(Xs: np.ndarray, ys: np.ndarray) -> float:
        return float((MLP.logits(es.params, Xs).argmax(axis=1) == ys).mean())

    print(f"digits: {len(Xtr)} train / {len(Xte)} test, MLP 64-{hidden}-10 (tanh), population "
          f"{N}, rank {rank}, batch {b}, sigma {sigma}, Adam lr {lr}, {steps} steps, "
          f"{eggroll.get_num_threads()} threads")
    loss, acc_steps, train_acc, test_acc = [], [0], [accuracy(Xtr, ytr)], [accuracy(Xte, yte)]
    t_train = time.perf_counter()
    bar = tqdm(range(steps), desc="ES", unit="step", dynamic_ncols=True, mininterval=0.5,
               file=sys.stdout)
    for t in bar:
        idx = batch_rng.choice(len(Xtr), size=b, replace=False)
        ce = cross_entropy(MLP.population_logits(es.ask(), Xtr[idx]), ytr[idx])  # [N]
        es.tell(-ce)
        loss.append(float(ce.mean()))
        if (t + 1) % args.eval_every == 0 or t == steps - 1:
            acc_steps.append(t + 1)
            train_acc.append(accuracy(Xtr, ytr))
            test_acc.append(accuracy(Xte, yte))
            bar.set_postfix(loss=f"{loss[-1]:.3f}", test=f"{test_acc[-1]:.3f}", refresh=False)
    bar.close()
    train_s = time.perf_counter() - t_train
    title = (f"eggroll.ES on digits: pop {N}, MLP 64-{hidden}-10, {steps} steps, {train_s:.0f} s;"
             f" test accuracy {test_acc[-1] * 100:.1f}%")
    plotted = save_curve(args.out, np.array(loss), acc_steps, train_acc, test_acc, title)
    print(f"test accuracy      {test_acc[-1] * 100:.1f}%  (train {train_acc[-1] * 100:.1f}%)")
    print(f"training time      {train_s:.1f} s ({train_s / steps * 1e3:.1f} ms/step, accuracy "
          f"checks included);  total wall time {time.perf_counter() - t_start:.1f} s")
    if plotted:
        print(f"learning curve     {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
