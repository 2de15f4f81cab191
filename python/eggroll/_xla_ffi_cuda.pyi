# Typed stub of eggroll._xla_ffi_cuda (cpp/bindings/xla_ffi_cuda.cpp): the XLA FFI handlers for
# JAX arrays on NVIDIA GPUs (CUDA + JAX builds only).
from typing import Any

def registrations() -> dict[str, dict[str, Any]]:
    """{"CUDA": {op name: PyCapsule of its XLA FFI handler}}: every op of eggroll._xla_ffi plus
    "es_gradient_factors"; eggroll.jax registers each as the custom-call target
    "eggroll_<op name>" for platform CUDA (operands: python/eggroll/jax/_cuda.py). Every
    handler is command-buffer compatible."""

def workspace_bytes(op: str, M: int = ..., b: int = ..., m: int = ..., n: int = ...,
                    rank: int = ..., full_rank: bool = ..., perturb: bool = ...,
                    P: int = ...) -> int:
    """Bytes of the uint8 workspace, the last result of keyed handler `op` (its scratch)."""
