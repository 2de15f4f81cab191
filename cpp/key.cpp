// The key and member rules shared by every keyed op (cpp/eggroll/key.h), with their messages.
#include "eggroll/key.h"
#include <cfloat>
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <string>
#include "eggroll/check.h"

namespace eggroll {
namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

}  // namespace

void check_key(const Key& k, KeyUse use) {
  if (k.epoch < 0 || k.epoch > int64_t(UINT32_MAX))
    value_error("epoch: must be in [0, 2^32), got " + std::to_string(k.epoch));
  if (k.noise_reuse < 0 || k.noise_reuse > int64_t(UINT32_MAX))
    value_error("noise_reuse: must be in [0, 2^32), got " + std::to_string(k.noise_reuse));
  const bool lowrank = use != KeyUse::float_full;
  if (lowrank && (k.rank < 1 || k.rank > kMaxRank))
    value_error("rank: must be in [1, " + std::to_string(kMaxRank) + "], got " +
                std::to_string(k.rank));
  if (use == KeyUse::float_full || use == KeyUse::float_lowrank) {
    // float32(sigma) is what the kernels use: it must be finite and nonzero there too (a
    // sigma below float32's smallest subnormal would silently become 0).
    if (!std::isfinite(k.sigma) || k.sigma <= 0 || !std::isfinite(float(k.sigma)) ||
        float(k.sigma) == 0.0f || k.sigma > double(FLT_MAX))
      value_error("sigma: must be finite and > 0 as a float32 (in [1.4e-45, 3.4e38]), got " +
                  num(k.sigma));
    return;
  }
  if (k.fixed_point < 0 || k.fixed_point > 7)
    value_error("fixed_point: must be in [0, 7], got " + std::to_string(k.fixed_point));
  if (use == KeyUse::int8_forward && (k.sigma_shift < 0 || k.sigma_shift > 32))
    value_error("sigma_shift: must be in [0, 32], got " + std::to_string(k.sigma_shift));
}

Members Members::range(int64_t start, int64_t step, int64_t count) {
  Members m;
  m.start = start; m.step = step; m.count = count; m.given = true;
  return m;
}

Members Members::indices(const TensorView& idx) {
  check_dtype(idx, "members", DType::int64);
  if (idx.ndim != 1)
    value_error("members: expected a 1-D index array or a range, got shape " + idx.shape_str());
  check_contiguous(idx, "members");
  Members m;
  m.count = idx.shape[0];
  m.index = static_cast<const int64_t*>(idx.data);
  m.device = idx.device;
  m.device_index = idx.device_index;
  m.given = true;
  return m;
}

void check_member_bounds(int64_t lo, int64_t hi, bool antithetic) {
  if (lo < 0) value_error("members: indices must be >= 0, got " + std::to_string(lo));
  const int64_t limit = antithetic ? (int64_t(1) << 33) : (int64_t(1) << 32);
  if (hi >= limit)
    value_error("members: index " + std::to_string(hi) +
                " too large (its noise index must fit 32 bits)");
}

void check_members(const Members& mem, int64_t expected, bool antithetic, const char* what) {
  if (!mem.given) return;
  if (mem.count < 0) value_error("members: negative count");
  if (mem.count != expected)
    value_error("members: has " + std::to_string(mem.count) +
                " entries but the leading dimension of " + what + " is " +
                std::to_string(expected));
  if (mem.count == 0) return;
  if (!mem.index) {  // a range: its extremes are its first and last member, O(1)
    // The last member in double first: start + (count - 1) * step may overflow int64.
    const double last = double(mem.start) + double(mem.count - 1) * double(mem.step);
    if (std::fabs(last) < 4e18) {
      const int64_t l = mem.start + (mem.count - 1) * mem.step;
      check_member_bounds(std::min(mem.start, l), std::max(mem.start, l), antithetic);
    } else {
      check_member_bounds(std::min<int64_t>(mem.start, last < 0 ? INT64_MIN : 0),
                          last < 0 ? mem.start : INT64_MAX, antithetic);
    }
    return;
  }
  if (mem.device != Device::cpu) return;  // device values: the caller's (see key.h)
  int64_t lo = mem.index[0], hi = mem.index[0];
  for (int64_t i = 1; i < mem.count; ++i) {
    lo = std::min(lo, mem.index[i]);
    hi = std::max(hi, mem.index[i]);
  }
  check_member_bounds(lo, hi, antithetic);
}

}  // namespace eggroll
