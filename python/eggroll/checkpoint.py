"""ES checkpoints: state_dict <-> ES, and atomic .npz files (no pickle).

A state dict is plain data: python scalars and strings, "frozen" a list of names,
"adam_betas" a pair of floats, and three dicts of float32 arrays ("params", "adam_m",
"adam_v"; the moments are empty for SGD). In a file every entry is one .npy member of the
.npz: scalars as 0-d arrays, the dicts flattened to "params/<name>" etc. A schedule (callable
sigma or lr) is stored as None in the dict and left out of the file.
A CuPy-held ES gives a state dict of CuPy arrays (from_state_dict resumes it on the GPU);
its files hold NumPy copies (load gives a NumPy ES; pass cupy.asarray'd params to resume on
the GPU).
"""
from __future__ import annotations

import glob
import os
import tempfile
from typing import Any, Mapping

import numpy as np

from ._trainer import array_module as _xp

FORMAT = "eggroll.ES"
VERSION = 1
ARRAY_GROUPS = ("params", "adam_m", "adam_v")
SCALARS = ("epoch", "seed", "population", "rank", "optimizer", "shaping", "group_size",
           "noise_reuse", "antithetic", "weight_decay", "full_rank", "nonfinite", "adam_eps",
           "sigma", "lr")
OPTIONAL = ("shaping", "sigma", "lr")   # None allowed (left out of files)


def _host(a: Any) -> np.ndarray:
    """A NumPy array (CuPy arrays are copied to the host: files hold NumPy arrays)."""
    return a.get() if _xp(a) is not np else np.asarray(a)


def state_dict(es: Any) -> dict[str, Any]:
    state: dict[str, Any] = {"format": FORMAT, "version": VERSION}
    for key in SCALARS:
        value = getattr(es, key)
        state[key] = None if callable(value) else value
    state["frozen"] = list(es.frozen)
    state["adam_betas"] = tuple(es.adam_betas)
    state["params"] = {n: p.copy() for n, p in es._params.items()}
    state["adam_m"] = {n: a.copy() for n, a in es._adam_m.items()}
    state["adam_v"] = {n: a.copy() for n, a in es._adam_v.items()}
    return state


def from_state_dict(cls: Any, state: Mapping[str, Any], *, sigma: Any, lr: Any) -> Any:
    if not isinstance(state, Mapping):
        raise TypeError(f"state: expected a dict from ES.state_dict(), got "
                        f"{type(state).__name__}")
    if state.get("format") != FORMAT or state.get("version") != VERSION:
        raise ValueError(f"state: not an {FORMAT} version {VERSION} state dict (format="
                         f"{state.get('format')!r}, version={state.get('version')!r})")
    missing = [k for k in SCALARS + ARRAY_GROUPS + ("frozen", "adam_betas")
               if k not in state and k not in OPTIONAL]
    if missing:
        raise ValueError(f"state: missing entries {missing}")
    hyper = {k: state.get(k) for k in SCALARS if k not in ("epoch", "sigma", "lr")}
    for key, given in (("sigma", sigma), ("lr", lr)):
        if given is None:
            given = state.get(key)
            if given is None:
                raise ValueError(f"{key}: the checkpoint was made with a {key} schedule (a "
                                 f"callable, which cannot be saved); pass {key}= again")
        hyper[key] = given
    es = cls(state["params"], frozen=state["frozen"], adam_betas=state["adam_betas"], **hyper)
    epoch = state["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"state: epoch must be an int >= 0, got {epoch!r}")
    es.epoch = int(epoch)
    if es.optimizer == "adam":
        for group, target in (("adam_m", es._adam_m), ("adam_v", es._adam_v)):
            saved = state[group]
            for name in es.trainable:
                a = saved.get(name) if isinstance(saved, Mapping) else None
                if a is None:
                    raise ValueError(f"state: {group} has no entry for {name!r}")
                xp = _xp(target[name])           # numpy, or cupy for a CuPy-held ES
                a = xp.asarray(a)
                if a.shape != target[name].shape:
                    raise ValueError(f"state: {group}[{name!r}] has shape {a.shape}, expected "
                                     f"{target[name].shape}")
                a = xp.array(a, dtype=np.float32, order="C", copy=True)
                # NaN or negative moments would turn the parameters NaN at the next step
                if not bool(xp.isfinite(a).all()) or (group == "adam_v" and bool((a < 0).any())):
                    raise ValueError(f"state: {group}[{name!r}] must be finite"
                                     f"{' and >= 0' if group == 'adam_v' else ''}")
                target[name] = a
    return es


def _flatten(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    flat: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if key in ARRAY_GROUPS:
            for name, arr in value.items():
                flat[f"{key}/{name}"] = _host(arr)
        elif key == "frozen":
            flat[key] = np.array(list(value), dtype=np.str_)
        elif value is not None:
            flat[key] = np.asarray(value)
    for key, arr in flat.items():
        if arr.dtype.hasobject:
            raise TypeError(f"state: {key!r} is not plain data (dtype {arr.dtype}); "
                            "checkpoints hold numbers, strings and arrays only")
    return flat


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    state: dict[str, Any] = {group: {} for group in ARRAY_GROUPS}
    for key in OPTIONAL:
        state[key] = None
    for key, arr in flat.items():
        group, sep, name = key.partition("/")
        if sep and group in ARRAY_GROUPS:
            state[group][name] = arr
        elif key == "frozen":
            state[key] = [str(s) for s in arr.tolist()]
        elif key == "adam_betas":
            state[key] = tuple(float(b) for b in arr.tolist())
        else:
            state[key] = arr.item()
    return state


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save(state: Mapping[str, Any], path: Any) -> None:
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}."
    # Temporary files of saves that were killed before their rename: never read, removed here.
    for stale in glob.glob(os.path.join(glob.escape(directory), glob.escape(prefix) + "*.tmp")):
        try:
            os.unlink(stale)
        except OSError:
            pass
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())     # a checkpoint is a normal file: honour the umask
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **_flatten(state))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (POSIX; harmless where directories cannot be opened)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def load(path: Any) -> dict[str, Any]:
    with np.load(os.fspath(path), allow_pickle=False) as z:
        flat = {k: z[k] for k in z.files}
    fmt = flat.get("format")
    if fmt is None or fmt.shape != () or str(fmt) != FORMAT:
        raise ValueError(f"path: {os.fspath(path)!r} is not an {FORMAT} checkpoint (no "
                         f"'format' entry {FORMAT!r}; files written by ES.save have one)")
    for key, arr in flat.items():
        group = key.partition("/")[0]
        if group not in ARRAY_GROUPS and key not in ("frozen", "adam_betas") and arr.shape != ():
            raise ValueError(f"path: entry {key!r} has shape {arr.shape}, expected a scalar")
    return _unflatten(flat)
