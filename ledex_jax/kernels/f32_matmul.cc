// float32 matrix product for few rows (decode), AVX-512, as an XLA FFI custom call for JAX on CPU.
//
// y[M, N] = x[M, K] @ w[K, N], all float32, `w` pre-packed (ledex_jax/kernels/f32.py: `pack`) as
// column panels [Np / 16, K, 16] (Np = N rounded up to 32, zero columns): one 64-byte vector per
// (panel, k), read once per row block. A unit is 2 panels x up to 8 rows: 16 accumulators.
//
// Why: XLA:CPU's float32 products with 1-16 rows run at 8-90 GFLOP/s here (1 x 576 x 1536:
// 0.23 ms), below what streaming the weights allows; decode is such products end to end.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kPanel = 16;
constexpr int kRowBlock = 8;

struct Problem {
  const float *x, *w;
  float* y;
  int64_t m, k, n, pairs, row_blocks;
};

template <int Rows>
void RunBlock(const Problem& p, int64_t pair, int64_t m0) {
  const float* w0 = p.w + (2 * pair) * p.k * kPanel;
  const float* w1 = w0 + p.k * kPanel;
  const float* x = p.x + m0 * p.k;
  __m512 acc0[Rows], acc1[Rows];
#pragma GCC unroll 8
  for (int r = 0; r < Rows; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
  for (int64_t k = 0; k < p.k; ++k) {
    const __m512 a = _mm512_loadu_ps(w0 + k * kPanel), b = _mm512_loadu_ps(w1 + k * kPanel);
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
      const __m512 v = _mm512_set1_ps(x[r * p.k + k]);
      acc0[r] = _mm512_fmadd_ps(v, a, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(v, b, acc1[r]);
    }
  }
  const int64_t col = 2 * pair * kPanel;
  const int64_t left0 = std::clamp<int64_t>(p.n - col, 0, kPanel);
  const int64_t left1 = std::clamp<int64_t>(p.n - col - kPanel, 0, kPanel);
  const __mmask16 m0_mask = static_cast<__mmask16>((1u << left0) - 1u);
  const __mmask16 m1_mask = static_cast<__mmask16>((1u << left1) - 1u);
#pragma GCC unroll 8
  for (int r = 0; r < Rows; ++r) {
    float* out = p.y + (m0 + r) * p.n + col;
    _mm512_mask_storeu_ps(out, m0_mask, acc0[r]);
    _mm512_mask_storeu_ps(out + kPanel, m1_mask, acc1[r]);
  }
}

void RunUnit(const Problem& p, int64_t unit) {
  const int64_t pair = unit / p.row_blocks, m0 = (unit % p.row_blocks) * kRowBlock;
  switch (std::min<int64_t>(kRowBlock, p.m - m0)) {
    case 1: return RunBlock<1>(p, pair, m0);
    case 2: return RunBlock<2>(p, pair, m0);
    case 3: return RunBlock<3>(p, pair, m0);
    case 4: return RunBlock<4>(p, pair, m0);
    case 5: return RunBlock<5>(p, pair, m0);
    case 6: return RunBlock<6>(p, pair, m0);
    case 7: return RunBlock<7>(p, pair, m0);
    default: return RunBlock<8>(p, pair, m0);
  }
}

ffi::Error F32Matmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                     ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions(), wd = w.dimensions(), yd = y->dimensions();
  if (xd.size() != 2 || wd.size() != 3 || yd.size() != 2 || wd[2] != kPanel) {
    return ffi::Error::InvalidArgument("f32_matmul: expected x [M, K], packed w [Np/16, K, 16], y [M, N]");
  }
  Problem p;
  p.m = xd[0];
  p.k = xd[1];
  p.n = yd[1];
  if (yd[0] != p.m || wd[1] != p.k || wd[0] % 2 != 0 || wd[0] * kPanel < p.n || wd[0] * kPanel - p.n >= 2 * kPanel) {
    return ffi::Error::InvalidArgument("f32_matmul: x, packed w and y shapes disagree");
  }
  p.x = x.typed_data();
  p.w = w.typed_data();
  p.y = y->typed_data();
  p.pairs = wd[0] / 2;
  p.row_blocks = (p.m + kRowBlock - 1) / kRowBlock;
  if (p.m == 0 || p.n == 0) return ffi::Error::Success();
  // Pair-major unit order: a pair's panels stay in cache while its row blocks run.
  ledex::ParallelFor(pool, p.pairs * p.row_blocks, [&p](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) RunUnit(p, u);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LedexF32Matmul, F32Matmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
