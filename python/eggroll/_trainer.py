"""What the three trainers (eggroll.ES, eggroll.torch.ES, eggroll.jax.ES) share: the noise
stream id of a parameter name, the hyper-parameter checks (errors name the argument, with one
message each), member blocks, and the array module of an array. Importing it imports no
framework.
"""
from __future__ import annotations

import functools
import hashlib
import math
import numbers
import os
from typing import Any, Callable, Union

import numpy as np

UINT64_MAX = (1 << 64) - 1
UINT32_MAX = (1 << 32) - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)
Schedule = Union[float, Callable[[int], float]]


def param_id(name: str) -> int:
    """The noise stream id of a parameter: the first 4 bytes, read little-endian, of
    blake2b(name.encode("utf-8"), digest_size=4). Depends on the name only (never on dict
    order or on the other parameters), so adding a parameter changes no other's noise."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str, got {type(name).__name__}")
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def check_int(value: Any, name: str, lo: int, hi: int) -> int:
    """An integer in [lo, hi] (bool and floats are rejected)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    v = int(value)
    if not lo <= v <= hi:
        raise ValueError(f"{name}: must be in [{lo}, {hi}], got {v}")
    return v


def check_float(value: Any, name: str, *, positive: bool = False) -> float:
    """A float >= 0 (> 0 when positive) that stays finite, and nonzero when positive, in
    float32, the precision the trainers step in (lr=1e39 or adam_eps=1e-50 would turn every
    parameter inf or NaN)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__}")
    v = float(value)
    ok = math.isfinite(v) and 0 <= v <= FLOAT32_MAX and (not positive or np.float32(v) > 0)
    if not ok:
        raise ValueError(f"{name}: must be finite and {'> 0' if positive else '>= 0'} in "
                         f"float32 (at most 3.4e38{', at least 1.4e-45' if positive else ''}), "
                         f"got {v}")
    return v


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return bool(value)


def check_choice(value: Any, name: str, options: tuple) -> Any:
    if (value is not None and not isinstance(value, str)) or value not in options:
        raise ValueError(f"{name}: expected one of {options}, got {value!r}")
    return value


def check_schedule(value: Any, name: str, positive: bool) -> Schedule:
    """A float (checked now) or a callable epoch -> float (checked at each use)."""
    if callable(value):
        return value
    return check_float(value, name, positive=positive)


def check_names(names: Any, arg: str) -> tuple[str, ...]:
    """A str or an iterable of str (parameter names) as a tuple, TypeError naming arg."""
    if isinstance(names, str):
        names = (names,)
    try:
        out = tuple(names)
    except TypeError:
        raise TypeError(f"{arg}: expected an iterable of parameter names, got "
                        f"{type(names).__name__}") from None
    for n in out:
        if not isinstance(n, str):
            raise TypeError(f"{arg}: names must be str, got {n!r}")
    return out


def check_member_block(members: Any, population: int, name: str = "members") -> range:
    """A trainer's member block: a non-empty range(lo, hi) (step 1) inside [0, population).

    The trainers evaluate only these members (one rank's share of the population,
    eggroll.distributed) and still take the whole population's fitness in tell()."""
    if members is None:
        return range(population)
    if not isinstance(members, range):
        raise TypeError(f"{name}: expected a range(lo, hi) of member indices, got "
                        f"{type(members).__name__}")
    if members.step != 1 or len(members) == 0:
        raise ValueError(f"{name}: expected a non-empty range(lo, hi) with step 1, got {members}")
    if members.start < 0 or members.stop > population:
        raise ValueError(f"{name}: must lie inside range(0, {population}) (the population), "
                         f"got {members}")
    return members


def member_chunks(block: range, size: Any, name: str = "size") -> list[tuple[range, slice]]:
    """A member block split into consecutive chunks of `size` members (the last may be
    shorter): (members, rows) pairs, rows being the chunk's positions in the block's rows.
    How the trainers' chunks() split a population (docs/trainer.md "Evaluating in chunks")."""
    size = check_int(size, name, 1, UINT32_MAX)
    out = []
    for lo in range(0, len(block), size):
        hi = min(lo + size, len(block))
        out.append((range(block.start + lo, block.start + hi), slice(lo, hi)))
    return out


@functools.lru_cache(maxsize=1)
def _l2_bytes() -> int:
    """One core's L2 cache in bytes (sysconf, else sysfs; 1 MiB when neither says)."""
    try:
        n = int(os.sysconf("SC_LEVEL2_CACHE_SIZE"))
        if n > 0:
            return n
    except (ValueError, OSError, AttributeError):
        pass
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index2/size") as f:
            text = f.read().strip().upper()
        scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
        return int(text.rstrip("KM")) * scale
    except (OSError, ValueError):
        return 1 << 20


def chunk_size(floats_per_member: int, *, cache_bytes: int | None = None,
               min_members: int = 8) -> int:
    """Members per chunk for the trainers' chunked evaluation (docs/trainer.md "Evaluating in
    chunks"): as many as keep a chunk's widest float32 activation (floats_per_member values
    per member, e.g. rows * width) within cache_bytes, and at least min_members.

    cache_bytes defaults to twice this CPU's per-core L2: a layer's output is written, then
    read by the activation and the next layer while L2 and L3 still hold it. min_members
    bounds what every chunk repeats (a shared input's base product x W^T, the calls'
    overhead) to an eighth of the undivided run's."""
    n = check_int(floats_per_member, "floats_per_member", 1, 1 << 62)
    budget = 2 * _l2_bytes() if cache_bytes is None else check_int(cache_bytes, "cache_bytes",
                                                                   1, 1 << 62)
    floor = check_int(min_members, "min_members", 1, UINT32_MAX)
    return max(floor, budget // (4 * n))


def array_module(a: Any) -> Any:
    """The array module of a: cupy for CuPy arrays (imported only when one is seen), else numpy."""
    if type(a).__module__.split(".")[0] == "cupy":
        import cupy
        return cupy
    return np
