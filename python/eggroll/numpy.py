"""NumPy: every op on NumPy arrays (and host array-likes), computed by the C++ core.

These are the functions of the top-level package (``eggroll.perturbed_matmul`` &c.), which
dispatch on the array's type; NumPy arrays go straight to ``eggroll._core``, whose entries
read them without a copy, check every argument (docs/ops.md) and allocate the result. The dtype
policy and the layout rules are docs/ops.md's "Dtypes and layout".
"""
from __future__ import annotations

import numpy as np

from . import _ops

globals().update(_ops.framework_ops(
    lambda a: a if isinstance(a, (np.ndarray, range)) or a is None else np.asarray(a),
    lambda: None))

__all__ = list(_ops.OPS)
