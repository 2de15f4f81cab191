# Typed stub of eggroll._xla_ffi (cpp/bindings/xla_ffi.cpp): the XLA FFI handlers for JAX.
from typing import Any

def registrations() -> dict[str, dict[str, Any]]:
    """{platform ("cpu"): {op name: PyCapsule of its XLA FFI handler}}; eggroll.jax registers
    each as the custom-call target "eggroll_<op name>"."""
