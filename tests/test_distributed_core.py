"""eggroll.distributed's framework-neutral core, in one process: the shard plan, the wire
format (both forms, statuses, out-of-step ranks), the digests and set-up check, the fitness
log (crash safety, bit-exact resume = checkpoint + replay) and the exchange over a simulated
all-gather."""
from __future__ import annotations

import os

import numpy as np
import pytest

import eggroll
from eggroll import distributed as d


# ------------------------------------------------------------------------------------------
# shard plan
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("population,world", [(2, 1), (10, 3), (14, 2), (64, 7), (18, 9),
                                              (100, 1)])
def test_plan_blocks_are_contiguous_even_and_keep_pairs(population, world):
    plan = d.ShardPlan(population, world)
    assert plan.blocks[0].start == 0 and plan.blocks[-1].stop == population
    for a, b in zip(plan.blocks, plan.blocks[1:]):
        assert a.stop == b.start
    assert all(len(b) % 2 == 0 and b.start % 2 == 0 and len(b) > 0 for b in plan.blocks)
    assert max(plan.sizes) - min(plan.sizes) <= 2 and plan.max_block == max(plan.sizes)
    assert sorted(plan.sizes, reverse=True) == plan.sizes           # larger blocks first
    for r, b in enumerate(plan.blocks):
        assert all(plan.rank_of(i) == r for i in b)


def test_plan_without_antithetic_splits_members():
    plan = d.ShardPlan(7, 3, antithetic=False)
    assert plan.blocks == [range(0, 3), range(3, 5), range(5, 7)]


def test_plan_errors():
    with pytest.raises(ValueError, match="^world_size: 4 ranks but only 3 antithetic pairs"):
        d.ShardPlan(6, 4)
    with pytest.raises(ValueError, match="^world_size: 8 ranks but only 7 members"):
        d.ShardPlan(7, 8, antithetic=False)
    with pytest.raises(ValueError, match="^population: antithetic sampling needs an even"):
        d.ShardPlan(7, 2)
    with pytest.raises(TypeError, match="^world_size: expected an int"):
        d.ShardPlan(8, 2.0)
    with pytest.raises(ValueError, match="^rank: must be in"):
        d.ShardPlan(8, 2).block(2)


# ------------------------------------------------------------------------------------------
# wire
# ------------------------------------------------------------------------------------------

def _exchange_frames(wire, epoch, blocks, digests=None):
    frames, problems = [], []
    for r, f in enumerate(blocks):
        fr, prob = wire.encode(r, epoch, f, None if digests is None else digests[r])
        frames.append(fr)
        problems.append(prob)
    return np.stack(frames), problems


def test_float32_wire_round_trips_bits_in_member_order(rng):
    plan = d.ShardPlan(14, 3)                                     # 6, 4, 4
    f = rng.standard_normal(14).astype(np.float32)
    f[3] = np.float32(-0.0)
    wire = d.Wire(plan)
    assert wire.frame_size == 14 + 4 * 6
    frames, _ = _exchange_frames(wire, 9, [f[b.start:b.stop] for b in plan.blocks])
    got, digests = wire.decode(frames, 9)
    assert got.dtype == np.float32 and got.tobytes() == f.tobytes() and digests is None


def test_float32_wire_carries_nonfinite_for_the_trainers_policy():
    plan = d.ShardPlan(4, 2)
    wire = d.Wire(plan)
    frames, _ = _exchange_frames(wire, 0, [np.array([1, np.nan]), np.array([np.inf, 2])])
    got, _ = wire.decode(frames, 0)
    assert np.isnan(got[1]) and np.isinf(got[2])


def test_sign_wire_packs_two_bits_per_pair_and_matches_antithetic_sign_shaping(rng):
    N = 22                                                        # 11 pairs over 3 ranks
    plan = d.ShardPlan(N, 3)
    f = rng.integers(-2, 3, N).astype(np.float32)                 # ties give 0 votes
    wire = d.Wire(plan, "sign")
    assert wire.payload == -(-(plan.max_block // 2) // 4)          # <= 2 bits per pair
    frames, _ = _exchange_frames(wire, 1, [f[b.start:b.stop] for b in plan.blocks])
    got, _ = wire.decode(frames, 1)
    votes = eggroll.antithetic_sign(f)
    np.testing.assert_array_equal(got[0::2], votes)
    np.testing.assert_array_equal(got[1::2], 0)
    # the trainer's shaping of the decoded fitness equals its shaping of the raw fitness
    from eggroll.optim import shape_fitness
    assert shape_fitness(got, "antithetic_sign", 0).tobytes() == \
        shape_fitness(f, "antithetic_sign", 0).tobytes()


@pytest.mark.parametrize("pairs", [1, 3, 4, 5, 17])
def test_pack_unpack_signs(pairs, rng):
    v = rng.integers(-1, 2, pairs).astype(np.float32)
    packed = d.pack_signs(v)
    assert packed.dtype == np.uint8 and packed.size == -(-pairs // 4)
    np.testing.assert_array_equal(d.unpack_signs(packed, pairs), v)
    np.testing.assert_array_equal(d.unpack_signs(d.pack_signs([1.0, -1.0, 0.0]), 3),
                                  [1.0, -1.0, 0.0])
    assert d.pack_signs([1.0, -1.0, 0.0, 1.0]).tolist() == [0b01_00_10_01]


def test_malformed_block_raises_on_every_rank_naming_it():
    plan = d.ShardPlan(8, 2)
    wire = d.Wire(plan)
    frames, problems = _exchange_frames(wire, 0, [np.zeros(4), np.zeros(3)])
    assert problems[0] is None and "rank 1's fitness has shape (3,)" in problems[1]
    with pytest.raises(d.WireError, match="^rank 1 sent no usable fitness"):
        wire.decode(frames, 0, problems[0])
    with pytest.raises(d.WireError, match=r"^rank 1's fitness has shape \(3,\), expected"):
        wire.decode(frames, 0, problems[1])


def test_sign_wire_refuses_nonfinite_on_every_rank():
    plan = d.ShardPlan(8, 2)
    wire = d.Wire(plan, "sign")
    frames, problems = _exchange_frames(wire, 0, [np.zeros(4), np.array([0, np.nan, 1, 2])])
    with pytest.raises(d.WireError, match="non-finite in the 'sign' form"):
        wire.decode(frames, 0, problems[0])
    with pytest.raises(d.WireError, match=r"non-finite values at members \[5\]"):
        wire.decode(frames, 0, problems[1])


def test_rank_out_of_step_is_named():
    plan = d.ShardPlan(8, 2)
    wire = d.Wire(plan)
    a, _ = wire.encode(0, 5, np.zeros(4))
    b, _ = wire.encode(1, 4, np.zeros(4), digest=7)
    with pytest.raises(d.WireError, match="^rank 1 is at epoch 4 but this rank is at epoch 5"):
        wire.decode(np.stack([a, b]), 5)
    with pytest.raises(d.WireError, match="^rank 0 is at epoch 5"):
        wire.decode(np.stack([a, b]), 4)


def test_wire_errors():
    with pytest.raises(ValueError, match="^wire: expected one of"):
        d.Wire(d.ShardPlan(4, 1), "bf16")
    with pytest.raises(ValueError, match="^wire: the 'sign' form .* needs antithetic=True"):
        d.Wire(d.ShardPlan(4, 1, antithetic=False), "sign")


# ------------------------------------------------------------------------------------------
# digests and the set-up check
# ------------------------------------------------------------------------------------------

def test_param_digest_sees_every_bit_name_and_shape():
    a = {"W": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.float32)}
    base = d.param_digest(a.items())
    assert base == d.param_digest({k: v.copy() for k, v in a.items()}.items())
    flipped = a["W"].copy()
    flipped.view(np.uint32)[1, 2] ^= 1                             # one ulp
    assert d.param_digest({"W": flipped, "b": a["b"]}.items()) != base
    assert d.param_digest({"W": a["W"].reshape(3, 2), "b": a["b"]}.items()) != base
    assert d.param_digest({"V": a["W"], "b": a["b"]}.items()) != base
    assert 0 <= base < 2 ** 64


def test_check_setup_names_first_rank_and_fields():
    s0 = {"seed": 1, "population": 8, "sigma": 0.1}
    s1 = {"seed": 2, "population": 8, "sigma": 0.1 + 1e-18}      # the same float64
    s2 = {"seed": 1, "population": 8, "sigma": 0.1000001}
    g = np.stack([d.setup_fingerprint(s) for s in (s0, s0, s1, s2)])
    with pytest.raises(d.SetupMismatch, match=r"^rank 2 differs from rank 0 in seed \(rank 2 "
                                              r"has seed=2\)"):
        d.check_setup(g, s1, 2)
    d.check_setup(np.stack([d.setup_fingerprint(s0)] * 3), s0, 0)


def test_check_digests():
    d.check_digests(np.array([5, 5, 5], np.uint64), 3)
    with pytest.raises(d.DivergenceError, match="^rank 2's parameters differ from rank 0's at "
                                                "epoch 3"):
        d.check_digests(np.array([5, 5, 6, 7], np.uint64), 3)


def test_trainer_setup_covers_settings_and_schedules():
    p = {"W": np.ones((2, 3), np.float32)}
    es = eggroll.ES(p, sigma=lambda e: 0.1 / (1 + e), lr=0.2, population=8, seed=3)
    s = d.trainer_setup(es, 0, lambda: es.params.items(), wire="float32")
    assert s["seed"] == 3 and s["population"] == 8 and s["sigma"] == 0.1 and s["lr"] == 0.2
    assert s["wire"] == "float32" and s["params"] == d.param_digest(es.params.items())
    es2 = eggroll.ES(p, sigma=lambda e: 0.1 / (1 + e), lr=0.2, population=8, seed=3)
    assert (d.setup_fingerprint(s) == d.setup_fingerprint(
        d.trainer_setup(es2, 0, lambda: es2.params.items(), wire="float32"))).all()


# ------------------------------------------------------------------------------------------
# fitness log: resume = checkpoint + replay
# ------------------------------------------------------------------------------------------

def _es(**kw):
    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal((4, 6)).astype(np.float32),
              "b": rng.standard_normal(4).astype(np.float32)}
    kw.setdefault("shaping", "centered_rank")
    return eggroll.ES(params, sigma=0.1, lr=0.05, population=12, optimizer="adam", seed=5,
                      **kw)


def _fitness(es):
    x = np.broadcast_to(np.linspace(-1, 1, 6, dtype=np.float32), (12, 2, 6)).copy()
    return -np.square(es.ask().linear("W", x, bias="b") - 0.3).mean(axis=(1, 2))


@pytest.mark.parametrize("mode", ["float32", "sign"])
def test_checkpoint_plus_replay_equals_the_uninterrupted_run(tmp_path, mode):
    shaping = "antithetic_sign" if mode == "sign" else "centered_rank"
    full = _es(shaping=shaping)
    log = d.FitnessLog(tmp_path / "fit.log", population=12, mode=mode)
    for epoch in range(9):
        if epoch == 3:
            full.save(tmp_path / "ckpt.npz")                       # an older checkpoint
        f = _fitness(full).astype(np.float32)
        if mode == "sign":
            f = d.expand_signs(eggroll.antithetic_sign(f))         # what the wire delivers
        log.append(epoch, f)
        full.tell(f)
    log.close()
    assert os.path.getsize(tmp_path / "fit.log") == 32 + 9 * d.record_size(12, mode)
    resumed = eggroll.ES.load(tmp_path / "ckpt.npz")
    with d.FitnessLog(tmp_path / "fit.log", population=12, mode=mode) as log:
        assert (log.first_epoch, log.next_epoch, len(log)) == (0, 9, 9)
        assert d.replay(log, resumed.tell, resumed.epoch) == 6
    assert resumed.epoch == full.epoch == 9
    for name, p in full.params.items():
        assert resumed.params[name].tobytes() == p.tobytes()


def test_log_drops_a_torn_tail_and_appends_again(tmp_path):
    path = tmp_path / "fit.log"
    with d.FitnessLog(path, population=4) as log:
        for e in range(5, 8):
            log.append(e, np.full(4, e, np.float32))
    size = os.path.getsize(path)
    with open(path, "ab") as f:                                   # a crash mid-append
        f.write(b"\x08\0\0\0\0\0\0\0\x01\x02")
    with d.FitnessLog(path, population=4) as log:
        assert os.path.getsize(path) == size and log.next_epoch == 8
        log.append(8, np.ones(4, np.float32))
        assert [e for e, _ in log.records()] == [5, 6, 7, 8]
        np.testing.assert_array_equal(log.fitness(6), np.full(4, 6, np.float32))
    raw = bytearray(path.read_bytes())                            # torn *last* record (CRC)
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with d.FitnessLog(path, population=4) as log:
        assert log.next_epoch == 8
    raw = bytearray(path.read_bytes())                            # damage in the middle
    raw[32 + 12] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="record 0 is corrupt"):
        d.FitnessLog(path, population=4)


def test_log_errors(tmp_path):
    path = tmp_path / "fit.log"
    with d.FitnessLog(path, population=4) as log:
        log.append(0, np.zeros(4))
        with pytest.raises(ValueError, match="^epoch: the log's next record is epoch 1"):
            log.append(2, np.zeros(4))
        with pytest.raises(ValueError, match=r"^fitness: expected a real \[4\] array"):
            log.append(1, np.zeros(5))
        with pytest.raises(ValueError, match=r"^epoch: the log holds epochs \[0, 1\)"):
            log.fitness(1)
        with pytest.raises(ValueError, match="^start: epoch 3 is outside"):
            d.replay(log, lambda f: None, 3)
    with pytest.raises(ValueError, match="logs another run"):
        d.FitnessLog(path, population=6)
    with pytest.raises(ValueError, match="logs another run"):
        d.FitnessLog(path, population=4, mode="sign")
    (tmp_path / "junk").write_bytes(b"x" * 40)
    with pytest.raises(ValueError, match="is not an eggroll fitness log"):
        d.FitnessLog(tmp_path / "junk", population=4)
    with d.FitnessLog(tmp_path / "s.log", population=4, mode="sign") as log:
        with pytest.raises(ValueError, match="^fitness: a 'sign' log takes"):
            log.append(0, np.array([0.5, 0, 1, 0]))


# ------------------------------------------------------------------------------------------
# the exchange over a simulated all-gather (threads stand in for ranks)
# ------------------------------------------------------------------------------------------

class _Barrier:
    """An in-process all-gather for W threads (what an engine's collective does)."""

    def __init__(self, world):
        import threading
        self.world, self.slots = world, [None] * world
        self.barrier = threading.Barrier(world, timeout=30)

    def allgather(self, rank):
        def gather(frame):
            self.slots[rank] = frame.copy()
            self.barrier.wait()
            out = np.stack(self.slots)
            self.barrier.wait()
            return out
        return gather


def _run_ranks(world, make_es, steps, tweak=None):
    import threading
    bar = _Barrier(world)
    results, errors = [None] * world, [None] * world

    def rank_main(r):
        try:
            es = make_es(r)
            ex = d.FitnessExchange(bar.allgather(r), r, world, population=es.population,
                                   antithetic=es.antithetic,
                                   setup=d.trainer_setup(es, es.epoch, lambda: es.params.items()),
                                   params=lambda: es.params.items(), digest_every=2)
            x = np.broadcast_to(np.linspace(-1, 1, 6, dtype=np.float32),
                                (len(ex.members), 2, 6)).copy()
            for step in range(steps):
                y = es.ask(members=ex.members).linear("W", x, bias="b")
                es.tell(ex.gather(es.epoch, -np.square(y - 0.3).mean(axis=(1, 2))))
                if tweak:
                    tweak(r, step, es)
            results[r] = es.params
        except Exception as e:  # noqa: BLE001
            errors[r] = e
    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a rank hung"
    return results, errors


def test_exchange_threads_equal_one_process():
    base = _es()
    for _ in range(5):
        base.tell(_fitness(base).astype(np.float32))
    results, errors = _run_ranks(3, lambda r: _es(), 5)
    assert errors == [None] * 3
    for params in results:
        for name, p in base.params.items():
            assert params[name].tobytes() == p.tobytes()


def test_exchange_errors_reach_every_rank():
    def other_init(r):                      # rank 1 starts from other parameters
        return eggroll.ES({"W": np.full((4, 6), 1.0 + r, np.float32),
                           "b": np.zeros(4, np.float32)}, sigma=0.1, lr=0.1, population=12)
    _, errors = _run_ranks(2, other_init, 1)
    assert all(isinstance(e, d.SetupMismatch) and "rank 1 differs from rank 0 in params" in str(e)
               for e in errors)

    def other_population(r):
        es = _es()
        return eggroll.ES(es.params, sigma=0.1, lr=0.05, population=12 + 2 * r, seed=5)
    _, errors = _run_ranks(3, other_population, 1)
    assert all(isinstance(e, d.SetupMismatch) and str(e).startswith(
        "rank 1 differs from rank 0 in population") for e in errors)

    _, errors = _run_ranks(7, lambda r: _es(), 1)                  # 6 pairs, 7 ranks
    assert all(isinstance(e, ValueError) and str(e).startswith(
        "world_size: 7 ranks but only 6 antithetic pairs") for e in errors)

    def diverge(r, step, es):
        if r == 2 and step == 0:
            es._params["b"] = es._params["b"] + np.float32(1e-3)
    _, errors = _run_ranks(3, lambda r: _es(), 4, diverge)
    assert all(isinstance(e, d.DivergenceError) and "rank 2's parameters differ from rank "
               "0's at epoch 2" in str(e) for e in errors)
