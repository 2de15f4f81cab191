# A NumPy-backed stand-in for CuPy (tools/cuda_emu): just enough API for eggroll.cupy and the
# op tests of tests/test_cuda.py to run against the host-emulated kernels. Not CuPy.
import contextlib
import numpy as _np
from . import cuda

float32, float64, float16, int64, int32, uint32, int8 = _np.float32, _np.float64, _np.float16, _np.int64, _np.int32, _np.uint32, _np.int8
dtype = _np.dtype

class _Data:
    def __init__(self, a): self.ptr = a.ctypes.data
class _Dev:
    id = 0
    def __enter__(self): return self
    def __exit__(self, *a): return False
class ndarray(_np.ndarray):
    @property
    def data(self): return _Data(self)
    @property
    def device(self): return _Dev()
    def get(self): return _np.asarray(self).copy()
    @property
    def __cuda_array_interface__(self):   # "device" memory: host memory the emulated kernels use
        return dict(shape=self.shape, typestr=self.dtype.str, data=(self.ctypes.data, False),
                    strides=None if self.flags.c_contiguous else self.strides, version=3)
    def __array_wrap__(self, arr, context=None, return_scalar=False):
        return _np.asarray(arr) if arr.ndim == 0 else arr.view(ndarray)

def _w(a): return _np.ascontiguousarray(a).view(ndarray) if isinstance(a, _np.ndarray) and a.ndim else a
def asarray(a, dtype=None): return _np.array(a, dtype=dtype).view(ndarray)
def array(a, dtype=None, order="C", copy=True): return _np.array(a, dtype=dtype, order=order, copy=True).view(ndarray)
def empty(shape, dtype=float32): return _np.empty(shape, dtype).view(ndarray)
def zeros_like(a): return _np.zeros_like(a).view(ndarray)
def ascontiguousarray(a, dtype=None): return _np.ascontiguousarray(a, dtype=dtype).view(ndarray)
def asnumpy(a): return _np.asarray(a).copy()
def isfinite(a): return _np.isfinite(_np.asarray(a))
def matmul(a, b, out=None):
    r = _np.matmul(_np.asarray(a), _np.asarray(b))
    if out is not None:
        out[...] = r; return out
    return r.view(ndarray)
def arange(*a, dtype=None): return _np.arange(*a, dtype=dtype).view(ndarray)
tanh, log, exp, take_along_axis = _np.tanh, _np.log, _np.exp, _np.take_along_axis
def broadcast_to(a, shape): return _np.broadcast_to(a, shape).view(ndarray)
def full(shape, value, dtype=None): return _np.full(shape, value, dtype=dtype).view(ndarray)
class lib:
    class stride_tricks:
        @staticmethod
        def as_strided(a, shape, strides): return _np.lib.stride_tricks.as_strided(a, shape, strides).view(ndarray)
def ones(shape, dtype=float32): return _np.ones(shape, dtype).view(ndarray)
def zeros(shape, dtype=float32): return _np.zeros(shape, dtype).view(ndarray)
def square(a): return _np.square(a)
def asfortranarray(a): return _np.asfortranarray(a).view(ndarray)
