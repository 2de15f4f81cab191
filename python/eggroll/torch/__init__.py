"""PyTorch: every eggroll op on torch tensors (CPU, and CUDA in CUDA builds), and
``eggroll.torch.ES``, the evolution-strategies trainer for any ``nn.Module``.

The ops are the top-level functions (``eggroll.perturbed_matmul(tensor, ...)`` and
``eggroll.torch.perturbed_matmul`` are the same function): results are torch tensors on the
inputs' device, float32 (or the CUDA input's half dtype), as docs/ops.md's dtype policy says.
Plain eager calls run the C++ entries directly; under torch.compile, autograd (perturbed_matmul
and perturb_vector are differentiable in x, W and v) and functorch transforms they run as the
custom ops ``torch.ops.eggroll.<name>`` (_ops.py). CPU work runs on torch's intra-op (OpenMP)
threads, as many as ``torch.get_num_threads()`` (``use_torch_threads``; docs/torch.md).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .. import _ops as _generic
from ._ops import BACKEND
from ._threads import use_torch_threads

__all__ = ["ES", "linear", "perturbed_matmul_int8", "int8_update", "philox4x32", "normal",
           "perturbed_matmul", "perturbed_matmul_full", "perturb_vector", "lowrank_factors",
           "es_gradient", "centered_rank", "zscore", "antithetic_sign", "use_torch_threads"]


globals().update(_generic.framework_ops(
    lambda a: a if isinstance(a, (Tensor, range)) or a is None else torch.as_tensor(a),
    lambda: torch.empty(0)))


def lowrank_factors(shape: Any, *, members: Any, epoch: Any, seed: Any, param_id: int = 0,
                    sigma: float, rank: int = 1, noise_reuse: int = 1, antithetic: bool = True,
                    device: Any = None) -> tuple[Tensor, Tensor]:
    """(A float32 [M, m, r] scaled by s_i sigma / sqrt(r), B float32 [M, n, r]) on device (by
    default the device of members when it is a tensor, else the CPU)."""
    if device is None:
        device = members.device if isinstance(members, Tensor) else "cpu"
    return _generic.lowrank_factors(shape, members=members, epoch=epoch, seed=seed,
                                    param_id=param_id, sigma=sigma, rank=rank,
                                    noise_reuse=noise_reuse, antithetic=antithetic,
                                    like=torch.empty(0, device=device))


from .es import ES, linear  # noqa: E402  (the trainer builds on the ops above)
