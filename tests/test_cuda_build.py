"""The CUDA build's contract that holds without a GPU: cuda_available() never raises, a
CPU-only build answers a CUDA request with RuntimeError, and eggroll._cuda (when built)
imports without a driver and validates its arguments before touching the device."""
from __future__ import annotations

import numpy as np
import pytest

import eggroll
from eggroll import _core
from eggroll._ops import cuda_module, es_args

try:
    from eggroll import _cuda
except ImportError:
    _cuda = None

needs_module = pytest.mark.skipif(_cuda is None, reason="CPU-only build (no eggroll._cuda)")
ARGS = dict(seed=1, param_id=0, epoch=0, noise_reuse=1, antithetic=True, sigma=0.1, rank=1)


def _dev(shape, dtype=0, ptr=0x1000, device_index=0):
    """A CUDA-device view with a fake pointer: fine, because validation never dereferences."""
    strides, acc = [], 1
    for d in reversed(shape):
        strides.insert(0, acc)
        acc *= d
    return _core.TensorView(ptr, dtype, list(shape), strides, 1, device_index)


def test_cuda_available_is_a_bool():
    assert isinstance(eggroll.cuda_available(), bool)
    if _cuda is None:
        assert eggroll.cuda_available() is False


@pytest.mark.skipif(_cuda is not None, reason="this build has eggroll._cuda")
def test_cpu_only_build_raises_runtime_error():
    with pytest.raises(RuntimeError, match="built without CUDA support"):
        cuda_module()


@needs_module
def test_module_imports_and_counts_devices():
    n = _cuda.device_count()
    assert isinstance(n, int) and n >= 0
    assert eggroll.cuda_available() == (n > 0)
    assert cuda_module() is _cuda


@needs_module
def test_launchers_reject_cpu_arrays_before_any_cuda_call():
    x = np.zeros((2, 3), np.float32)
    y = np.zeros((2, 4), np.float32)
    mem = np.arange(2, dtype=np.int64)
    from eggroll.numpy import view
    with pytest.raises(TypeError, match="^x: expected a CUDA array"):
        _cuda.lowrank_correction(view(x), view(mem), es_args(**ARGS), view(y), stream=0)
    with pytest.raises(TypeError, match="^f: expected a CUDA array"):
        _cuda.centered_rank(view(x[0]), view(y[0]), stream=0)


@needs_module
def test_launchers_validate_shapes_dtypes_devices():
    a = es_args(**ARGS)
    x, mem = _dev((2, 3)), _dev((2,), dtype=6, ptr=0x2000)
    with pytest.raises(ValueError, match="^out: expected shape"):
        _cuda.lowrank_correction(x, mem, a, _dev((3, 4), ptr=0x3000), stream=0)
    with pytest.raises(ValueError, match="^out: on device cuda:1 but x is on cuda:0"):
        _cuda.lowrank_correction(x, mem, a, _dev((2, 4), ptr=0x3000, device_index=1), stream=0)
    with pytest.raises(TypeError, match="^x: expected float32, float16 or bfloat16"):
        _cuda.fullrank_correction(_dev((2, 3), dtype=4), mem, a, _dev((2, 4), ptr=0x3000), stream=0)
    with pytest.raises(TypeError, match="^members: expected dtype int64"):
        _cuda.lowrank_correction(x, _dev((2,), dtype=5, ptr=0x2000), a, _dev((2, 4), ptr=0x3000), stream=0)
    with pytest.raises(ValueError, match="^out: .*overlaps"):
        _cuda.lowrank_correction(x, mem, a, _dev((2, 4), ptr=0x1004), stream=0)
    big = es_args(**dict(ARGS, rank=5000))
    with pytest.raises(ValueError, match="^rank: the CUDA kernels support rank <= 4096"):
        _cuda.lowrank_correction(x, mem, big, _dev((2, 4), ptr=0x3000), stream=0)
    with pytest.raises(ValueError, match="^full_rank: the CUDA es_gradient computes full-rank"):
        _cuda.es_gradient(_dev((2,)), mem, a, False, 2, False, _dev((4, 3), ptr=0x3000), stream=0)
    with pytest.raises(ValueError, match="^Af: expected shape"):
        _cuda.es_gradient_factors(_dev((2,)), mem, 4, 3, a, 2, _dev((5, 4), ptr=0x3000),
                                  _dev((5, 3), ptr=0x4000), stream=0)
    with pytest.raises(ValueError, match="^f: antithetic_sign needs an even population"):
        _cuda.antithetic_sign(_dev((3,)), _dev((1,), ptr=0x3000), stream=0)
    with pytest.raises(TypeError):  # stream is keyword-only and required
        _cuda.centered_rank(_dev((3,)), _dev((3,), ptr=0x3000))
