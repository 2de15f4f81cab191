// Host emulation (tools/cuda_emu): bfloat16 storage, round-to-nearest-even conversion.
#pragma once
#include <cstdint>
#include <cstring>
struct __nv_bfloat16 { uint16_t x = 0; };
inline float __bfloat162float(__nv_bfloat16 b) { uint32_t f = uint32_t(b.x) << 16; float r; std::memcpy(&r, &f, 4); return r; }
inline __nv_bfloat16 __float2bfloat16_rn(float v) {
  uint32_t f; std::memcpy(&f, &v, 4); f += 0x7fff + ((f >> 16) & 1); __nv_bfloat16 b; b.x = uint16_t(f >> 16); return b;
}
