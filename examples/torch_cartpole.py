"""CartPole-v1 with eggroll.torch.ES: a PyTorch policy reaches the maximum return of 500.

    python examples/torch_cartpole.py           # stops once the mean policy scores 500
    python examples/torch_cartpole.py --smoke   # two generations, seconds

One gymnasium CartPole environment per population member, stepped together
(gymnasium's vectorised CartPoleVectorEnv, num_envs = population). Each time step the
whole population acts in one forward pass of the nn.Module policy (observations
[population, 4]; member i uses its own low-rank perturbation of every nn.Linear weight).
A member's fitness is its episode return; es.tell() writes the ES estimate into .grad and
torch.optim.Adam steps. Every --eval-every generations the mean policy (the module itself,
unperturbed) plays --eval-episodes fresh episodes; training stops when all of them reach 500.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

EXTRA_HINT = ('this example needs torch, gymnasium and tqdm (and matplotlib for the plot): '
              'pip install torch "eggroll-hyperscale[examples]"')
DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "torch_cartpole.png"
MAX_RETURN = 500.0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generations", type=int, default=100, help="at most (default 100)")
    ap.add_argument("--population", type=int, default=64, help="members = environments")
    ap.add_argument("--hidden", type=int, default=16, help="hidden units (default 16)")
    ap.add_argument("--sigma", type=float, default=0.1, help="perturbation scale")
    ap.add_argument("--lr", type=float, default=0.05, help="Adam learning rate")
    ap.add_argument("--rank", type=int, default=1, help="rank of the perturbations")
    ap.add_argument("--eval-episodes", type=int, default=10, help="episodes of the mean policy")
    ap.add_argument("--eval-every", type=int, default=2, help="generations between evals")
    ap.add_argument("--seed", type=int, default=0, help="init, noise and episode seed")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (eggroll's ops run on them too); default: 1 on "
                         "machines with <= 2 CPUs, else torch's default; 0: torch's default")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="learning-curve PNG")
    ap.add_argument("--smoke", action="store_true", help="two generations (tests)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.generations, args.population, args.eval_episodes = 2, 8, 2
    if args.population % 2:
        ap.error("--population: must be even (antithetic pairs)")
    return args


def episode_returns(env, policy, seed: int) -> np.ndarray:
    """Run one episode in each of env.num_envs environments at once: float64 [num_envs],
    each environment's return until its first termination or truncation (500 steps).
    policy: obs float32 [E, 4] tensor -> action int [E]."""
    import torch
    obs, _ = env.reset(seed=seed)
    E = env.num_envs
    total = np.zeros(E)
    alive = np.ones(E, dtype=bool)
    while alive.any():
        action = policy(torch.from_numpy(np.asarray(obs, dtype=np.float32)))
        obs, reward, terminated, truncated, _ = env.step(action.numpy())
        total += reward * alive            # after its episode ends an env auto-resets: ignore
        alive &= ~(terminated | truncated)
    return total


def save_curve(path: Path, gens: list[int], mean: list[float], best: list[float],
               eval_gens: list[int], eval_ret: list[float], title: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    ax.plot(gens, mean, label="population mean return", lw=1.2)
    ax.plot(gens, best, label="population max", lw=0.8, alpha=0.7)
    ax.plot(eval_gens, eval_ret, "o-", ms=3.5, lw=1.5, label="mean policy (module), eval")
    ax.axhline(MAX_RETURN, color="grey", ls="--", lw=0.8, label="maximum 500")
    ax.set_xlabel("generation")
    ax.set_ylabel("episode return")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    args = _parse(argv)
    try:
        import gymnasium as gym
        import torch
        from tqdm import tqdm
    except ImportError as e:
        print(f"torch_cartpole: {EXTRA_HINT}\n  ({e})", file=sys.stderr)
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
    torch.manual_seed(args.seed)
    P = args.population
    policy = nn.Sequential(nn.Linear(4, args.hidden), nn.Tanh(), nn.Linear(args.hidden, 2))
    es = eggroll.torch.ES(policy, sigma=args.sigma, population=P, rank=args.rank,
                          seed=args.seed, shaping="centered_rank")
    opt = torch.optim.Adam(policy.parameters(), lr=args.lr)

    def make_env(n: int):
        return gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode="vector_entry_point")
    train_env, eval_env = make_env(P), make_env(args.eval_episodes)

    def act(obs: torch.Tensor) -> torch.Tensor:
        return policy(obs).argmax(dim=-1)

    def mean_policy(obs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return act(obs)

    print(f"torch CartPole-v1: MLP 4-{args.hidden}-2 policy, eggroll.torch.ES population {P} "
          f"(one gymnasium env per member), rank {args.rank}, sigma {args.sigma}, Adam lr "
          f"{args.lr}, up to {args.generations} generations, {torch.get_num_threads()} torch "
          "thread(s)")
    gens, mean_ret, best_ret, eval_gens, eval_ret = [], [], [], [], []
    solved_at = None
    bar = tqdm(range(args.generations), desc="ES", unit="gen", dynamic_ncols=True,
               mininterval=0.5, file=sys.stdout)
    for g in bar:
        with es.ask():                        # every time step: one forward for all members
            returns = episode_returns(train_env, act, seed=args.seed * 100_003 + g)
        es.tell(returns)
        opt.step()
        gens.append(g)
        mean_ret.append(float(returns.mean()))
        best_ret.append(float(returns.max()))
        if g % args.eval_every == 0 or g == args.generations - 1:
            r = episode_returns(eval_env, mean_policy, seed=10**6 + g)
            eval_gens.append(g + 1)
            eval_ret.append(float(r.mean()))
            if r.min() >= MAX_RETURN and solved_at is None:
                solved_at = g + 1
        bar.set_postfix(mean=f"{mean_ret[-1]:.0f}", eval=f"{eval_ret[-1]:.0f}", refresh=False)
        if solved_at is not None:
            break
    bar.close()
    total = time.perf_counter() - t_start
    title = (f"eggroll.torch.ES + Adam on CartPole-v1, population {P}: "
             + (f"500 after {solved_at} generations" if solved_at else "not solved"))
    if save_curve(args.out, gens, mean_ret, best_ret, eval_gens, eval_ret, title):
        print(f"learning curve     {args.out}")
    if solved_at:
        print(f"solved             every one of {args.eval_episodes} eval episodes of the mean "
              f"policy returned {MAX_RETURN:.0f} after {solved_at} generations")
    else:
        print(f"not solved         last eval mean return {eval_ret[-1]:.1f} "
              f"(max {MAX_RETURN:.0f})")
    print(f"wall time          {total:.1f} s")
    return 0 if solved_at or args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
