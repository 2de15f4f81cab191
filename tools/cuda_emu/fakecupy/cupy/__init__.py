# A NumPy-backed stand-in for CuPy (tools/cuda_emu): just enough API for eggroll.cupy and the
# op tests of tests/test_cuda.py to run against the host-emulated kernels. Not CuPy. Its
# arrays are NumPy subclasses that export __cuda_array_interface__, so eggroll's bridge takes
# them as CUDA arrays (its "device" memory is host memory).
import ctypes
import numpy as _np
from . import cuda

float32, float64, float16, int64, int32, uint32, int8, uint8 = (
    _np.float32, _np.float64, _np.float16, _np.int64, _np.int32, _np.uint32, _np.int8, _np.uint8)
dtype = _np.dtype


class _Data:
    def __init__(self, a): self.ptr = a.ctypes.data


class _Dev:
    id = 0
    def __enter__(self): return self
    def __exit__(self, *a): return False
    def synchronize(self): pass


class ndarray(_np.ndarray):
    @property
    def data(self): return _Data(self)
    @property
    def device(self): return _Dev()
    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ctypes.data, False),
                "strides": self.strides, "version": 3}
    def get(self): return _np.asarray(self).copy()
    def __array_wrap__(self, arr, context=None, return_scalar=False):
        return _np.asarray(arr) if arr.ndim == 0 else arr.view(ndarray)


def _w(a): return _np.asarray(a).view(ndarray)
def asarray(a, dtype=None): return _np.array(a, dtype=dtype).view(ndarray)
def array(a, dtype=None, order="C", copy=True): return _np.array(a, dtype=dtype, order=order, copy=True).view(ndarray)
def empty(shape, dtype=float32): return _np.empty(shape, dtype).view(ndarray)
def zeros(shape, dtype=float32): return _np.zeros(shape, dtype).view(ndarray)
def full(shape, v, dtype=float32): return _np.full(shape, v, dtype).view(ndarray)
def zeros_like(a): return _np.zeros_like(a).view(ndarray)
def ascontiguousarray(a, dtype=None): return _np.ascontiguousarray(a, dtype=dtype).view(ndarray)
def asnumpy(a): return _np.asarray(a).copy()
def isfinite(a): return _np.isfinite(_np.asarray(a))
def matmul(a, b, out=None):
    r = _np.matmul(_np.asarray(a), _np.asarray(b))
    if out is not None:
        out[...] = r
        return out
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


# from_dlpack: reads the DLPack capsule of an exporter (eggroll's scratch views) with ctypes.
class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device_type", ctypes.c_int32),
                ("device_id", ctypes.c_int32), ("ndim", ctypes.c_int32), ("code", ctypes.c_uint8),
                ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16),
                ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_get = ctypes.pythonapi.PyCapsule_GetPointer
_get.restype, _get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
_KINDS = {0: "i", 1: "u", 2: "f"}


def from_dlpack(obj):
    cap = obj.__dlpack__(stream=cuda.get_current_stream().ptr)
    t = _DLTensor.from_address(_get(cap, b"dltensor"))
    dt = _np.dtype(f"{_KINDS[t.code]}{t.bits // 8}")
    shape = tuple(t.shape[i] for i in range(t.ndim))
    strides = tuple(t.strides[i] * dt.itemsize for i in range(t.ndim))
    span = sum((s - 1) * st for s, st in zip(shape, strides)) + dt.itemsize
    buf = (ctypes.c_char * span).from_address(t.data + t.byte_offset)
    arr = _np.ndarray(shape, dt, buffer=buf, strides=strides).view(ndarray)
    arr._capsule = cap  # the exporter's capsule lives as long as the array
    return arr
