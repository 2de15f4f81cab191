"""eggroll.torch.ES on torch.distributed (gloo, two and three processes on 127.0.0.1): the same
parameters bit for bit as one process after 6 generations (even and uneven blocks, both wire
forms), and clear errors on every rank for a mismatched seed and a diverging rank (more ranks than
pairs: tests/test_distributed_core.py). Every launch has a hard timeout (dist_launch.py)."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

from dist_launch import assert_bit_identical, is_loopback_all, run_ranks  # noqa: E402

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch was built without gloo")


@pytest.mark.parametrize("world,population,wire", [
    (2, 14, "float32"),      # 7 pairs: blocks of 8 and 6 members
    (3, 10, "sign"),         # 5 pairs: 4, 4, 2 (block boundaries 4 and 8), packed votes
])
def test_split_run_equals_one_process_bit_for_bit(tmp_path, world, population, wire):
    base = run_ranks("torch", 1, tmp_path, population=population, wire=wire)[0]
    ranks = run_ranks("torch", world, tmp_path, population=population, wire=wire)
    for r in ranks:
        assert_bit_identical(r, base)
        assert r["_listening"].size and is_loopback_all(r["_listening"]), r["_listening"]


def test_mismatched_seed_is_a_clear_error_on_every_rank(tmp_path):
    ranks = run_ranks("torch", 2, tmp_path, scenario="seed", steps=1)
    for r in ranks:
        assert r["_error"]["type"] == "SetupMismatch"
        assert "rank 1 differs from rank 0 in seed" in r["_error"]["message"]


def test_a_diverging_rank_is_named_on_every_rank(tmp_path):
    ranks = run_ranks("torch", 2, tmp_path, scenario="diverge", steps=6)
    for r in ranks:
        assert r["_error"]["type"] == "DivergenceError"
        assert "rank 1's parameters differ from rank 0's at epoch 4" in r["_error"]["message"]
