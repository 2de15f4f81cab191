"""The wire format: what one rank sends per generation, and how the gathered frames become
the whole population's fitness.

A frame is a uint8 array of the same size on every rank and generation (all-gathers want
equal sizes, also from a rank that is out of step):

    byte 0          status: 0 ok, 1 this rank's fitness was malformed, 2 non-finite fitness
                    in the packed sign form (which cannot carry it)
    byte 1          1 when the digest below is set (a divergence-check generation), else 0
    bytes 2-5       the rank's epoch, little-endian uint32 (every rank must be at the same)
    bytes 6-13      the rank's parameter digest (eggroll.distributed.digest), little-endian
    payload         "float32": the block's fitness as little-endian float32, 4 bytes per
                    member, padded to the largest block (at most one pair more).
                    "sign": one 2-bit code per antithetic pair, sign(f[2k] - f[2k+1]) (the
                    eggroll.antithetic_sign vote): 0 -> 0, +1 -> 1, -1 -> 2, 3 non-finite;
                    four pairs per byte, pair j in bits 2 (j % 4) of byte j // 4.

So a generation moves W frames of HEADER + 4 * max_block bytes ("float32") or
HEADER + ceil(max_block / 8) bytes ("sign") to every rank (HEADER = 14).
The sign form matches the trainers' shaping="antithetic_sign": decode() turns each vote c
into the member pair (c, 0), whose antithetic_sign is c again, so tell() computes exactly
the update it computes from the raw fitness in one process.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import antithetic_sign
from .plan import ShardPlan

__all__ = ["MODES", "Wire", "WireError", "pack_signs", "unpack_signs", "expand_signs"]

MODES = ("float32", "sign")
OK, MALFORMED, NONFINITE = 0, 1, 2
HEADER = 14
_CODE = {0.0: 0, 1.0: 1, -1.0: 2}
_VOTE = np.array([0.0, 1.0, -1.0, np.nan], dtype=np.float32)   # code -> vote (3: non-finite)


class WireError(ValueError):
    """A rank's fitness could not be sent (every rank raises it, naming that rank)."""


def pack_signs(votes: np.ndarray) -> np.ndarray:
    """float32 [P] votes in {-1, 0, 1} (NaN: non-finite) -> uint8 [ceil(P / 4)] codes."""
    v = np.asarray(votes, dtype=np.float32)
    codes = np.full(v.shape, 3, dtype=np.uint8)
    for value, code in _CODE.items():
        codes[v == value] = code
    padded = np.zeros(-(-v.size // 4) * 4, dtype=np.uint8)
    padded[:v.size] = codes
    q = padded.reshape(-1, 4)
    return (q[:, 0] | (q[:, 1] << 2) | (q[:, 2] << 4) | (q[:, 3] << 6)).astype(np.uint8)


def unpack_signs(packed: np.ndarray, pairs: int) -> np.ndarray:
    """uint8 codes -> float32 [pairs] votes (NaN where a non-finite pair was sent)."""
    b = np.asarray(packed, dtype=np.uint8)
    codes = np.stack([(b >> s) & 3 for s in (0, 2, 4, 6)], axis=1).reshape(-1)[:pairs]
    return _VOTE[codes]


def expand_signs(votes: np.ndarray) -> np.ndarray:
    """float32 [P] votes -> float32 [2P] member fitness (c_k, 0): what tell() takes when the
    trainer shapes with "antithetic_sign" (its vote sign(c_k - 0) is c_k again)."""
    v = np.asarray(votes, dtype=np.float32)
    out = np.zeros(2 * v.size, dtype=np.float32)
    out[0::2] = v
    return out


class Wire:
    """Encode one rank's block fitness into a frame; decode all ranks' frames (in rank order)
    into the population's fitness, identically on every rank."""

    def __init__(self, plan: ShardPlan, mode: str = "float32") -> None:
        if mode not in MODES:
            raise ValueError(f"wire: expected one of {MODES}, got {mode!r}")
        if mode == "sign" and not plan.antithetic:
            raise ValueError("wire: the 'sign' form sends one vote per antithetic pair; it "
                             "needs antithetic=True")
        self.plan = plan
        self.mode = mode
        if mode == "float32":
            self.payload = 4 * plan.max_block
        else:
            self.payload = -(-(plan.max_block // 2) // 4)

    @property
    def frame_size(self) -> int:
        """Bytes one rank sends per generation."""
        return HEADER + self.payload

    def encode(self, rank: int, epoch: int, fitness: Any, digest: int | None = None
               ) -> tuple[np.ndarray, str | None]:
        """(frame uint8 [frame_size], problem): problem is this rank's error message (status
        != 0) or None. A malformed block still yields a frame, so no rank is left waiting."""
        block = self.plan.block(rank)
        frame = np.zeros(self.frame_size, dtype=np.uint8)
        frame[2:6] = np.frombuffer(int(epoch).to_bytes(4, "little"), dtype=np.uint8)
        if digest is not None:
            frame[1] = 1
            frame[6:14] = np.frombuffer(int(digest).to_bytes(8, "little"), dtype=np.uint8)
        try:
            f = np.asarray(fitness)
        except Exception as e:   # noqa: BLE001 - any unconvertible object is a malformed block
            f, problem = None, f"could not be read as an array ({e})"
        else:
            problem = None
            if f.dtype.kind not in "fiu":
                problem = f"has dtype {f.dtype}, expected real numbers"
            elif f.shape != (len(block),):
                problem = (f"has shape {f.shape}, expected ({len(block)},) for its block "
                           f"{block}")
        if problem is not None:
            frame[0] = MALFORMED
            return frame, f"rank {rank}'s fitness {problem}"
        f = f.astype(np.float32)
        if self.mode == "float32":
            frame[HEADER:HEADER + 4 * f.size] = np.frombuffer(f.astype("<f4").tobytes(),
                                                              dtype=np.uint8)
            return frame, None
        bad = ~np.isfinite(f)
        if bad.any():
            frame[0] = NONFINITE
            where = (block.start + np.flatnonzero(bad)[:8]).tolist()
            return frame, (f"rank {rank}'s fitness has non-finite values at members {where}; "
                           "the 'sign' wire form carries signs only (use wire='float32' with "
                           "nonfinite='worst' to rank them last)")
        packed = pack_signs(antithetic_sign(f))
        frame[HEADER:HEADER + packed.size] = packed
        return frame, None

    def decode(self, frames: Any, epoch: int, own_problem: str | None = None
               ) -> tuple[np.ndarray, np.ndarray | None]:
        """frames uint8 [W, frame_size] (rank order) -> (fitness float32 [N] for tell(),
        digests uint64 [W] or None). Raises WireError naming the first rank whose frame
        carries a bad status (with the full message on that rank itself) or another epoch."""
        fr = np.asarray(frames, dtype=np.uint8)
        W = self.plan.world_size
        if fr.shape != (W, self.frame_size):
            raise WireError(f"frames: expected [{W}, {self.frame_size}], got {fr.shape} (do "
                            "all ranks run the same eggroll version and set-up?)")
        epochs = np.frombuffer(np.ascontiguousarray(fr[:, 2:6]).tobytes(), dtype="<u4")
        off = np.flatnonzero(epochs != epoch)
        if off.size:
            r = int(off[0])
            raise WireError(f"rank {r} is at epoch {int(epochs[r])} but this rank is at epoch "
                            f"{epoch}: the ranks are out of step (one resumed from another "
                            "checkpoint, or skipped a generation)")
        bad = np.flatnonzero(fr[:, 0])
        if bad.size:
            if own_problem is not None:
                raise WireError(own_problem)
            r = int(bad[0])
            why = "malformed" if fr[r, 0] == MALFORMED else "non-finite in the 'sign' form"
            raise WireError(f"rank {r} sent no usable fitness ({why}); see that rank's error")
        digests = None
        if fr[:, 1].any() and not fr[:, 1].all():
            r = int(np.flatnonzero(fr[:, 1] != fr[0, 1])[0])
            raise WireError(f"rank {r} and rank 0 disagree on whether epoch {epoch} checks the "
                            "parameter digest (different digest_every?)")
        if fr[:, 1].all():
            digests = np.frombuffer(np.ascontiguousarray(fr[:, 6:14]).tobytes(), dtype="<u8")
        parts = []
        for r, block in enumerate(self.plan.blocks):
            body = fr[r, HEADER:HEADER + self.payload]
            if self.mode == "float32":
                parts.append(np.frombuffer(body[:4 * len(block)].tobytes(), dtype="<f4"))
            else:
                parts.append(expand_signs(unpack_signs(body, len(block) // 2)))
        return np.concatenate(parts).astype(np.float32), digests
