"""In-tree PEP 517 build backend: scikit-build-core, plus jaxlib in the build requirements so
that an isolated `pip install` builds the JAX FFI handlers (eggroll._xla_ffi).

Why: XLA's FFI headers ship only inside jaxlib (jaxlib/include/xla/ffi/api), and with pip's
build isolation the build environment holds only what the backend asks for. A PEP 517 backend
cannot see which extras the user asked for, so jaxlib is requested unless the JAX handlers
are switched off: EGGROLL_JAX=OFF in the environment, or
`pip install . -C cmake.define.EGGROLL_JAX=OFF`. Everything else is scikit-build-core's.
"""
from __future__ import annotations

import os
import sys
from typing import Any

try:
    from scikit_build_core import build as _skbuild
except ImportError as e:  # pip then says only "BackendUnavailable: Cannot import 'eggroll_build'"
    raise ImportError(
        f"eggroll_build needs scikit-build-core in the Python running pip ({sys.executable}); "
        "with --no-build-isolation install it there first (python -m pip install "
        "scikit-build-core pybind11), and run pip as `python -m pip` so that it is the same "
        "Python") from e
from scikit_build_core.build import (build_editable, build_sdist, build_wheel,  # noqa: F401
                                     get_requires_for_build_sdist,
                                     prepare_metadata_for_build_editable,
                                     prepare_metadata_for_build_wheel)

__all__ = ["build_editable", "build_sdist", "build_wheel", "get_requires_for_build_editable",
           "get_requires_for_build_sdist", "get_requires_for_build_wheel",
           "prepare_metadata_for_build_editable", "prepare_metadata_for_build_wheel"]

# The oldest jaxlib whose FFI headers and jax.ffi module eggroll is written against (docs/jax.md).
JAXLIB_REQUIREMENT = "jaxlib>=0.5.0"


def _jax_wanted(config_settings: dict[str, Any] | None) -> bool:
    value = (config_settings or {}).get("cmake.define.EGGROLL_JAX",
                                        os.environ.get("EGGROLL_JAX", "AUTO"))
    return str(value).strip().upper() not in ("OFF", "0", "FALSE", "NO")


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    reqs = list(_skbuild.get_requires_for_build_wheel(config_settings))
    return reqs + ([JAXLIB_REQUIREMENT] if _jax_wanted(config_settings) else [])


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    reqs = list(_skbuild.get_requires_for_build_editable(config_settings))
    return reqs + ([JAXLIB_REQUIREMENT] if _jax_wanted(config_settings) else [])
