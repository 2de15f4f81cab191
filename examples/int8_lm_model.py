"""The all-integer minGRU byte language model of examples/int8_lm.py: int8 weights and
activations, one eggroll.perturbed_matmul_int8 call per weight matrix, integer layer norm,
integer minGRU scan, integer log-softmax by lookup tables, and EGGROLL's int8 update.

Shapes: M members, T bytes per sequence, D hidden units, V = 256 byte values. Every
activation is int8 in fixed point with 4 fractional bits (16 means 1.0), as in the paper's EGG.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

import eggroll

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
RECIP = np.round(LN_SCALE * 65536.0 / np.maximum(np.arange(128), 1)).astype(np.int32)


@dataclass(frozen=True)
class Config:
    """Model and training hyper-parameters (saved in checkpoints, so resumed runs match)."""
    hidden: int = 64           # D
    layers: int = 1
    mlp_mult: int = 4          # MLP D -> mlp_mult*D -> D, no activation (saturation only)
    sigma_shift: int = 4       # sigma = 2^-sigma_shift, as the paper's default
    rank: int = 1
    noise_reuse: int = 1
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
    """int8 weights round(16 * N(0, 1)) clipped to +-127, as the paper's EGG."""
    rng = np.random.default_rng(cfg.seed)
    return {name: np.clip(np.round(16.0 * rng.standard_normal(shape)), -127, 127)
            .astype(np.int8) for name, shape in param_shapes(cfg).items()}


def param_ids(cfg: Config) -> dict[str, int]:
    return {name: i for i, name in enumerate(param_shapes(cfg))}


def sat(a: np.ndarray) -> np.ndarray:
    """Saturating cast to int8 (the model's only nonlinearity besides the gate product)."""
    return np.clip(a, -127, 127).astype(np.int8)


def layer_norm(x: np.ndarray) -> np.ndarray:
    """Integer layer norm by mean absolute value (no sqrt, no mean subtraction, no weights):
    x int8 [..., D] -> int8 [..., D] with mean |out| ~ LN_SCALE. The division by mav is a
    multiplication by the table RECIP[mav] = round(LN_SCALE * 2^16 / mav) and a shift (the
    paper's DIVISION table, flattened to one row per mav)."""
    x32 = x.astype(np.int32)
    mav = np.maximum(np.abs(x32).sum(axis=-1, keepdims=True) // x.shape[-1], 1)
    return sat((x32 * RECIP[mav]) >> 16)


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
        return perturbed_matmul_int8(x, params[name], members=members, epoch=epoch,
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
    return {name: int8_update(W, pair_fitness, threshold=threshold, epoch=epoch, seed=cfg.seed,
                              param_id=ids[name], rank=cfg.rank, fixed_point=FIXED_POINT,
                              noise_reuse=cfg.noise_reuse)
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


# The ops: eggroll's int8 path.
perturbed_matmul_int8 = getattr(eggroll, "perturbed_matmul_int8", None)
int8_update = getattr(eggroll, "int8_update", None)
