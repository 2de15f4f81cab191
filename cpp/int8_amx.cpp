// AMX-INT8 GEMM kernel (tdpbssd: a 16x64 s8 tile times a 64x16 s8 tile into 16x16 int32,
// 16384 multiply-adds per instruction). s8 x s8 directly, no u8 trick. Linux hands out the
// tile state only on request (arch_prctl), so amx_os_enable() asks once per process.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <cstring>
#include "int8_kernel.h"
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace eggroll::detail {
namespace {

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Tiles 0-3: C (2 x 2 blocks of 16 x 16 int32); 4-5: X (16 rows x 64 k); 6-7: W (16 k-groups
// x 16 columns x 4 k). Every tile is 16 rows of 64 bytes.
void configure() {
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) { cfg.colsb[t] = 64; cfg.rows[t] = 16; }
  _tile_loadconfig(&cfg);
}

// TR x TC blocks of 16 x 16 outputs (TR, TC in {1, 2}).
template <int TR, int TC>
inline void tile(const int8_t* Xp, int64_t Kp, const int8_t* Wp, int32_t* C, int64_t ldc) {
  _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
  for (int64_t k = 0; k < Kp; k += 64) {
    _tile_loadd(4, Xp + k, Kp);
    if (TR == 2) _tile_loadd(5, Xp + 16 * Kp + k, Kp);
    _tile_loadd(6, Wp + k * 16, 64);
    if (TC == 2) _tile_loadd(7, Wp + Kp * 16 + k * 16, 64);
    _tile_dpbssd(0, 4, 6);
    if (TC == 2) _tile_dpbssd(1, 4, 7);
    if (TR == 2) _tile_dpbssd(2, 5, 6);
    if (TR == 2 && TC == 2) _tile_dpbssd(3, 5, 7);
  }
  const int64_t stride = ldc * int64_t(sizeof(int32_t));
  _tile_stored(0, C, stride);
  if (TC == 2) _tile_stored(1, C + 16, stride);
  if (TR == 2) _tile_stored(2, C + 16 * ldc, stride);
  if (TR == 2 && TC == 2) _tile_stored(3, C + 16 * ldc + 16, stride);
}

}  // namespace

bool amx_os_enable() {
#if defined(__linux__) && defined(__x86_64__)
  static const bool ok = [] {
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
#else
  return false;
#endif
}

void int8_gemm_amx(const int8_t* Xp, int64_t rows, int64_t Kp, const int8_t* Wp,
                   const int32_t*, int64_t nb, int32_t* C, int64_t ldc) {
  configure();
  for (int64_t i = 0; i < rows; i += 32) {  // rows is a multiple of 16
    const bool two_rows = i + 32 <= rows;
    const int8_t* x = Xp + i * Kp;
    int64_t jb = 0;
    for (; jb + 2 <= nb; jb += 2) {
      if (two_rows) tile<2, 2>(x, Kp, Wp + jb * Kp * 16, C + i * ldc + jb * 16, ldc);
      else tile<1, 2>(x, Kp, Wp + jb * Kp * 16, C + i * ldc + jb * 16, ldc);
    }
    if (jb < nb) {
      if (two_rows) tile<2, 1>(x, Kp, Wp + jb * Kp * 16, C + i * ldc + jb * 16, ldc);
      else tile<1, 1>(x, Kp, Wp + jb * Kp * 16, C + i * ldc + jb * 16, ldc);
    }
  }
  _tile_release();
}

}  // namespace eggroll::detail

#else  // not built for this target: cpu_has() never selects it; callers get the scalar kernel
#include "int8_kernel.h"
namespace eggroll::detail {
void int8_gemm_amx(const int8_t* Xp, int64_t rows, int64_t Kp, const int8_t* Wp, const int32_t* wsum,
          int64_t nb, int32_t* C, int64_t ldc) {
  int8_gemm_scalar(Xp, rows, Kp, Wp, wsum, nb, C, ldc);
}
bool amx_os_enable() { return false; }
}  // namespace eggroll::detail
#endif
