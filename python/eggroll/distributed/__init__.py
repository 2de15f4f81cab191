"""eggroll.distributed: one population over many processes and hosts, only fitness on the wire.

Every rank holds the same parameters and knows (seed, epoch), evaluates its own contiguous
block of members, and sends only that block's fitness; all ranks gather the population's
fitness in member order and apply the same update, so the replicas stay bit-identical without
ever sending weights (docs/distributed.md).

The framework-neutral core (NumPy only) is imported here: the shard plan, the wire format,
the parameter digest and set-up check, the fitness log and the exchange that ties them to
any all-gather. The engines are submodules imported on demand:
``eggroll.distributed.torch`` (torch.distributed), ``eggroll.distributed.jax``
(jax.distributed / shard_map) and ``eggroll.distributed.ray`` (a Ray actor pool).
"""
from __future__ import annotations

from .digest import (DivergenceError, SetupMismatch, check_digests, check_setup,
                     param_digest, setup_fingerprint, trainer_setup)
from .exchange import FitnessExchange
from .log import FitnessLog, record_size, replay
from .plan import ShardPlan, split_blocks
from .wire import MODES, Wire, WireError, expand_signs, pack_signs, unpack_signs

__all__ = ["ShardPlan", "split_blocks", "Wire", "WireError", "MODES", "pack_signs",
           "unpack_signs", "expand_signs", "param_digest", "setup_fingerprint", "check_setup",
           "check_digests", "trainer_setup", "DivergenceError", "SetupMismatch",
           "FitnessExchange", "FitnessLog", "record_size", "replay"]
