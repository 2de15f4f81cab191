# Typed stub of eggroll._xla_ffi_cuda (cpp/bindings/xla_ffi_cuda.cpp): the XLA FFI handlers for
# JAX arrays on NVIDIA GPUs (CUDA + JAX builds only).
from typing import Any

def registrations() -> dict[str, dict[str, Any]]:
    """{"CUDA": {op name: PyCapsule of its XLA FFI handler}}: every op of eggroll._xla_ffi plus
    "es_gradient_factors"; eggroll.jax registers each as the custom-call target
    "eggroll_<op name>" for platform CUDA (operands: python/eggroll/jax/_cuda.py)."""
