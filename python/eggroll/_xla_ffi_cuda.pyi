# Typed stub of eggroll._xla_ffi_cuda (cpp/bindings/xla_ffi_cuda.cpp): the XLA FFI handlers for
# JAX arrays on NVIDIA GPUs (CUDA + JAX builds only).
from typing import Any

def registrations() -> dict[str, dict[str, Any]]:
    """{"CUDA": {op name: PyCapsule of its XLA FFI handler}}: every op of eggroll._xla_ffi plus
    "es_gradient_factors"; eggroll.jax registers each as the custom-call target
    "eggroll_<op name>" for platform CUDA (operands: python/eggroll/jax/_cuda.py). Every
    handler is command-buffer compatible."""

def __getattr__(name: str) -> Any:
    """workspace_<op>(*args) -> int: bytes of the uint8 workspace, the last result of the
    handler of `op` (its scratch), from the plan that op's entry arguments make (those of
    eggroll._core.check_<op>: abstract arrays, the key with seed and epoch None)."""
