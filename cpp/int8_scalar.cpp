// Portable int8 GEMM kernel (the reference path of cpp/int8_kernel.h; any CPU).
#include "int8_kernel.h"

namespace eggroll::detail {

void int8_gemm_scalar(const int8_t* Xp, int64_t rows, int64_t Kp, const int8_t* Wp,
                      const int32_t*, int64_t nb, int32_t* C, int64_t ldc) {
  for (int64_t i = 0; i < rows; ++i) {
    const int8_t* x = Xp + i * Kp;
    for (int64_t jb = 0; jb < nb; ++jb) {
      const int8_t* w = Wp + jb * Kp * 16;
      int32_t acc[16] = {0};
      for (int64_t g = 0; g < Kp / 4; ++g)
        for (int jj = 0; jj < 16; ++jj)
          for (int q = 0; q < 4; ++q)
            acc[jj] += int32_t(x[4 * g + q]) * int32_t(w[g * 64 + jj * 4 + q]);
      for (int jj = 0; jj < 16; ++jj) C[i * ldc + jb * 16 + jj] = acc[jj];
    }
  }
}

}  // namespace eggroll::detail
