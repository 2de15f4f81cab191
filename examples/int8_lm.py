"""All-integer minGRU byte language model trained with EGGROLL's int8 path on the Python
standard library's own source files (the paper's EGG, scaled to a CPU): progress bar,
bits/byte on train and held-out data, a learning-curve PNG, and checkpoints that resume
bit-exactly.

    python examples/int8_lm.py                     # default run (~25 min on 2 cores)
    python examples/int8_lm.py --smoke             # a few steps, seconds
    python examples/int8_lm.py --resume            # continue from the checkpoint
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import eggroll

HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------------------------
# The model: shapes M members, T bytes per sequence, D hidden units, V = 256 byte values.
# Every weight and activation is int8 in fixed point with 4 fractional bits (16 = 1.0).
# --------------------------------------------------------------------------------------------
V = 256                       # vocabulary: raw bytes
FIXED_POINT = 4               # fractional bits of every int8 weight and activation
LN_SCALE = 16                 # integer layer norm output: mean |x| = 1.0 in fixed point

# Integer log-softmax tables. A logit y (int8) stands for 2^(y/16): logits are in units of
# 1/16 bit, so log2 p(byte) = (y_byte - LOG2(sum_j EXP2[y_j + 128])) / 16 with
# EXP2[i] = round(16 * 2^(i/16)) and LOG2(s) = 16 * log2(s / 16) computed from the position of
# s's top bit plus a 256-entry table of the next 8 bits (the paper tabulates LOG2 over 2^28
# entries; this is the same function to within a table step of 1/16 bit and needs 256).
EXP2 = np.round(16.0 * 2.0 ** (np.arange(256) / 16.0)).astype(np.int64)
EXP2_32 = EXP2.astype(np.int32)        # <= 2^20: a row of 256 sums to < 2^28
_MANT = np.round(16.0 * np.log2((256.0 + np.arange(256)) / 256.0)).astype(np.int64)
_POW2 = (np.int64(1) << np.arange(1, 41, dtype=np.int64))
RECIP = -((-LN_SCALE * 65536) // np.maximum(np.arange(128), 1)).astype(np.int32)  # ceil


@dataclass(frozen=True)
class Config:
    """Model and training hyper-parameters (saved in checkpoints, so resumed runs match)."""
    hidden: int = 64           # D
    layers: int = 1
    mlp_mult: int = 4          # MLP D -> mlp_mult*D -> D, no activation (saturation only)
    sigma_shift: int = 4       # sigma = 2^-sigma_shift, as the paper's default
    rank: int = 1
    noise_reuse: int = 1
    init_std: int = 16         # weights start as round(init_std * N(0, 1)); the paper: 16
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def param_shapes(cfg: Config) -> dict[str, tuple[int, int]]:
    """name -> (out, in) of every int8 matrix, in param_id order."""
    D = cfg.hidden
    shapes = {"emb": (D, V)}
    for layer in range(cfg.layers):
        shapes[f"gru{layer}"] = (2 * D, D)               # [forget gate; candidate] from x_t
        shapes[f"up{layer}"] = (cfg.mlp_mult * D, D)
        shapes[f"down{layer}"] = (D, cfg.mlp_mult * D)
    shapes["head"] = (V, D)
    return shapes


def init_params(cfg: Config) -> dict[str, np.ndarray]:
    """int8 weights round(init_std * N(0, 1)) clipped to +-127 (the paper's EGG: 16)."""
    rng = np.random.default_rng(cfg.seed)
    return {name: np.clip(np.round(cfg.init_std * rng.standard_normal(shape)), -127, 127)
            .astype(np.int8) for name, shape in param_shapes(cfg).items()}


def param_ids(cfg: Config) -> dict[str, int]:
    return {name: i for i, name in enumerate(param_shapes(cfg))}


def sat(a: np.ndarray) -> np.ndarray:
    """Saturating cast to int8 (the model's only nonlinearity besides the gate product)."""
    return np.clip(a, -127, 127).astype(np.int8)


def layer_norm(x: np.ndarray) -> np.ndarray:
    """Integer layer norm by mean absolute value (no sqrt, no mean subtraction, no weights):
    x int8 [..., D] -> int8 [..., D], out = trunc(x * LN_SCALE / mav) with
    mav = max(1, sum|x| // D), so mean |out| ~ LN_SCALE. The division is a multiplication by
    the table RECIP[mav] = ceil(LN_SCALE * 2^16 / mav) and a shift (the paper's DIVISION
    table, one entry per mav): exact, since |x| * RECIP overshoots by less than 127/2^16,
    closer than any quotient with a denominator <= 127 comes to the next integer."""
    x32 = x.astype(np.int32)
    mav = np.maximum(np.abs(x32).sum(axis=-1, keepdims=True) // x.shape[-1], 1)
    q = (np.abs(x32) * RECIP[mav]) >> 16
    return sat(np.where(x32 < 0, -q, q))


def mingru_scan(gates: np.ndarray) -> np.ndarray:
    """Integer minGRU with identity activations over time.

    gates int8 [M, T, 2D] = [f; c] computed from x_t only (so one matmul for all t);
    h_t = h_{t-1} + ((f_t + 127) * (c_t - h_{t-1})) >> 8, h_0 = 0: a convex mix, so h stays
    in int8 range without clipping. Returns h int8 [M, T, D]."""
    M, T, D2 = gates.shape
    D = D2 // 2
    a = gates[..., :D].astype(np.int32) + 127            # forget weight in [0, 254] / 256
    c = gates[..., D:].astype(np.int32)
    h = np.zeros((M, D), np.int32)
    out = np.empty((M, T, D), np.int8)
    for t in range(T):
        h = h + ((a[:, t] * (c[:, t] - h)) >> 8)
        out[:, t] = h
    return out


def one_hot(tokens: np.ndarray) -> np.ndarray:
    """tokens uint8 [M, T] -> int8 [M, T, 256] holding 127 at each byte (the int8 '1')."""
    x = np.zeros(tokens.shape + (V,), np.int8)
    np.put_along_axis(x, tokens[..., None].astype(np.intp), 127, axis=-1)
    return x


def forward(params: dict[str, np.ndarray], cfg: Config, tokens: np.ndarray, *,
            members: range | None, epoch: int) -> np.ndarray:
    """Logits int8 [M, T, 256] (units of 1/16 bit) for tokens uint8 [M, T].

    members=range(M): member i runs with its own perturbation (antithetic pairs 2k, 2k+1);
    members=None: the unperturbed mean model. Each weight matrix is one
    eggroll.perturbed_matmul_int8 call over all M*T rows."""
    ids = param_ids(cfg)

    def mm(x: np.ndarray, name: str) -> np.ndarray:
        return eggroll.perturbed_matmul_int8(x, params[name], members=members, epoch=epoch,
                                     seed=cfg.seed, param_id=ids[name], rank=cfg.rank,
                                     sigma_shift=cfg.sigma_shift, fixed_point=FIXED_POINT,
                                     noise_reuse=cfg.noise_reuse)

    y = layer_norm(mm(one_hot(tokens), "emb"))
    for layer in range(cfg.layers):
        h = mingru_scan(mm(layer_norm(y), f"gru{layer}"))
        y = sat(y.astype(np.int16) + h)
        m = mm(mm(layer_norm(y), f"up{layer}"), f"down{layer}")
        y = sat(y.astype(np.int16) + m)
    return mm(layer_norm(y), "head")


def _log2_table(s: np.ndarray) -> np.ndarray:
    """16 * log2(s / 16) for int64 s >= 2^9, to within one table step (integer only)."""
    e = (s[..., None] >= _POW2).sum(axis=-1)                 # floor(log2 s)
    top = (s >> (e - 8)) - 256                               # next 8 bits below the top one
    return 16 * e + _MANT[top] - 64


def int_log_probs(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Integer log-softmax by lookup tables: 16 * log2 p(target), int64 [M, T]."""
    idx = logits.astype(np.int32) + 128
    s = EXP2_32[idx].sum(axis=-1, dtype=np.int64)
    tgt = np.take_along_axis(idx, targets[..., None].astype(np.intp), axis=-1)[..., 0]
    return tgt - _log2_table(s)


def float_bits(logits: np.ndarray, targets: np.ndarray) -> float:
    """Exact bits/byte of int8 logits (units of 1/16 bit), float64 log-softmax: for reports."""
    z = logits.astype(np.float64) / 16.0
    zmax = z.max(axis=-1, keepdims=True)
    lse = zmax[..., 0] + np.log2(np.exp2(z - zmax).sum(axis=-1))
    zt = np.take_along_axis(z, targets[..., None].astype(np.intp), axis=-1)[..., 0]
    return float((lse - zt).mean())


def fitness(params: dict[str, np.ndarray], cfg: Config, windows: np.ndarray,
            epoch: int) -> np.ndarray:
    """Integer fitness of every member: the sum of its LUT log-probs (1/16 bit) of the next
    bytes. windows uint8 [P, T+1], one per antithetic pair (members 2k, 2k+1 share window k).
    Returns int64 [2P]."""
    seqs = np.repeat(windows, 2, axis=0)
    logits = forward(params, cfg, seqs[:, :-1], members=range(seqs.shape[0]), epoch=epoch)
    return int_log_probs(logits, seqs[:, 1:]).sum(axis=1)


def update(params: dict[str, np.ndarray], cfg: Config, pair_fitness: np.ndarray,
           threshold: int, epoch: int) -> dict[str, np.ndarray]:
    """EGGROLL's integer update of every matrix: W +- 1 where |sum_k f_k A_k B_k^T| >= T."""
    ids = param_ids(cfg)
    return {name: eggroll.int8_update(W, pair_fitness, threshold=threshold, epoch=epoch,
                                      seed=cfg.seed, param_id=ids[name], rank=cfg.rank,
                                      fixed_point=FIXED_POINT, noise_reuse=cfg.noise_reuse)
            for name, W in params.items()}


def threshold_for(alpha: float, pairs: int, rank: int = 1) -> int:
    """Vote threshold that moves about a fraction alpha of the weights when the votes are
    noise: Z = sum of `pairs` terms f_k A B with int8 noise of std 16 (so std 256 * sqrt(rank
    * pairs)); T = z_{1-alpha/2} * that std (the paper's z-test rule), at least 1."""
    from statistics import NormalDist
    z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    return max(1, int(z * 256.0 * math.sqrt(rank * pairs)))


def evaluate(params: dict[str, np.ndarray], cfg: Config, windows: np.ndarray,
             batch: int = 256) -> float:
    """Bits/byte of the mean model on windows uint8 [K, T+1] (state reset per window)."""
    total, count = 0.0, 0
    for i in range(0, windows.shape[0], batch):
        w = windows[i:i + batch]
        logits = forward(params, cfg, w[:, :-1], members=None, epoch=0)
        total += float_bits(logits, w[:, 1:]) * w[:, 1:].size
        count += w[:, 1:].size
    return total / count



# --------------------------------------------------------------------------------------------
# Corpus and baselines
# --------------------------------------------------------------------------------------------

def stdlib_files(root: str | None = None) -> list[Path]:
    """Every *.py file of the standard library, in a fixed (sorted) order; site-packages and
    caches skipped, so the corpus is the interpreter's own code only."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "__pycache__"))
        out += [Path(dirpath) / f for f in sorted(files) if f.endswith(".py")]
    return out


def load_corpus(max_bytes: int, holdout_every: int = 10, root: str | None = None
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """(train, held-out) uint8 byte arrays and the number of files read. Files in sorted
    order until max_bytes; every holdout_every-th file is held out; each file is followed by
    a 0 byte (a document separator that source files never contain)."""
    train, held = [], []
    size = 0
    files = stdlib_files(root)
    for i, path in enumerate(files):
        data = path.read_bytes().replace(b"\0", b"") + b"\0"
        (held if i % holdout_every == holdout_every - 1 else train).append(data)
        size += len(data)
        if size >= max_bytes:
            break
    return (np.frombuffer(b"".join(train), np.uint8), np.frombuffer(b"".join(held), np.uint8),
            i + 1)


def baselines(train: np.ndarray, held: np.ndarray) -> tuple[float, float]:
    """(unigram, bigram) bits/byte on the held-out bytes, counts from train, add-one smoothing."""
    uni = np.bincount(train, minlength=256).astype(np.float64) + 1.0
    p1 = uni / uni.sum()
    unigram = float(-np.log2(p1[held]).mean())
    big = np.zeros((256, 256), np.float64)
    np.add.at(big, (train[:-1], train[1:]), 1.0)
    big += 1.0
    p2 = big / big.sum(axis=1, keepdims=True)
    bigram = float(-np.log2(p2[held[:-1], held[1:]]).mean())
    return unigram, bigram


def windows_at(data: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """uint8 [len(starts), length] slices of data."""
    return data[starts[:, None] + np.arange(length)[None, :]]


def fixed_windows(data: np.ndarray, count: int, length: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 1 << 20])
    return windows_at(data, rng.integers(0, data.size - length, count), length)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

def alpha_at(step: int, args: argparse.Namespace) -> float:
    """Fraction of weights the update aims to move: alpha0 / (1 + step / decay), floored."""
    return max(args.alpha_min, args.alpha / (1.0 + step / args.alpha_decay))


def save_checkpoint(path: Path, params: dict, cfg: Config, step: int, history: dict,
                    args: argparse.Namespace, elapsed: float) -> None:
    """Atomic: written to a temporary file, then renamed over the old checkpoint."""
    tmp = path.with_suffix(".tmp.npz")
    meta = {"config": cfg.as_dict(), "step": step, "elapsed": elapsed,
            "train_args": {k: getattr(args, k) for k in TRAIN_ARGS}}
    arrays = {f"param_{k}": v for k, v in params.items()}
    arrays.update({f"hist_{k}": np.asarray(v, dtype=np.float64) for k, v in history.items()})
    with open(tmp, "wb") as fh:
        np.savez(fh, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> tuple[dict, Config, int, dict, dict, float]:
    """(weights, config, step, history, fixed hyper-parameters, training seconds so far)."""
    with np.load(path) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        params = {k[6:]: z[k].copy() for k in z.files if k.startswith("param_")}
        history = {k[5:]: z[k].tolist() for k in z.files if k.startswith("hist_")}
    return (params, Config(**meta["config"]), meta["step"], history, meta["train_args"],
            meta["elapsed"])


# hyper-parameters that must not change when a run is resumed
TRAIN_ARGS = ("population", "seq_len", "alpha", "alpha_min", "alpha_decay", "eval_every",
              "eval_windows", "max_bytes")
HIST_KEYS = ("step", "time", "train_bits", "heldout_bits", "pop_bits")


def train(args: argparse.Namespace) -> dict:
    png = Path(args.out)
    png.parent.mkdir(parents=True, exist_ok=True)
    ckpt = Path(args.checkpoint) if args.checkpoint else png.with_suffix(".npz")
    t_start = time.perf_counter()

    # the checkpoint first: it fixes the hyper-parameters, the corpus cap among them
    if args.resume and ckpt.exists():
        params, cfg, step, history, targs, elapsed0 = load_checkpoint(ckpt)
        for k in TRAIN_ARGS:
            setattr(args, k, targs[k])
        print(f"resumed {ckpt} at step {step} ({cfg})")
    else:
        if args.resume:
            print(f"no checkpoint at {ckpt}: starting from scratch")
        cfg = Config(hidden=args.hidden, layers=args.layers, mlp_mult=args.mlp_mult,
                     sigma_shift=args.sigma_shift, noise_reuse=args.noise_reuse,
                     init_std=args.init_std, seed=args.seed)
        params, step, elapsed0 = init_params(cfg), 0, 0.0
        history = {k: [] for k in HIST_KEYS}

    train_bytes, held_bytes, nfiles = load_corpus(args.max_bytes)
    unigram, bigram = baselines(train_bytes, held_bytes)
    print(f"corpus: {nfiles} stdlib files, {train_bytes.size:,} train / {held_bytes.size:,} "
          f"held-out bytes (every 10th file)")
    print(f"baselines (held-out bits/byte): unigram {unigram:.3f}, bigram {bigram:.3f}")
    n_params = sum(w.size for w in params.values())
    pairs = args.population // 2
    print(f"model: {cfg.layers} minGRU layer(s), hidden {cfg.hidden}, {n_params:,} int8 "
          f"weights; population {args.population} ({pairs} pairs x {args.seq_len} bytes)")

    eval_train = fixed_windows(train_bytes, args.eval_windows, args.seq_len + 1, cfg.seed)
    eval_held = fixed_windows(held_bytes, args.eval_windows, args.seq_len + 1, cfg.seed)

    def log_eval(step: int, elapsed: float, pop_bits: float) -> tuple[float, float]:
        tr = evaluate(params, cfg, eval_train)
        he = evaluate(params, cfg, eval_held)
        for k, v in zip(HIST_KEYS, (step, elapsed, tr, he, pop_bits)):
            history[k].append(v)
        return tr, he

    if step == 0 and not history["step"]:
        log_eval(0, 0.0, float("nan"))

    budget_s = args.minutes * 60.0 if args.minutes else float("inf")
    t_loop = time.perf_counter() - elapsed0
    try:
        from tqdm import tqdm
        # a time budget decides when the run ends: the bar then counts steps without a total
        bar = tqdm(total=None if args.minutes else args.steps, initial=step, unit="step",
                   dynamic_ncols=True)
    except ImportError:
        bar = None
    pop_bits = float("nan")
    while step < args.steps and time.perf_counter() - t_loop < budget_s:
        rng = np.random.default_rng([cfg.seed, step])           # data keyed by step: resumable
        starts = rng.integers(0, train_bytes.size - args.seq_len - 1, pairs)
        windows = windows_at(train_bytes, starts, args.seq_len + 1)
        fit = fitness(params, cfg, windows, epoch=step)
        pair_f = eggroll.antithetic_sign(fit.astype(np.float32)).astype(np.int8)
        thr = threshold_for(alpha_at(step, args), pairs, cfg.rank)
        params = update(params, cfg, pair_f, thr, epoch=step)
        pop_bits = float(-fit.mean() / 16.0 / args.seq_len)    # LUT bits/byte of the members
        step += 1
        if bar is not None:
            bar.update(1)
        if step % args.eval_every == 0 or step == args.steps:
            tr, he = log_eval(step, time.perf_counter() - t_loop, pop_bits)
            msg = f"step {step}: train {tr:.3f}  held-out {he:.3f}  population {pop_bits:.3f}"
            if bar is not None:
                bar.set_postfix_str(f"held-out {he:.3f} b/B")
                bar.write(msg)
            else:
                print(msg)
        if args.checkpoint_every and step % args.checkpoint_every == 0:
            save_checkpoint(ckpt, params, cfg, step, history, args,
                            time.perf_counter() - t_loop)
    if bar is not None:
        bar.close()
    if not history["step"] or history["step"][-1] != step:
        log_eval(step, time.perf_counter() - t_loop, pop_bits)
    elapsed = time.perf_counter() - t_loop
    save_checkpoint(ckpt, params, cfg, step, history, args, elapsed)

    final_held = evaluate(params, cfg, fixed_windows(held_bytes, args.final_windows,
                                                        args.seq_len + 1, cfg.seed + 1))
    result = {"steps": step, "train_seconds": elapsed, "unigram": unigram, "bigram": bigram,
              "train_bits": history["train_bits"][-1], "heldout_bits": history["heldout_bits"][-1],
              "final_heldout_bits": final_held, "n_params": n_params,
              "wall_seconds": time.perf_counter() - t_start}
    print(f"held-out bits/byte {final_held:.3f} on {args.final_windows} fresh windows "
          f"(unigram {unigram:.3f} -> {unigram - final_held:+.3f}, bigram {bigram:.3f} -> "
          f"{bigram - final_held:+.3f}); train {result['train_bits']:.3f}")
    print(f"{step} steps in {elapsed:.0f} s ({elapsed / max(step, 1):.2f} s/step); "
          f"wall time {result['wall_seconds']:.0f} s; checkpoint {ckpt}")
    plot(history, unigram, bigram, png, args)
    with open(png.with_suffix(".json"), "w") as fh:
        json.dump(result, fh, indent=1)
    return result


def plot(history: dict, unigram: float, bigram: float, path: Path,
         args: argparse.Namespace) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG (pip install matplotlib)", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(history["step"], history["train_bits"], label="train (mean model)")
    ax.plot(history["step"], history["heldout_bits"], label="held-out (mean model)")
    ax.axhline(unigram, color="grey", ls="--", lw=1, label=f"unigram {unigram:.2f}")
    ax.axhline(bigram, color="grey", ls=":", lw=1, label=f"bigram {bigram:.2f}")
    ax.set_xlabel("step (one int8 update)")
    ax.set_ylabel("bits / byte")
    ax.set_title(f"int8 minGRU LM on the stdlib, EGGROLL int8, population {args.population}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"curve: {path}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--minutes", type=float, default=25.0, help="training time budget (0: none)")
    p.add_argument("--steps", type=int, default=100000, help="step budget")
    p.add_argument("--population", type=int, default=512, help="members (even)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--mlp-mult", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=64, help="bytes per member per step")
    p.add_argument("--sigma-shift", type=int, default=4, help="sigma = 2^-sigma_shift")
    p.add_argument("--noise-reuse", type=int, default=1)
    p.add_argument("--init-std", type=int, default=16,
                   help="initial weights round(init_std * N(0,1)): each +-1 update is 1/init_std")
    p.add_argument("--alpha", type=float, default=1.0,
                   help="initial fraction of weights moved (1: every nonzero vote)")
    p.add_argument("--alpha-min", type=float, default=0.1)
    p.add_argument("--alpha-decay", type=float, default=1000.0, help="steps to halve alpha")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-windows", type=int, default=256)
    p.add_argument("--final-windows", type=int, default=1024)
    p.add_argument("--max-bytes", type=int, default=16 << 20, help="corpus cap")
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "out" / "int8_lm.png"),
                   help="learning-curve PNG; the numbers go next to it as .json")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint .npz (default: --out with the suffix .npz)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    p.add_argument("--smoke", action="store_true", help="a few tiny steps (CI)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.population < 2 or args.population % 2:
        print("--population: expected an even number >= 2", file=sys.stderr)
        return 2
    if not 0.0 < args.alpha_min <= args.alpha <= 1.0:
        print("--alpha: expected 0 < --alpha-min <= --alpha <= 1", file=sys.stderr)
        return 2
    if args.smoke:
        args.steps, args.minutes = min(args.steps, 4), 0
        args.population, args.hidden, args.seq_len = 16, 16, 16
        args.eval_every, args.eval_windows, args.final_windows = 2, 8, 8
        args.max_bytes = 1 << 20
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
