// Token losses of the LM head on CPU (bfloat16, Intel AMX tiles) without storing float32 logits,
// as XLA FFI custom calls for JAX.
//
// Forward: logits = h @ w (w [E, V] packed by amx.pack), lse[n] = logsumexp_v logits[n, v],
//          nll[n] = lse[n] - logits[n, target[n]] (lse alone where the target is outside [0, V)).
// Backward: dlogits[n, v] = ct[n] (exp(logits[n, v] - lse[n]) - [v == target[n]]) in bf16, the
//          logits recomputed on the tiles, for the caller's products (dh, dw).
//
// Why: XLA:CPU writes [N, V] float32 logits (400 MB for SmolLM2-135M at 4 x 512 tokens), runs the
// log-softmax and its gradient over them in several passes and converts the gradient to bf16.
//
// Work units as in amx_matmul.cc: (panel of 64-column vocabulary chunks, 16-row block). A
// forward unit leaves its rows' running (max, sum of exp) over its panel; one pass over the rows
// then combines the panels.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

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

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct Problem {
  const uint16_t* h;  // [N, E] bf16
  const uint16_t* w;  // packed [Vp / 16, E / 32, 16, 32]
  const int32_t* targets;
  int64_t n, e, vocab, k_blocks, n_chunks, m_blocks, per_panel, panels;
};

// Runs fn(chunk, m0, rows, acc) for the logits of every chunk of `panel` and 16-row block mb.
template <typename Fn>
void ForEachChunk(const Problem& p, int64_t panel, int64_t mb, int* configured_rows, Fn fn) {
  const int64_t m0 = mb * kTileRows;
  const int rows = static_cast<int>(std::min<int64_t>(kTileRows, p.n - m0));
  if (rows != *configured_rows) {
    ledex::ConfigureTiles(rows);
    *configured_rows = rows;
  }
  alignas(64) float acc[kTileRows * kChunkCols];
  const int64_t first = panel * p.per_panel, last = std::min(first + p.per_panel, p.n_chunks);
  for (int64_t chunk = first; chunk < last; ++chunk) {
    ledex::MultiplyChunk(p.h + m0 * p.e, static_cast<int>(p.e * sizeof(uint16_t)),
                         p.w + static_cast<size_t>(chunk) * 4 * p.k_blocks * kBTileElems, p.k_blocks, acc);
    fn(chunk, m0, rows, acc);
  }
}

template <typename Unit>
void RunUnits(ffi::ThreadPool& pool, const Problem& p, Unit unit) {
  ledex::ParallelFor(pool, p.panels * p.m_blocks, [&p, &unit](int64_t begin, int64_t end) {
    int configured_rows = -1;
    for (int64_t u = begin; u < end; ++u) unit(u / p.m_blocks, u % p.m_blocks, &configured_rows);
    _tile_release();
  });
}

// Checks h [N, E] bf16, packed w [Vp/16, E/32, 16, 32] bf16 (Vp - 64 < V <= Vp), targets [N] int32.
ffi::Error Check(const char* name, const ffi::AnyBuffer& h, const ffi::AnyBuffer& w, const ffi::AnyBuffer& targets,
                 int64_t vocab, Problem* p) {
  const auto hd = h.dimensions(), wd = w.dimensions(), td = targets.dimensions();
  if (h.element_type() != ffi::DataType::BF16 || w.element_type() != ffi::DataType::BF16 ||
      targets.element_type() != ffi::DataType::S32 || hd.size() != 2 || wd.size() != 4 || td.size() != 1 ||
      td[0] != hd[0] || wd[2] != 16 || wd[3] != 32 || wd[1] * kKBlock != hd[1] || wd[0] % 4 != 0 ||
      vocab > wd[0] * 16 || wd[0] * 16 - vocab >= kChunkCols) {
    return ffi::Error::InvalidArgument(std::string(name) +
                                       ": expected h [N, E] bf16, w packed by amx.pack from [E, vocab], targets [N] "
                                       "int32");
  }
  p->h = static_cast<const uint16_t*>(h.untyped_data());
  p->w = static_cast<const uint16_t*>(w.untyped_data());
  p->targets = static_cast<const int32_t*>(targets.untyped_data());
  p->n = hd[0];
  p->e = hd[1];
  p->vocab = vocab;
  p->k_blocks = p->e / kKBlock;
  p->n_chunks = wd[0] / 4;
  p->m_blocks = (p->n + kTileRows - 1) / kTileRows;
  p->per_panel = ledex::ChunksPerPanel(p->e, p->m_blocks);
  p->panels = (p->n_chunks + p->per_panel - 1) / p->per_panel;
  return ffi::Error::Success();
}

ffi::Error LmHeadLossForward(ffi::ThreadPool pool, ffi::AnyBuffer h, ffi::AnyBuffer w, ffi::AnyBuffer targets,
                             ffi::Result<ffi::AnyBuffer> nll, ffi::Result<ffi::AnyBuffer> lse, int64_t vocab) {
  Problem p;
  if (ffi::Error e = Check("lm_head_loss", h, w, targets, vocab, &p); e.failure()) return e;
  for (auto* out : {&nll, &lse}) {
    if ((*out)->element_type() != ffi::DataType::F32 || (*out)->dimensions().size() != 1 ||
        (*out)->dimensions()[0] != p.n) {
      return ffi::Error::InvalidArgument("lm_head_loss: nll and lse must be float32 [N]");
    }
  }
  if (p.n == 0) return ffi::Error::Success();
  // Per (row, panel): running max and sum of exp(logit - max); per row: the target's logit.
  std::vector<float> stats(p.n * p.panels * 2), picked(p.n, 0.0f);
  RunUnits(pool, p, [&](int64_t panel, int64_t mb, int* configured_rows) {
    float mx[kTileRows], sum[kTileRows];
    std::fill(mx, mx + kTileRows, kNegInf);
    std::fill(sum, sum + kTileRows, 0.0f);
    ForEachChunk(p, panel, mb, configured_rows, [&](int64_t chunk, int64_t m0, int rows, const float* acc) {
      const int64_t col0 = chunk * kChunkCols, cols = std::min<int64_t>(kChunkCols, p.vocab - col0);
      for (int r = 0; r < rows; ++r) {
        const float* row = acc + r * kChunkCols;
        const int64_t t = p.targets[m0 + r];
        if (t >= col0 && t < col0 + cols) picked[m0 + r] = row[t - col0];
        __m512 top = _mm512_set1_ps(kNegInf);
        for (int c = 0; c < kChunkCols; c += 16) top = _mm512_mask_max_ps(top, ledex::Lanes(cols - c), top, _mm512_loadu_ps(row + c));
        const float new_max = std::max(mx[r], _mm512_reduce_max_ps(top));
        if (new_max == kNegInf) continue;  // no columns here
        __m512 total = _mm512_setzero_ps();
        for (int c = 0; c < kChunkCols; c += 16) {
          const __m512 x = ledex::Exp(_mm512_sub_ps(_mm512_loadu_ps(row + c), _mm512_set1_ps(new_max)));
          total = _mm512_add_ps(total, _mm512_maskz_mov_ps(ledex::Lanes(cols - c), x));
        }
        sum[r] = sum[r] * std::exp(mx[r] - new_max) + _mm512_reduce_add_ps(total);
        mx[r] = new_max;
      }
    });
    const int64_t m0 = mb * kTileRows;
    for (int64_t r = 0; r < std::min<int64_t>(kTileRows, p.n - m0); ++r) {
      stats[((m0 + r) * p.panels + panel) * 2] = mx[r];
      stats[((m0 + r) * p.panels + panel) * 2 + 1] = sum[r];
    }
  });
  float* nll_out = static_cast<float*>(nll->untyped_data());
  float* lse_out = static_cast<float*>(lse->untyped_data());
  for (int64_t i = 0; i < p.n; ++i) {
    const float* s = stats.data() + i * p.panels * 2;
    float top = kNegInf;
    for (int64_t q = 0; q < p.panels; ++q) top = std::max(top, s[2 * q]);
    double total = 0.0;
    for (int64_t q = 0; q < p.panels; ++q) total += s[2 * q + 1] * std::exp(s[2 * q] - top);
    lse_out[i] = top + static_cast<float>(std::log(total));
    nll_out[i] = lse_out[i] - picked[i];
  }
  return ffi::Error::Success();
}

ffi::Error LmHeadLossBackward(ffi::ThreadPool pool, ffi::AnyBuffer h, ffi::AnyBuffer w, ffi::AnyBuffer targets,
                              ffi::AnyBuffer lse, ffi::AnyBuffer ct, ffi::Result<ffi::AnyBuffer> dlogits,
                              int64_t vocab) {
  Problem p;
  if (ffi::Error e = Check("lm_head_loss_backward", h, w, targets, vocab, &p); e.failure()) return e;
  const auto dd = dlogits->dimensions();
  if (!ledex::SameDims(lse.dimensions(), targets.dimensions()) || !ledex::SameDims(ct.dimensions(), targets.dimensions()) ||
      lse.element_type() != ffi::DataType::F32 || ct.element_type() != ffi::DataType::F32 ||
      dlogits->element_type() != ffi::DataType::BF16 || dd.size() != 2 || dd[0] != p.n || dd[1] != p.vocab) {
    return ffi::Error::InvalidArgument(
        "lm_head_loss_backward: expected lse, ct float32 [N] and dlogits bfloat16 [N, vocab]");
  }
  const float* lse_in = static_cast<const float*>(lse.untyped_data());
  const float* ct_in = static_cast<const float*>(ct.untyped_data());
  uint16_t* out = static_cast<uint16_t*>(dlogits->untyped_data());
  RunUnits(pool, p, [&](int64_t panel, int64_t mb, int* configured_rows) {
    ForEachChunk(p, panel, mb, configured_rows, [&](int64_t chunk, int64_t m0, int rows, float* acc) {
      const int64_t col0 = chunk * kChunkCols, cols = std::min<int64_t>(kChunkCols, p.vocab - col0);
      for (int r = 0; r < rows; ++r) {
        float* row = acc + r * kChunkCols;
        const float g = ct_in[m0 + r], row_lse = lse_in[m0 + r];
        for (int c = 0; c < kChunkCols; c += 16) {
          const __m512 prob = ledex::Exp(_mm512_sub_ps(_mm512_loadu_ps(row + c), _mm512_set1_ps(row_lse)));
          _mm512_storeu_ps(row + c, _mm512_mul_ps(prob, _mm512_set1_ps(g)));
        }
        const int64_t t = p.targets[m0 + r];
        if (t >= col0 && t < col0 + cols) row[t - col0] -= g;
        uint16_t* dst = out + (m0 + r) * p.vocab + col0;
        for (int c = 0; c < cols; c += 16) ledex::StoreBf16x16(dst + c, _mm512_loadu_ps(row + c), ledex::Lanes(cols - c));
      }
    });
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LedexLmHeadLossForward, LmHeadLossForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("vocab"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(LedexLmHeadLossBackward, LmHeadLossBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("vocab"));
