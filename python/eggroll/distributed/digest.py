"""Cross-rank agreement: a 64-bit digest of the parameters (the divergence check) and a
fingerprint of the run's set-up that every rank exchanges before the first generation.

Both are blake2b (hashlib) over exact bytes, so equal values give equal digests on every
machine; the errors name the first rank that differs from rank 0.
"""
from __future__ import annotations

import hashlib
import numbers
from typing import Any, Callable, Iterable, Mapping

import numpy as np

__all__ = ["DivergenceError", "SetupMismatch", "param_digest", "setup_fingerprint",
           "check_setup", "check_digests", "trainer_setup"]


class DivergenceError(RuntimeError):
    """The replicas' parameters are no longer identical (every rank raises it)."""


class SetupMismatch(ValueError):
    """The ranks were started with different set-ups (every rank raises it)."""


def param_digest(arrays: Iterable[tuple[str, Any]]) -> int:
    """64-bit blake2b of (name, dtype, shape, bytes) of every array, in the given order.

    arrays: (name, array) pairs; anything np.asarray accepts (a CPU torch tensor, a jax.Array).
    Costs one pass over the parameters (~1 GB/s), so check every k generations."""
    h = hashlib.blake2b(digest_size=8)
    for name, a in arrays:
        arr = np.ascontiguousarray(np.asarray(a))
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(memoryview(arr).cast("B"))
    return int.from_bytes(h.digest(), "little")


def _canonical(value: Any) -> bytes:
    """Exact bytes of a plain setting (floats by their IEEE bits, not a rounded repr)."""
    if isinstance(value, (bool, np.bool_)) or value is None or isinstance(value, str):
        return repr(value).encode()
    if isinstance(value, (numbers.Integral, np.integer)):
        return f"int:{int(value)}".encode()
    if isinstance(value, (numbers.Real, np.floating)):
        return b"float:" + np.float64(value).tobytes()
    if isinstance(value, Mapping):
        return b"{" + b",".join(_canonical(k) + b":" + _canonical(v)
                                for k, v in sorted(value.items())) + b"}"
    if isinstance(value, (list, tuple)):
        return b"[" + b",".join(_canonical(v) for v in value) + b"]"
    raise TypeError(f"setup: cannot fingerprint a {type(value).__name__}")


def setup_fingerprint(setup: Mapping[str, Any]) -> np.ndarray:
    """uint64 [len(setup)]: one 64-bit hash per setting, in the mapping's order."""
    out = np.empty(len(setup), dtype="<u8")
    for j, (name, value) in enumerate(setup.items()):
        h = hashlib.blake2b(name.encode() + b"=" + _canonical(value), digest_size=8)
        out[j] = int.from_bytes(h.digest(), "little")
    return out


def check_setup(gathered: Any, setup: Mapping[str, Any], rank: int) -> None:
    """gathered uint64 [W, F]: every rank's setup_fingerprint. Raises SetupMismatch naming the
    first rank and the settings that differ from rank 0 (with this rank's values)."""
    g = np.asarray(gathered)
    names = list(setup)
    if g.ndim != 2 or g.shape[1] != len(names):
        raise SetupMismatch(f"the ranks exchanged set-ups of different lengths {g.shape}: do "
                            "they run the same eggroll version?")
    differ = np.flatnonzero((g != g[0]).any(axis=1))
    if differ.size:
        r = int(differ[0])
        fields = [names[j] for j in np.flatnonzero(g[r] != g[0])]
        mine = ", ".join(f"{k}={setup[k]!r}" for k in fields)
        raise SetupMismatch(f"rank {r} differs from rank 0 in {', '.join(fields)} (rank {rank} "
                            f"has {mine}): every rank must build the same trainer (same seed, "
                            "population, hyper-parameters, initial parameters and epoch)")


def check_digests(digests: Any, epoch: int) -> None:
    """digests uint64 [W] -> DivergenceError naming the first rank that differs from rank 0."""
    d = np.asarray(digests)
    differ = np.flatnonzero(d != d[0])
    if differ.size:
        r = int(differ[0])
        raise DivergenceError(f"rank {r}'s parameters differ from rank 0's at epoch {epoch} "
                              f"(digest {int(d[r]):#018x} vs {int(d[0]):#018x}): the replicas "
                              "applied different updates (a different optimiser, dtype, device "
                              "kind or library version on that rank, or a non-deterministic "
                              "step); restart it from rank 0's checkpoint")


# The settings of the three trainers that must agree across ranks (those a trainer has).
_SETTINGS = ("population", "rank", "seed", "shaping", "group_size", "noise_reuse", "antithetic",
             "full_rank", "nonfinite", "optimizer", "weight_decay", "adam_betas", "adam_eps",
             "frozen", "exclude", "epoch", "param_ids", "shapes")


def trainer_setup(es: Any, epoch: int, params: Callable[[], Iterable[tuple[str, Any]]],
                  **extra: Any) -> dict[str, Any]:
    """The set-up a rank fingerprints: the trainer's settings (sigma and lr by their value at
    `epoch`, since schedules are functions), the digest of the initial parameters and the
    distributed options in extra."""
    setup: dict[str, Any] = {}
    for key in _SETTINGS:
        if key == "epoch":
            setup[key] = int(epoch)
        elif hasattr(es, key):
            value = getattr(es, key)
            setup[key] = sorted(value) if isinstance(value, frozenset) else value
    for key in ("sigma", "lr"):
        at = getattr(es, f"{key}_at", None)
        if at is not None:
            setup[key] = at(epoch)
        elif isinstance(getattr(es, key, None), numbers.Real):
            setup[key] = getattr(es, key)
    setup["params"] = param_digest(params())
    setup.update(extra)
    return setup
