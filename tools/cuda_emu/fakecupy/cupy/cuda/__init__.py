# Stand-in for cupy.cuda (tools/cuda_emu): the current stream is the null stream, never capturing.
class _S:
    ptr = 0
    def is_capturing(self): return False
def get_current_stream(): return _S()
