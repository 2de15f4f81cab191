"""Train the digits MLP with eggroll.jax.ES and optax: one jitted ES step (forward of the
whole population, fitness, estimate, Adam) compiled once for every epoch.

    python examples/jax_digits.py             # 600 steps, population 512 (~1-2 min on 2 cores)
    python examples/jax_digits.py --smoke     # a few steps (tests/test_examples.py)

The same problem, model and hyper-parameters as `eggroll demo` (python/eggroll/demo.py):
scikit-learn's 8x8 digits, MLP 64 -> 64 (tanh) -> 10, fitness = minus the cross-entropy on a
minibatch shared by the population, centered-rank shaping, Adam with lr 0.02 decaying
linearly to 0.002. Needs: pip install "eggroll-hyperscale[jax]" scikit-learn.
"""
from __future__ import annotations

import argparse
import sys
import time


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=None, help="ES steps (600; 5 with --smoke)")
    ap.add_argument("--population", type=int, default=None, help="members (512; 32 with --smoke)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--sigma", type=float, default=0.05)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--rank", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="a few steps, for the tests")
    args = ap.parse_args(argv)
    args.steps = args.steps or (5 if args.smoke else 600)
    args.population = args.population or (32 if args.smoke else 512)
    if args.population % 2 or args.population < 2:
        ap.error("--population: must be even and >= 2 (antithetic pairs)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        import jax
        import jax.numpy as jnp
        import numpy as np
        import optax
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:
        print(f"jax_digits: needs jax, optax and scikit-learn: pip install 'eggroll-hyperscale[jax]' "
              f"scikit-learn  ({e})", file=sys.stderr)
        return 2
    import eggroll
    import eggroll.jax

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=args.seed,
                                          stratify=y)
    rng = np.random.default_rng(args.seed)
    n_in, H, N, b = X.shape[1], args.hidden, args.population, args.batch
    params = {"W1": jnp.asarray(rng.standard_normal((H, n_in)) / np.sqrt(n_in), jnp.float32),
              "b1": jnp.zeros(H, jnp.float32),
              "W2": jnp.asarray(rng.standard_normal((10, H)) / np.sqrt(H), jnp.float32),
              "b2": jnp.zeros(10, jnp.float32)}

    es = eggroll.jax.ES(params, sigma=args.sigma, population=N, rank=args.rank, seed=args.seed,
                        shaping="centered_rank")
    schedule = optax.linear_schedule(args.lr, 0.1 * args.lr, args.steps)
    opt = optax.adam(schedule)

    chunk = eggroll.chunk_size(b * H)          # members at a time: [chunk, b, H] stays in cache

    @jax.jit
    def step(params, opt_state, epoch, xb, yb):
        pop = es.ask(params, epoch)

        def chunk_ce(sub):                     # sub: `chunk` members; xb [b, n] for all of them
            h = jnp.tanh(sub.linear("W1", xb, bias="b1", shared=True))    # [chunk, b, H]
            return eggroll.fitness.cross_entropy(sub.linear("W2", h, bias="b2"), yb)  # [chunk]

        ce = pop.map_chunks(chunk_ce, size=chunk)               # [N], the undivided run's bits
        grads = es.gradient(params, -ce, epoch)                # fitness: higher is better
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, ce.mean()

    @jax.jit
    def accuracy(params, Xs, ys):
        h = jnp.tanh(Xs @ params["W1"].T + params["b1"])
        return jnp.mean(jnp.argmax(h @ params["W2"].T + params["b2"], axis=1) == ys)

    print(f"digits (JAX): {len(Xtr)} train / {len(Xte)} test, MLP 64-{H}-10, population {N}, "
          f"rank {args.rank}, batch {b}, sigma {args.sigma}, Adam lr {args.lr}, {args.steps} "
          f"steps, jax {jax.__version__}")
    opt_state = opt.init(params)
    batch_rng = np.random.default_rng(args.seed + 1)
    t0 = time.perf_counter()
    for t in range(args.steps):
        idx = batch_rng.choice(len(Xtr), size=b, replace=False)
        params, opt_state, loss = step(params, opt_state, jnp.int32(t), Xtr[idx], ytr[idx])
        if t % 100 == 0 or t == args.steps - 1:
            print(f"step {t:4d}  loss {float(loss):.3f}  train acc "
                  f"{float(accuracy(params, Xtr, ytr)) * 100:.1f}%", flush=True)
    train_s = time.perf_counter() - t0
    test_acc = float(accuracy(params, Xte, yte))
    print(f"test accuracy {test_acc * 100:.1f}%   training {train_s:.1f} s "
          f"({train_s / args.steps * 1e3:.1f} ms/step incl. the first compilation); "
          f"compilations of the step: {step._cache_size()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
