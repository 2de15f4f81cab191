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

from . import _ops
from ._ops import *  # noqa: F403  (every op, as _ops.__all__ lists)
from ._ops import BACKEND
from ._threads import use_torch_threads

__all__ = [*_ops.__all__, "ES", "linear", "use_torch_threads"]

from .es import ES, linear  # noqa: E402  (the trainer builds on the ops above)
