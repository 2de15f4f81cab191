"""The fitness log: an append-only, crash-safe file of each generation's fitness, so that
resume = checkpoint + replay (bit-exact: tell() is a pure function of the fitness and the
state, docs/distributed.md).

File layout (little-endian):

    header, 32 bytes   b"EGGFLOG1", mode u8 (0 float32, 1 sign), 7 zero bytes,
                       population u64, run u64 (the set-up fingerprint of the run, or 0)
    record r           epoch u64, crc32 u32 of (epoch bytes + payload), payload:
                       "float32": population float32 values (4 N bytes);
                       "sign": the pair votes packed 2 bits each (ceil(N / 8) bytes)

so a generation costs 12 + 4 N bytes (12 + ceil(N / 8) packed): population 4096 -> 16 KiB
per generation, 1.6 GiB per 100,000 generations (0.05 GiB packed). Records are fixed size
and their epochs consecutive, so the record of an epoch is found by a seek.
Each append is one write, then flush + fsync (every `sync_every` records): after a crash the
file holds whole records plus at most one torn record at the end, which open() drops (its
CRC or length fails) before appending again.
"""
from __future__ import annotations

import os
import struct
import zlib
from typing import Any, Callable, Iterator

import numpy as np

from .._trainer import UINT32_MAX, check_int
from .wire import MODES, expand_signs, pack_signs, unpack_signs

__all__ = ["FitnessLog", "replay"]

MAGIC = b"EGGFLOG1"
_HEADER = struct.Struct("<8sB7xQQ")
_RECORD = struct.Struct("<QI")


def record_size(population: int, mode: str) -> int:
    """Bytes per generation in the log."""
    payload = 4 * population if mode == "float32" else -(-(population // 2) // 4)
    return _RECORD.size + payload


class FitnessLog:
    """An append-only log of (epoch, fitness [population]) records.

    path: the file (created if missing; an existing file must have the same population,
    mode and run, else ValueError). mode: "float32" (the raw fitness) or "sign" (what
    the packed wire form sends: tell() fitness (c, 0) per pair, see eggroll.distributed.wire).
    run: a 64-bit fingerprint of the run (0: unchecked). sync_every: fsync after every
    k-th append (1: every record is durable when append returns).
    """

    def __init__(self, path: Any, *, population: int, mode: str = "float32", run: int = 0,
                 sync_every: int = 1) -> None:
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        self.population = check_int(population, "population", 1, UINT32_MAX)
        if mode == "sign" and self.population % 2:
            raise ValueError(f"population: the 'sign' log holds antithetic pairs; got an odd "
                             f"population {self.population}")
        self.mode = mode
        self.run = check_int(run, "run", 0, (1 << 64) - 1)
        self.sync_every = check_int(sync_every, "sync_every", 1, 1 << 30)
        self.path = os.fspath(path)
        self.record_size = record_size(self.population, mode)
        self._unsynced = 0
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self._f = os.fdopen(fd, "r+b", buffering=0)
        try:
            self._open()
        except BaseException:
            self._f.close()
            raise

    # -- opening: header, then whole records; a torn tail is cut off ------------------------

    def _open(self) -> None:
        f = self._f
        f.seek(0, os.SEEK_END)
        size = f.tell()
        mode_code = MODES.index(self.mode)
        if size < _HEADER.size:            # new (or a crash before the header was complete)
            f.truncate(0)
            f.seek(0)
            f.write(_HEADER.pack(MAGIC, mode_code, self.population, self.run))
            self._sync()
            self.first_epoch: int | None = None
            self.next_epoch: int | None = None
            self._count = 0
            return
        f.seek(0)
        magic, code, population, run = _HEADER.unpack(f.read(_HEADER.size))
        if magic != MAGIC:
            raise ValueError(f"path: {self.path!r} is not an eggroll fitness log")
        if (code, population) != (mode_code, self.population) or \
                (self.run and run and run != self.run):
            raise ValueError(f"path: {self.path!r} logs another run (mode "
                             f"{MODES[code] if code < len(MODES) else code}, population "
                             f"{population}, run {run:#x}; this one: {self.mode}, "
                             f"{self.population}, {self.run:#x})")
        count = (size - _HEADER.size) // self.record_size
        first = None
        good = 0
        for i in range(count):             # verify every record once (CRC + consecutive)
            epoch, payload = self._read(i)
            if epoch is None or (first is not None and epoch != first + i):
                if i == count - 1:
                    break                  # a torn last record: dropped below
                raise ValueError(f"path: {self.path!r} record {i} is corrupt (not at the "
                                 "end, so not a torn write); the log cannot be trusted")
            if first is None:
                first = epoch
            good = i + 1
        end = _HEADER.size + good * self.record_size
        if end != size:                    # partial or torn tail record
            f.truncate(end)
            self._sync()
        self._count = good
        self.first_epoch = first
        self.next_epoch = None if first is None else first + good

    def _read(self, i: int) -> tuple[int | None, bytes]:
        self._f.seek(_HEADER.size + i * self.record_size)
        raw = self._f.read(self.record_size)
        if len(raw) != self.record_size:
            return None, b""
        epoch, crc = _RECORD.unpack_from(raw)
        payload = raw[_RECORD.size:]
        if zlib.crc32(raw[:8] + payload) != crc:
            return None, b""
        return epoch, payload

    def _sync(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._unsynced = 0

    # -- the log ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def append(self, epoch: int, fitness: Any) -> None:
        """Add generation `epoch` (the next after the last record, or any epoch for the first).

        fitness: float32 [population], exactly what tell() was given ("sign": (c, 0) per
        pair with c in {-1, 0, 1}, as eggroll.distributed.wire decodes it)."""
        epoch = check_int(epoch, "epoch", 0, UINT32_MAX)
        if self.next_epoch is not None and epoch != self.next_epoch:
            raise ValueError(f"epoch: the log's next record is epoch {self.next_epoch}, got "
                             f"{epoch} (records are consecutive)")
        f = np.asarray(fitness)
        if f.shape != (self.population,) or f.dtype.kind not in "fiu":
            raise ValueError(f"fitness: expected a real [{self.population}] array, got "
                             f"{f.dtype} {f.shape}")
        f = f.astype(np.float32)
        if self.mode == "float32":
            payload = f.astype("<f4").tobytes()
        else:
            votes = f[0::2]
            if (f[1::2] != 0).any() or not np.isin(votes, (-1.0, 0.0, 1.0)).all():
                raise ValueError("fitness: a 'sign' log takes (c, 0) per pair with c in "
                                 "{-1, 0, 1} (eggroll.distributed.wire.expand_signs)")
            payload = pack_signs(votes).tobytes()
        head = struct.pack("<Q", epoch)
        record = _RECORD.pack(epoch, zlib.crc32(head + payload)) + payload
        self._f.seek(_HEADER.size + self._count * self.record_size)
        self._f.write(record)
        self._count += 1
        if self.first_epoch is None:
            self.first_epoch = epoch
        self.next_epoch = epoch + 1
        self._unsynced += 1
        if self._unsynced >= self.sync_every:
            self._sync()

    def fitness(self, epoch: int) -> np.ndarray:
        """float32 [population]: the fitness logged for `epoch` (as tell() was given it)."""
        if self.first_epoch is None or not self.first_epoch <= epoch < self.next_epoch:
            raise ValueError(f"epoch: the log holds epochs [{self.first_epoch}, "
                             f"{self.next_epoch}), got {epoch}")
        got, payload = self._read(epoch - self.first_epoch)
        if got != epoch:
            raise ValueError(f"path: {self.path!r} record of epoch {epoch} is corrupt")
        if self.mode == "float32":
            return np.frombuffer(payload, dtype="<f4").astype(np.float32)
        return expand_signs(unpack_signs(np.frombuffer(payload, dtype=np.uint8),
                                         self.population // 2))

    def records(self, start: int | None = None, stop: int | None = None
                ) -> Iterator[tuple[int, np.ndarray]]:
        """(epoch, fitness) for epochs in [start, stop) (default: the whole log)."""
        if self.first_epoch is None:
            return
        lo = self.first_epoch if start is None else start
        hi = self.next_epoch if stop is None else min(stop, self.next_epoch)
        for e in range(lo, hi):
            yield e, self.fitness(e)

    def close(self) -> None:
        if not self._f.closed:
            if self._unsynced:
                self._sync()
            self._f.close()

    def __enter__(self) -> FitnessLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"FitnessLog({self.path!r}, population={self.population}, mode={self.mode!r}, "
                f"epochs=[{self.first_epoch}, {self.next_epoch}))")


def replay(log: FitnessLog, step: Callable[[np.ndarray], Any], start: int,
           stop: int | None = None) -> int:
    """Bring a trainer restored from a checkpoint of epoch `start` up to date: step(fitness)
    for every logged epoch in [start, stop) (default: to the end of the log), in order.
    step is es.tell for eggroll.ES, ``lambda f: (es.tell(f), opt.step())`` for
    eggroll.torch.ES; with eggroll.jax.ES loop over log.records(start) (its update takes the
    epoch). Returns the number of generations replayed; start must lie inside the log or at
    its end."""
    start = check_int(start, "start", 0, UINT32_MAX + 1)
    if log.first_epoch is None:          # nothing was logged since the checkpoint
        return 0
    if not log.first_epoch <= start <= log.next_epoch:
        raise ValueError(f"start: epoch {start} is outside the log's epochs "
                         f"[{log.first_epoch}, {log.next_epoch}]: it cannot be brought up to "
                         "date from this log")
    n = 0
    for _, f in log.records(start, stop):
        step(f)
        n += 1
    return n
