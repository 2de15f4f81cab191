"""JAX: every eggroll op on jax.Arrays through XLA FFI custom calls (eggroll._xla_ffi on the
CPU; eggroll._xla_ffi_cuda on NVIDIA GPUs in CUDA builds, see _cuda.py), and
``eggroll.jax.ES`` (ES over a parameter pytree with optax).

The ops are the top-level functions (``eggroll.perturbed_matmul(jax_array, ...)``); they work
eagerly (one cached dispatch per call) and under ``jax.jit``, ``jax.vmap`` and ``lax.scan``.
Arrays, ``members`` (an index array), ``seed`` and ``epoch`` may be traced; everything that
shapes the computation (``param_id``, ``sigma``, ``rank``, ``noise_reuse``, ``antithetic``,
``fixed_point``, ``sigma_shift``, ``shared``, ``shape``, a range of members) is static. At
trace time the same C++ checks as every other front end run on the shapes and on every value
that is known (ValueError / TypeError at the call site); only traced values that turn out bad
fail when the compiled program runs. Float inputs are computed in float32 (a traced program
does not know its device until it is lowered, so half inputs are converted here too); on the
CPU results equal the NumPy path bit for bit. ``out=`` is not supported (JAX arrays are
immutable). docs/jax.md says what runs where.
"""
from __future__ import annotations

from . import _ops
from ._ops import *  # noqa: F403  (every op, as _ops.__all__ lists)
from ._ops import BACKEND

__all__ = [*_ops.__all__, "ES", "param_id"]

from .es import ES, param_id  # noqa: E402  (the trainer builds on the ops above)
