"""eggroll.jax.ES across two jax.distributed CPU processes on 127.0.0.1 (the coordinator bound
to the loopback address; fitness by process_allgather, and again by shard_map over a mesh of
both processes inside jax.jit) and across three local devices with shard_map: the
same parameters bit for bit as one process after 6 generations, uneven blocks included; a
mismatched seed is a clear error on every process."""
from __future__ import annotations

import os
import socket

import pytest

if os.environ.get("EGGROLL_REQUIRE_JAX") != "1":
    pytest.importorskip("jax")
    pytest.importorskip("optax")
    pytest.importorskip("eggroll._xla_ffi", reason="eggroll was built without the JAX handlers")

from dist_launch import assert_bit_identical, is_loopback_all, run_ranks  # noqa: E402


def _gloo_stays_on_loopback() -> bool:
    """JAX's CPU collectives (gloo) bind the address the host name resolves to, and JAX has no
    public setting for the interface: the two-process tests run (without opting in) only
    where that address is a loopback one, so that they never listen on a network."""
    try:
        return socket.gethostbyname(socket.gethostname()).startswith("127.")
    except OSError:
        return False


needs_loopback_gloo = pytest.mark.skipif(
    not _gloo_stays_on_loopback() and os.environ.get("EGGROLL_DISTRIBUTED_ANY_INTERFACE") != "1",
    reason="the host name does not resolve to 127.x: JAX's gloo would listen on a network "
           "interface; set EGGROLL_DISTRIBUTED_ANY_INTERFACE=1 to run anyway")


@needs_loopback_gloo
def test_two_processes_equal_one_process_bit_for_bit(tmp_path):
    base = run_ranks("jax", 1, tmp_path, population=14)[0]
    ranks = run_ranks("jax", 2, tmp_path, population=14)             # blocks of 8 and 6
    for r in ranks:
        assert_bit_identical(r, base)                       # DistributedES: process_allgather
        for k in [k for k in base if not k.startswith("_")]:  # one jit over both processes
            assert r[f"_global/{k}"].tobytes() == base[k].tobytes(), k
        if os.environ.get("EGGROLL_DISTRIBUTED_ANY_INTERFACE") != "1":
            assert r["_listening"].size and is_loopback_all(r["_listening"]), r["_listening"]


def test_shard_map_over_three_local_devices_equals_one_device(tmp_path):
    out = run_ranks("jax", 1, tmp_path, population=10, scenario="shard",
                    env={"XLA_FLAGS": "--xla_force_host_platform_device_count=3 "
                                      "--xla_cpu_multi_thread_eigen=false"})[0]
    assert "_error" not in out, out.get("_error")
    assert int(out["_devices"]) == 3 and int(out["_all_gathers"]) >= 1     # 4 + 4 + 2 members
    names = [k.split("/", 1)[1] for k in out if k.startswith("single/")]
    assert names
    for k in names:
        assert out[f"sharded/{k}"].tobytes() == out[f"single/{k}"].tobytes(), k


@needs_loopback_gloo
def test_a_mismatched_seed_is_a_clear_error_on_every_process(tmp_path):
    # (the divergence check is the engine-neutral exchange's: test_distributed_torch.py and
    # test_distributed_core.py)
    for r in run_ranks("jax", 2, tmp_path, scenario="seed", steps=1):
        assert r["_error"]["type"] == "SetupMismatch", r["_error"]
        assert "rank 1 differs from rank 0 in seed" in r["_error"]["message"]
