// Host emulation (tools/cuda_emu): IEEE half storage with exact conversions (normal range).
#pragma once
#include <cstdint>
#include <cstring>
#include <cmath>
struct __half { uint16_t x = 0; };
inline float __half2float(__half h) {  // exact IEEE half -> float
  uint32_t s = (h.x >> 15) & 1, e = (h.x >> 10) & 31, m = h.x & 1023, f;
  if (e == 0) { if (m == 0) f = s << 31; else { float v = std::ldexp(float(m), -24); return s ? -v : v; } }
  else if (e == 31) f = (s << 31) | 0x7f800000 | (m << 13);
  else f = (s << 31) | ((e - 15 + 127) << 23) | (m << 13);
  float r; std::memcpy(&r, &f, 4); return r;
}
inline __half __float2half_rn(float v) {  // round to nearest even (normal range only; enough here)
  __half h; uint32_t f; std::memcpy(&f, &v, 4);
  uint32_t s = f >> 31; int e = int((f >> 23) & 255) - 127 + 15; uint32_t m = f & 0x7fffff;
  if (e <= 0) { h.x = uint16_t(s << 15); return h; }
  uint32_t mm = m >> 13, rem = m & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (mm & 1))) { ++mm; if (mm == 1024) { mm = 0; ++e; } }
  if (e >= 31) { h.x = uint16_t((s << 15) | 0x7c00); return h; }
  h.x = uint16_t((s << 15) | (e << 10) | mm); return h;
}
