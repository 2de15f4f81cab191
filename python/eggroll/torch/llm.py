"""Reward plumbing for fine-tuning language models with eggroll.torch.ES (docs/llm.md):
fitness per (member, prompt) shaped per prompt (a GRPO-like baseline), and the
per-generation diagnostics a user watches, through a progress bar and a logging callback.

    es = eggroll.torch.ES(model, sigma=1e-3, population=64, shaping="centered_rank")
    monitor = Monitor(es, total=steps, callback=print_every(10))
    for step in range(steps):
        with es.ask() as pop, monitor.timed() as t:
            out = model.generate(*pop.fold(prompts), ...)      # [P * b, T]
            t.tokens = out.numel()
        rewards = ...                                          # [P, b]: member i, prompt j
        stats = es.tell(group_fitness(rewards))
        opt.step()
        monitor.update(stats, rewards)
"""
from __future__ import annotations

import contextlib
import json
import time
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor

__all__ = ["group_fitness", "Monitor", "print_every", "jsonl_logger"]


def _as_matrix(rewards: Any, name: str = "rewards") -> np.ndarray:
    if isinstance(rewards, Tensor):
        rewards = rewards.detach().to("cpu", torch.float64).numpy()
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] == 0 or r.shape[1] == 0:
        raise ValueError(f"{name}: expected [members, prompts], got shape {r.shape}")
    if not np.isfinite(r).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return r


def group_fitness(rewards: Any, *, normalize: bool = True, eps: float = 1e-6) -> np.ndarray:
    """Rewards [P, b] (member i, prompt j) -> fitness [P] with a per-prompt baseline: each
    prompt's rewards minus their mean over the members (GRPO's group baseline: an easy
    prompt every member solves then counts for nothing), divided by their standard deviation
    over the members when normalize (eps keeps a prompt all members tie on at 0), then
    averaged over the prompts. float64 [P], for es.tell."""
    r = _as_matrix(rewards)
    centred = r - r.mean(axis=0, keepdims=True)
    if normalize:
        centred = centred / (r.std(axis=0, keepdims=True) + eps)
    return centred.mean(axis=1)


class _Timer:
    def __init__(self) -> None:
        self.tokens = 0
        self.seconds = 0.0


class Monitor:
    """Per-generation diagnostics: a progress bar (tqdm, when installed and `bar`) showing
    them, a history (a list of dicts) and an optional callback(record) after every update.

    A record holds: step, reward_mean / reward_max (the mean reward per member, averaged and
    maximised over the members), fitness_mean / fitness_max (what tell() saw), pair
    disagreement (antithetic populations: the fraction of (pair, prompt) whose two members
    got different rewards; 0 means this step carries no signal), weights_changed (the
    fraction of trainable weights the last optimiser step changed, when the ES measures it:
    half-precision models, or ES(track_changes=True)), tokens_per_s (of the timed block),
    seconds, plus any extra keyword given to update()."""

    def __init__(self, es: Any, total: int | None = None, *, callback: Callable | None = None,
                 bar: bool = True, desc: str = "ES") -> None:
        self.es = es
        self.callback = callback
        self.history: list[dict[str, Any]] = []
        self._timer: _Timer | None = None
        self._bar = None
        if bar:
            try:
                from tqdm.auto import tqdm
                self._bar = tqdm(total=total, desc=desc, unit="gen", dynamic_ncols=True)
            except ImportError:
                self._bar = None

    @contextlib.contextmanager
    def timed(self) -> Iterator[_Timer]:
        """Times the block (the population's generation); set .tokens inside it."""
        t = _Timer()
        start = time.perf_counter()
        try:
            yield t
        finally:
            t.seconds = time.perf_counter() - start
            self._timer = t

    def update(self, stats: dict[str, Any], rewards: Any = None, **extra: Any) -> dict[str, Any]:
        """Record one generation: stats as returned by es.tell, rewards [P, b] (optional)."""
        rec: dict[str, Any] = {"step": stats.get("epoch", len(self.history)),
                               "fitness_mean": stats.get("fitness_mean"),
                               "fitness_max": stats.get("fitness_max")}
        if rewards is not None:
            r = _as_matrix(rewards)
            per_member = r.mean(axis=1)
            rec["reward_mean"] = float(per_member.mean())
            rec["reward_max"] = float(per_member.max())
            if getattr(self.es, "antithetic", False) and r.shape[0] % 2 == 0:
                rec["pair_disagreement"] = float((r[0::2] != r[1::2]).mean())
        elif "pair_disagreement" in stats:
            rec["pair_disagreement"] = stats["pair_disagreement"]
        rec["weights_changed"] = getattr(self.es, "last_weights_changed", None)
        if self._timer is not None:
            rec["seconds"] = self._timer.seconds
            if self._timer.tokens and self._timer.seconds > 0:
                rec["tokens_per_s"] = self._timer.tokens / self._timer.seconds
            self._timer = None
        rec.update(extra)
        self.history.append(rec)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix({k: _short(v) for k, v in rec.items()
                                   if k in ("reward_mean", "pair_disagreement", "tokens_per_s",
                                            *extra)}, refresh=False)
        if self.callback is not None:
            self.callback(rec)
        return rec

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _short(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.3g}"
    return v


def print_every(n: int, printer: Callable[[str], Any] = print) -> Callable[[dict], None]:
    """A Monitor callback that prints one line every n generations."""
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")

    def callback(rec: dict[str, Any]) -> None:
        if (rec["step"] + 1) % n == 0:
            printer("  ".join(f"{k}={_short(v)}" for k, v in rec.items() if v is not None))
    return callback


def jsonl_logger(path: Any) -> Callable[[dict], None]:
    """A Monitor callback appending each record as one JSON line to path."""
    def callback(rec: dict[str, Any]) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
    return callback
