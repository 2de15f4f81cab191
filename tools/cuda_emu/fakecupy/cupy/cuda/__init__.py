# Stand-in for cupy.cuda (tools/cuda_emu): the current stream is the null stream; a test may set
# CAPTURING to make it report a capture in progress (eggroll.cupy then takes its own GEMMs).
CAPTURING = False


class _S:
    ptr = 0
    def is_capturing(self): return CAPTURING
    def synchronize(self): pass


def get_current_stream(device_id=None): return _S()


class Device:
    id = 0
    def __init__(self, i=0): self.id = i
    def __enter__(self): return self
    def __exit__(self, *a): return False
    def synchronize(self): pass
