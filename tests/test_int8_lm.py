"""The integer LM example (examples/int8_lm.py): its integer pieces against independent
computations (layer norm, minGRU scan, LUT log-softmax, baselines, vote threshold), the
batched forward against member-by-member runs, and checkpoints that resume bit-exactly."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import eggroll

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "int8_lm.py"


@pytest.fixture(scope="module")
def lm():
    spec = importlib.util.spec_from_file_location("eggroll_example_int8_lm", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod              # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def test_layer_norm_is_division_by_mean_absolute_value(lm):
    rng = np.random.default_rng(0)
    x = rng.integers(-127, 128, (200, 32)).astype(np.int8)
    x[0] = 0                                               # mav 0 -> treated as 1
    x[1] = 3
    x[2] = -3
    x[3, :] = 1
    x[3, 0] = -127                                         # mav 4: saturates
    got = lm.layer_norm(x)
    assert got.dtype == np.int8
    for row, out in zip(x.tolist(), got.tolist()):
        mav = max(1, sum(abs(v) for v in row) // len(row))
        for v, o in zip(row, out):
            q = abs(v) * lm.LN_SCALE // mav                # Python ints: exact
            assert o == max(-127, min(127, q if v >= 0 else -q)), (row, v, o)
    assert (got[1] == lm.LN_SCALE).all() and (got[2] == -lm.LN_SCALE).all()


def test_mingru_scan_matches_elementwise_recurrence(lm):
    rng = np.random.default_rng(1)
    M, T, D = 3, 7, 5
    gates = rng.integers(-127, 128, (M, T, 2 * D)).astype(np.int8)
    got = lm.mingru_scan(gates)
    assert got.dtype == np.int8 and got.shape == (M, T, D)
    for i in range(M):
        for d in range(D):
            h = 0
            for t in range(T):
                a, c = int(gates[i, t, d]) + 127, int(gates[i, t, D + d])
                h = h + math.floor(a * (c - h) / 256)
                assert got[i, t, d] == h


def test_mingru_gate_extremes(lm):
    """f = -127 keeps the state (0); f = 127 moves it to within 1% of the candidate."""
    D = 4
    gates = np.zeros((1, 3, 2 * D), np.int8)
    gates[..., D:] = 100
    gates[..., :D] = -127
    assert (lm.mingru_scan(gates) == 0).all()
    gates[..., :D] = 127
    h = lm.mingru_scan(gates)
    assert (h[0, 0] == 99).all() and (h[0, -1] == 99).all()


def test_lut_log_softmax_within_a_table_step_of_exact(lm):
    rng = np.random.default_rng(2)
    logits = rng.integers(-127, 128, (4, 9, 256)).astype(np.int8)
    logits[0, 0] = 0                          # uniform: log2 p = -8 exactly -> -128
    logits[1, 0] = -127
    logits[1, 0, 5] = 127                     # one dominant byte
    targets = rng.integers(0, 256, (4, 9)).astype(np.uint8)
    targets[1, 0] = 5
    got = lm.int_log_probs(logits, targets)
    z = logits.astype(np.float64) / 16.0
    lse = np.log2(np.exp2(z).sum(axis=-1))
    exact = 16.0 * (np.take_along_axis(z, targets[..., None].astype(np.intp), -1)[..., 0] - lse)
    # EXP2 entries are rounded (relative error <= 1/32 of the smallest, 16*2^(1/16)) and
    # the log uses 8 bits of mantissa: together well under one unit (1/16 bit)
    assert np.abs(got - exact).max() <= 1.0
    assert got[0, 0] == -128
    assert lm.float_bits(logits[:1, :1], targets[:1, :1]) == pytest.approx(
        -exact[0, 0] / 16.0, abs=1e-12)


def test_baselines_by_hand(lm):
    train = np.array([0, 1, 0, 1, 0], np.uint8)
    held = np.array([0, 1], np.uint8)
    uni, big = lm.baselines(train, held)
    # unigram: counts 0 -> 3, 1 -> 2, +1 each over 256 values (total 261)
    assert uni == pytest.approx(-(math.log2(4 / 261) + math.log2(3 / 261)) / 2)
    # bigram: the held-out pair (0, 1); row 0 has (0,1) twice, +1 smoothing -> 3 / (2 + 256)
    assert big == pytest.approx(-math.log2(3 / 258))


def test_corpus_split_is_by_file_and_deterministic(lm, tmp_path):
    for i in range(12):
        (tmp_path / f"m{i:02d}.py").write_bytes(bytes([65 + i]) * (i + 1))
    (tmp_path / "site-packages").mkdir()
    (tmp_path / "site-packages" / "x.py").write_bytes(b"zzz")
    train, held, n = lm.load_corpus(1 << 20, holdout_every=10, root=str(tmp_path))
    assert n == 12
    assert bytes(held) == bytes([65 + 9]) * 10 + b"\0"
    assert b"z" not in bytes(train) and bytes(train).count(0) == 11


def test_threshold_moves_about_alpha_of_weights_under_random_votes(lm):
    """The z-test threshold against int8 noise products of std ~256: random +-1 votes from
    256 pairs move about alpha of the weights (a bit fewer: trunc() makes the int8 noise's
    std 15.6, not 16, so the effective z is 5% larger)."""
    pairs, alpha = 256, 0.5
    votes = np.where(np.random.default_rng(3).random(pairs) < 0.5, 1, -1).astype(np.int8)
    W = np.zeros((64, 64), np.int8)
    thr = lm.threshold_for(alpha, pairs)
    moved = (eggroll.int8_update(W, votes, threshold=thr, epoch=0, seed=1) != 0).mean()
    assert 0.40 <= moved <= 0.55, moved
    assert lm.threshold_for(1.0, pairs) == 1


def test_batched_members_equal_single_members(lm):
    cfg = lm.Config(hidden=8, mlp_mult=2, seed=4)
    params = lm.init_params(cfg)
    tokens = np.random.default_rng(5).integers(0, 256, (4, 6)).astype(np.uint8)
    batch = lm.forward(params, cfg, tokens, members=range(4), epoch=2)
    for i in range(4):
        one = lm.forward(params, cfg, tokens[i:i + 1], members=[i], epoch=2)
        np.testing.assert_array_equal(one[0], batch[i])
    mean = lm.forward(params, cfg, tokens, members=None, epoch=2)
    assert mean.dtype == np.int8 and not np.array_equal(mean, batch)


SMALL = ["--smoke", "--eval-every", "2", "--checkpoint-every", "0"]


def _params(lm, path):
    params, cfg, step, history, _, _ = lm.load_checkpoint(path)
    return params, cfg, step, history


def test_resume_is_bit_exact(lm, tmp_path):
    """4 steps straight == 2 steps, checkpoint, load, 2 more steps: the same weights and the
    same logged bits/byte (data keyed by step, noise by epoch, no hidden state elsewhere)."""
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert lm.main([*SMALL, "--steps", "4", "--out", str(a)]) == 0
    assert lm.main([*SMALL, "--steps", "2", "--out", str(b)]) == 0
    p2, _, step2, _ = _params(lm, b.with_suffix(".npz"))
    assert step2 == 2
    assert lm.main([*SMALL, "--steps", "4", "--out", str(b), "--resume"]) == 0
    pa, cfga, stepa, ha = _params(lm, a.with_suffix(".npz"))
    pb, cfgb, stepb, hb = _params(lm, b.with_suffix(".npz"))
    assert stepa == stepb == 4 and cfga == cfgb
    assert sorted(pa) == sorted(pb)
    for k in pa:
        assert pa[k].dtype == np.int8
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
    assert any(not np.array_equal(pa[k], p2[k]) for k in pa), "steps 3-4 changed nothing"
    for k in ("step", "train_bits", "heldout_bits", "pop_bits"):
        np.testing.assert_array_equal(ha[k], hb[k], err_msg=k)


def test_checkpoint_write_is_atomic(lm, tmp_path):
    """The checkpoint appears under its name only complete: no temporary file is left, and
    an old checkpoint is replaced, never truncated in place."""
    out = tmp_path / "c.png"
    assert lm.main([*SMALL, "--steps", "2", "--out", str(out)]) == 0
    assert lm.main([*SMALL, "--steps", "3", "--out", str(out), "--resume"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if "npz" in p.name) == ["c.npz"]
    assert _params(lm, out.with_suffix(".npz"))[2] == 3


def test_bad_population(lm, capsys):
    assert lm.main(["--smoke", "--population", "7"]) == 2
    assert capsys.readouterr().err.startswith("--population")
