// bfloat16 matrix product on Intel AMX tiles, as an XLA FFI custom call for JAX on CPU.
//
// y[M, N] = x[M, K] @ w[K, N], bf16 inputs, float32 accumulation, f32 or bf16 output.
// `w` arrives pre-packed (ledex_jax/kernels/amx.py: `pack`) as [Np / 16, K / 32, 16, 32]:
// block (nb, kb) is one 16 x 64-byte B tile whose row r holds, for each of its 16 columns c,
// the pair (w[32 kb + 2 r, 16 nb + c], w[32 kb + 2 r + 1, 16 nb + c]) -- the VNNI layout that
// TDPBF16PS reads. Np is N rounded up to 64 (zero columns), so every work unit uses 4 C tiles.
//
// Why: XLA:CPU's bf16 products with few rows (decode) reach 20-140 GFLOP/s here, and its
// weight-gradient form (both operands contracting their major axis) ~280; the tiles do 600+
// GFLOP/s on one core and stream decode-time weights at memory speed.
//
// Work is split over (panel of 64-column chunks, 16-row block) units (`ledex::ParallelFor`).
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "amx_tiles.h"
#include "kernel_utils.h"
#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using ledex::kBTileElems;
using ledex::kChunkCols;
using ledex::kKBlock;
using ledex::kTileRows;

struct Problem {
  const uint16_t* x;   // [M, K] bf16 bits
  const uint16_t* w;   // packed
  void* y;             // [M, N] f32 or bf16
  bool bf16_out;
  int64_t m, k, n, n_chunks, m_blocks;
};

void StoreChunk(const Problem& p, const float* acc, int64_t m0, int rows, int64_t col0) {
  const int64_t cols = std::min<int64_t>(kChunkCols, p.n - col0);
  for (int r = 0; r < rows; ++r) {
    const float* src = acc + r * kChunkCols;
    if (p.bf16_out) {
      uint16_t* dst = static_cast<uint16_t*>(p.y) + (m0 + r) * p.n + col0;
      for (int64_t c = 0; c < cols; c += 16) ledex::StoreBf16x16(dst + c, _mm512_loadu_ps(src + c), ledex::Lanes(cols - c));
    } else {
      float* dst = static_cast<float*>(p.y) + (m0 + r) * p.n + col0;
      std::memcpy(dst, src, cols * sizeof(float));
    }
  }
}

// One unit: rows [16 mb, 16 mb + rows) x columns [64 chunk, 64 chunk + 64).
void RunUnit(const Problem& p, int64_t chunk, int64_t mb, int* configured_rows) {
  const int64_t m0 = mb * kTileRows;
  const int rows = static_cast<int>(std::min<int64_t>(kTileRows, p.m - m0));
  if (rows != *configured_rows) {
    ledex::ConfigureTiles(rows);
    *configured_rows = rows;
  }
  const int64_t k_blocks = p.k / kKBlock;
  alignas(64) float acc[kTileRows * kChunkCols];
  ledex::MultiplyChunk(p.x + m0 * p.k, static_cast<int>(p.k * sizeof(uint16_t)),
                       p.w + static_cast<size_t>(chunk) * 4 * k_blocks * kBTileElems, k_blocks, acc);
  StoreChunk(p, acc, m0, rows, chunk * kChunkCols);
}

ffi::Error AmxMatmul(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer w,
                     ffi::Result<ffi::AnyBuffer> y) {
  if (x.element_type() != ffi::DataType::BF16 || w.element_type() != ffi::DataType::BF16) {
    return ffi::Error::InvalidArgument("amx_matmul: x and w must be bfloat16");
  }
  const auto xd = x.dimensions(), wd = w.dimensions(), yd = y->dimensions();
  if (xd.size() != 2 || wd.size() != 4 || yd.size() != 2 || wd[2] != 16 || wd[3] != 32) {
    return ffi::Error::InvalidArgument("amx_matmul: expected x [M, K], packed w [Np/16, K/32, 16, 32], y [M, N]");
  }
  Problem p;
  p.m = xd[0];
  p.k = xd[1];
  p.n = yd[1];
  if (yd[0] != p.m || wd[1] * kKBlock != p.k || wd[0] % 4 != 0 || wd[0] * 16 < p.n ||
      wd[0] * 16 - p.n >= kChunkCols) {
    return ffi::Error::InvalidArgument("amx_matmul: x, packed w and y shapes disagree");
  }
  if (y->element_type() != ffi::DataType::F32 && y->element_type() != ffi::DataType::BF16) {
    return ffi::Error::InvalidArgument("amx_matmul: y must be float32 or bfloat16");
  }
  p.bf16_out = y->element_type() == ffi::DataType::BF16;
  p.x = static_cast<const uint16_t*>(x.untyped_data());
  p.w = static_cast<const uint16_t*>(w.untyped_data());
  p.y = y->untyped_data();
  p.n_chunks = wd[0] / 4;
  p.m_blocks = (p.m + kTileRows - 1) / kTileRows;
  if (p.m == 0 || p.n == 0) return ffi::Error::Success();

  // Units are (panel of chunks, row block): a panel's packed weights (<= kPanelBytes) stay in L2
  // while the row blocks pass, and each row block's A rows stay in L1 across the panel's chunks.
  // (Chunk by chunk over all rows, M = 2048 re-read A from L3 for every chunk: 1.4x slower.)
  // Few row blocks (decode): one chunk per unit (`ChunksPerPanel`).
  const int64_t per_panel = ledex::ChunksPerPanel(p.k, p.m_blocks);
  const int64_t panels = (p.n_chunks + per_panel - 1) / per_panel;
  ledex::ParallelFor(pool, panels * p.m_blocks, [&p, per_panel](int64_t begin, int64_t end) {
    int configured_rows = -1;
    for (int64_t u = begin; u < end; ++u) {
      const int64_t first = (u / p.m_blocks) * per_panel, last = std::min(first + per_panel, p.n_chunks);
      for (int64_t chunk = first; chunk < last; ++chunk) RunUnit(p, chunk, u % p.m_blocks, &configured_rows);
    }
    _tile_release();
  });
  return ffi::Error::Success();
}

// Packs w [K, N] (K a multiple of 32) into out [Np / 16, K / 32, 16, 32]: what `amx.pack` did with
// XLA's reshape/transpose, whose copies ran at ~3 GB/s inside a train step (0.5 s of a bf16
// SmolLM2 step). Columns past N are zeros. Units: 64-column chunks.
// transposed: w arrives as w^T [N, K] (a weight whose transpose is multiplied, e.g. in an input
// gradient): tile row r, column c is then the pair at w^T[16 nb + c, 32 kb + 2r], one 4-byte load.
ffi::Error AmxPack(ffi::ThreadPool pool, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> out, bool transposed) {
  const auto wd = w.dimensions(), od = out->dimensions();
  const int64_t k = transposed ? wd[1] : wd[0], n = transposed ? wd[0] : wd[1];
  if (w.element_type() != ffi::DataType::BF16 || out->element_type() != ffi::DataType::BF16 || wd.size() != 2 ||
      od.size() != 4 || k % kKBlock != 0 || od[1] * kKBlock != k || od[2] != 16 || od[3] != 32 ||
      od[0] % 4 != 0 || od[0] * 16 < n || od[0] * 16 - n >= kChunkCols) {
    return ffi::Error::InvalidArgument(
        "amx_pack: expected w [K, N] (or [N, K] if transposed) bfloat16, K a multiple of 32, and out "
        "[Np/16, K/32, 16, 32] bfloat16");
  }
  const int64_t k_blocks = k / kKBlock, chunks = od[0] / 4;
  const uint16_t* src = static_cast<const uint16_t*>(w.untyped_data());
  uint16_t* dst = static_cast<uint16_t*>(out->untyped_data());
  if (transposed) {
    ledex::ParallelFor(pool, chunks * 4, [=](int64_t begin, int64_t end) {
      for (int64_t nb = begin; nb < end; ++nb) {
        for (int64_t kb = 0; kb < k_blocks; ++kb) {
          uint32_t* tile = reinterpret_cast<uint32_t*>(dst + (nb * k_blocks + kb) * 16 * 32);
          for (int c = 0; c < 16; ++c) {
            const int64_t row = nb * 16 + c;
            const uint32_t* pairs = reinterpret_cast<const uint32_t*>(src + row * k + kb * kKBlock);
            for (int r = 0; r < 16; ++r) tile[r * 16 + c] = row < n ? pairs[r] : 0;
          }
        }
      }
    });
    return ffi::Error::Success();
  }
  ledex::ParallelFor(pool, chunks, [=](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      for (int64_t kb = 0; kb < k_blocks; ++kb) {
        for (int r = 0; r < 16; ++r) {
          const uint16_t* row0 = src + (kb * kKBlock + 2 * r) * n;
          for (int j = 0; j < 4; ++j) {  // rows 2r and 2r + 1 of the chunk's 4 column blocks, interleaved
            const int64_t nb = 4 * chunk + j, n0 = nb * 16;
            const __mmask16 mask = ledex::Lanes(n - n0);
            const __m256i lo = _mm256_maskz_loadu_epi16(mask, row0 + n0);
            const __m256i hi = _mm256_maskz_loadu_epi16(mask, row0 + n + n0);
            const __m512i pairs =
                _mm512_or_si512(_mm512_cvtepu16_epi32(lo), _mm512_slli_epi32(_mm512_cvtepu16_epi32(hi), 16));
            _mm512_storeu_si512(dst + ((nb * k_blocks + kb) * 16 + r) * 32, pairs);
          }
        }
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LedexAmxMatmul, AmxMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(LedexAmxPack, AmxPack,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<bool>("transposed"));

// Linux grants AMX tile state to a process only on request; 0 when granted.
extern "C" int LedexAmxRequestPermission() {
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return static_cast<int>(syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata));
}
