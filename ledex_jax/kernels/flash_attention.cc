// Attention for training and scoring on CPU (bfloat16, Intel AMX tiles), forward and backward, as
// XLA FFI custom calls for JAX: the [T, S] score matrix is never stored, only 32 query rows of it
// at a time, and products run on the tiles.
//
// Forward: out[b, t, h, :] = softmax_s(scale * q[b, t, h, :] . k[b, s, h / G, :] | visible[b, t, s])
//          @ v[b, s, h / G, :], plus lse[b, h, t] = the row's log-sum-exp (for the backward).
// q, out [B, T, H, D], k, v [B, S, Hkv, D] (as projected: no transposes), visible [B, T, S] bool
// (causal, padding and packed-segment masks alike). Numerics follow the XLA path
// (`ops.attention.dot_attention`): float32 scores and softmax, probabilities rounded to bfloat16 before the
// value product, float32 accumulation. A query row that sees nothing gets zeros (XLA's path
// averages every value there; such rows are padding, whose outputs nothing reads).
//
// Backward (given dout): p = exp(scale s - lse), dp = dout v^T, ds = p (dp - sum(p dp)) scale;
// dq = ds k, dk = ds^T q, dv = p^T dout, with bf16 operands and float32 accumulation.
//
// Why: XLA:CPU runs attention as batched products with the [B, Hkv, G, T, S] scores, softmax and
// their transposes materialised in float32: ~2.3 s of a 7 s bf16 SmolLM2 train step (4 x 512).
//
// Work unit: one (b, kv head) -- its G query heads share the packed keys/values, and in the
// backward its dk/dv accumulators belong to one thread. Within a unit, 32-row query blocks visit
// only the 32-key blocks their mask rows can see (causal: about half).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "amx_tiles.h"
#include "kernel_utils.h"
#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kRows = 32;      // query rows per block: two 16-row tiles
constexpr int kKeys = 32;      // key-range granularity
constexpr int kTile = 16 * 32;  // bf16 elements in one A/B tile (16 rows x 64 bytes)



struct Dims {
  int64_t batch, t, s, heads, kv_heads, groups, dim;
  int64_t s_pad;  // S rounded up to kKeys
  float scale;
};

// B operand for x^T (x: [rows, D] with row stride `stride`): tile (rb, db) holds, in row r and
// column c, the pair x[16 rb + c, 32 db + 2r .. +1]; rows >= `rows` are zero. [rows_pad/16, D/32, 16, 32].
void PackTransposed(const uint16_t* x, int64_t stride, int64_t rows, int64_t rows_pad, int64_t d, uint16_t* out) {
  const int64_t nd = d / 32;
  for (int64_t rb = 0; rb < rows_pad / 16; ++rb) {
    for (int64_t db = 0; db < nd; ++db) {
      uint32_t* tile = reinterpret_cast<uint32_t*>(out + (rb * nd + db) * kTile);
      for (int c = 0; c < 16; ++c) {
        const int64_t row = rb * 16 + c;
        if (row >= rows) {
          for (int r = 0; r < 16; ++r) tile[r * 16 + c] = 0;
          continue;
        }
        const uint32_t* src = reinterpret_cast<const uint32_t*>(x + row * stride + db * 32);
        for (int r = 0; r < 16; ++r) tile[r * 16 + c] = src[r];
      }
    }
  }
}

// B operand for x itself (x: [rows, D], contracted over rows): tile (rb, db) holds, in row r and
// column c, the pair (x[32 rb + 2r, 16 db + c], x[32 rb + 2r + 1, 16 db + c]). [rows_pad/32, D/16, 16, 32].
void PackRows(const uint16_t* x, int64_t stride, int64_t rows, int64_t rows_pad, int64_t d, uint16_t* out) {
  const int64_t nd = d / 16;
  for (int64_t rb = 0; rb < rows_pad / 32; ++rb) {
    for (int64_t db = 0; db < nd; ++db) {
      uint16_t* tile = out + (rb * nd + db) * kTile;
      for (int r = 0; r < 16; ++r) {
        for (int e = 0; e < 2; ++e) {
          const int64_t row = rb * 32 + 2 * r + e;
          const uint16_t* src = x + row * stride + db * 16;
          for (int c = 0; c < 16; ++c) tile[r * 32 + 2 * c + e] = row < rows ? src[c] : 0;
        }
      }
    }
  }
}

// The unit's (b, kv head) keys or values, x [B, S, Hkv, D], packed as the B operand of
// (rows @ x^T) if `transposed`, else of (rows @ x).
void PackUnit(const uint16_t* x, const Dims& p, int64_t unit, bool transposed, std::vector<uint16_t>& out) {
  const int64_t b = unit / p.kv_heads, hk = unit % p.kv_heads;
  out.resize(p.s_pad * p.dim);
  const uint16_t* base = x + (b * p.s * p.kv_heads + hk) * p.dim;
  (transposed ? PackTransposed : PackRows)(base, p.kv_heads * p.dim, p.s, p.s_pad, p.dim, out.data());
}

// scores[32, n] (row stride n floats) = a[32, D] (bf16, stride D) @ b^T, b packed by
// PackTransposed from key block `kb0` (16-key blocks) on; n a multiple of 32.
void Scores(const uint16_t* a, const uint16_t* b_packed, int64_t kb0, int64_t n, int64_t d, float* scores) {
  const int64_t nd = d / 32;
  const int a_stride = static_cast<int>(d * 2), c_stride = static_cast<int>(n * 4);
  for (int64_t j = 0; j < n / 16; j += 2) {
    const uint16_t* b0 = b_packed + (kb0 + j) * nd * kTile;
    const uint16_t* b1 = b0 + nd * kTile;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t db = 0; db < nd; ++db) {
      _tile_loadd(4, a + db * 32, a_stride);
      _tile_loadd(5, b0 + db * kTile, 64);
      _tile_loadd(6, b1 + db * kTile, 64);
      _tile_dpbf16ps(0, 4, 5);
      _tile_dpbf16ps(1, 4, 6);
      _tile_loadd(7, a + 16 * d + db * 32, a_stride);
      _tile_dpbf16ps(2, 7, 5);
      _tile_dpbf16ps(3, 7, 6);
    }
    float* c = scores + j * 16;
    _tile_stored(0, c, c_stride);
    _tile_stored(1, c + 16, c_stride);
    _tile_stored(2, c + 16 * n, c_stride);
    _tile_stored(3, c + 16 * n + 16, c_stride);
  }
}

// out[16, 64] float32 (stride 64) = a[16, 32 nb] (bf16, stride a_stride bytes) @ the 64 columns
// [16 db0, 16 db0 + 64) of b, packed by PackRows (32-row blocks rb0 .. rb0 + nb); `accumulate`
// adds to what out holds.
void RowsTimesPacked(const uint16_t* a, int a_stride, const uint16_t* b_packed, int64_t nd16, int64_t rb0,
                     int64_t nb, int64_t db0, float* out, int out_stride, bool accumulate) {
  if (accumulate) {
    _tile_loadd(0, out, out_stride);
    _tile_loadd(1, out + 16, out_stride);
    _tile_loadd(2, out + 32, out_stride);
    _tile_loadd(3, out + 48, out_stride);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t i = 0; i < nb; ++i) {
    const uint16_t* b = b_packed + ((rb0 + i) * nd16 + db0) * kTile;
    _tile_loadd(4, a + i * 32, a_stride);
    _tile_loadd(5, b, 64);
    _tile_dpbf16ps(0, 4, 5);
    _tile_loadd(6, b + kTile, 64);
    _tile_dpbf16ps(1, 4, 6);
    _tile_loadd(7, b + 2 * kTile, 64);
    _tile_dpbf16ps(2, 4, 7);
    _tile_loadd(5, b + 3 * kTile, 64);
    _tile_dpbf16ps(3, 4, 5);
  }
  _tile_stored(0, out, out_stride);
  _tile_stored(1, out + 16, out_stride);
  _tile_stored(2, out + 32, out_stride);
  _tile_stored(3, out + 48, out_stride);
}

// The 32-aligned key range [lo, lo + n) holding every key that query rows [t0, t0 + rows) of
// batch b can see; n == 0 if they see none.
struct KeyRange {
  int64_t lo, n;
};
KeyRange BlockKeys(const bool* visible, const Dims& p, int64_t b, int64_t t0, int64_t rows) {
  int64_t lo = p.s, hi = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const bool* m = visible + (b * p.t + t0 + r) * p.s;
    int64_t first = 0;
    while (first < p.s && !m[first]) ++first;
    if (first == p.s) continue;
    int64_t last = p.s;
    while (!m[last - 1]) --last;
    lo = std::min(lo, first);
    hi = std::max(hi, last);
  }
  if (hi <= lo) return {0, 0};
  lo = lo / kKeys * kKeys;
  return {lo, (hi + kKeys - 1) / kKeys * kKeys - lo};
}

// x[b, t0 + r, h, :] = (a @ packed)[r] for the block's rows: a [32, n] bf16 (row stride n), packed by
// PackRows from 32-key block lo / 32 on; 16 rows x 64 columns at a time through acc [16, 64].
void BlockTimesPacked(const uint16_t* a, int64_t n, const uint16_t* packed, int64_t lo, const Dims& p, int64_t b,
                      int64_t h, int64_t t0, int64_t rows, uint16_t* x, float* acc) {
  for (int64_t half = 0; half < 2 && half * 16 < rows; ++half) {
    for (int64_t c0 = 0; c0 < p.dim; c0 += 64) {
      RowsTimesPacked(a + half * 16 * n, static_cast<int>(n * 2), packed, p.dim / 16, lo / kKeys, n / kKeys,
                      c0 / 16, acc, 64 * 4, false);
      for (int64_t r = 0; r < 16 && half * 16 + r < rows; ++r) {
        uint16_t* dst = x + ((b * p.t + t0 + half * 16 + r) * p.heads + h) * p.dim + c0;
        for (int c = 0; c < 64; c += 16) ledex::StoreBf16x16(dst + c, _mm512_loadu_ps(acc + r * 64 + c));
      }
    }
  }
}

// Copies query rows [t0, t0 + rows) of head h ([B, T, H, D] x) into a zero-padded [32, D] block.
void LoadRows(const uint16_t* x, const Dims& p, int64_t b, int64_t h, int64_t t0, int64_t rows, uint16_t* block) {
  for (int64_t r = 0; r < kRows; ++r) {
    uint16_t* dst = block + r * p.dim;
    if (r < rows) {
      std::memcpy(dst, x + ((b * p.t + t0 + r) * p.heads + h) * p.dim, p.dim * 2);
    } else {
      std::memset(dst, 0, p.dim * 2);
    }
  }
}

// scale * score, -inf where the mask row hides the key (or beyond S), for n keys from `lo`.
inline __m512 MaskedScores(const float* s, const bool* mask_row, int64_t lo, int64_t i, int64_t s_all, float scale) {
  const __m512 x = _mm512_mul_ps(_mm512_loadu_ps(s + i), _mm512_set1_ps(scale));
  const int64_t key = lo + i;
  const __m128i bytes = _mm_maskz_loadu_epi8(ledex::Lanes(s_all - key), mask_row + key);
  const __mmask16 seen = _mm_test_epi8_mask(bytes, bytes);
  return _mm512_mask_blend_ps(seen, _mm512_set1_ps(-std::numeric_limits<float>::infinity()), x);
}

struct Buffers {
  std::vector<uint16_t> k_t, k_rows, v_t, v_rows;  // packed keys/values of the unit
  std::vector<uint16_t> q_block, do_block, q_rows, do_rows;
  std::vector<float> scores, dp, acc;
  std::vector<uint16_t> p_bf16, p_t, ds, ds_t;
  std::vector<float> dk, dv;
};

struct Forward {
  const uint16_t *q, *k, *v;
  const bool* visible;
  uint16_t* out;
  float* lse;
};

void ForwardUnit(const Dims& p, const Forward& f, int64_t unit, Buffers& w) {
  const int64_t b = unit / p.kv_heads, hk = unit % p.kv_heads, d = p.dim;
  PackUnit(f.k, p, unit, true, w.k_t);
  PackUnit(f.v, p, unit, false, w.v_rows);
  w.q_block.resize(kRows * d);
  w.acc.resize(16 * 64);

  for (int64_t t0 = 0; t0 < p.t; t0 += kRows) {
    const int64_t rows = std::min<int64_t>(kRows, p.t - t0);
    const auto [lo, n] = BlockKeys(f.visible, p, b, t0, rows);
    w.scores.resize(kRows * std::max<int64_t>(n, 1));
    w.p_bf16.resize(kRows * std::max<int64_t>(n, 1));
    for (int64_t g = 0; g < p.groups; ++g) {
      const int64_t h = hk * p.groups + g;
      if (n == 0) {
        for (int64_t r = 0; r < rows; ++r) {
          std::memset(f.out + ((b * p.t + t0 + r) * p.heads + h) * d, 0, d * 2);
          f.lse[(b * p.heads + h) * p.t + t0 + r] = -std::numeric_limits<float>::infinity();
        }
        continue;
      }
      LoadRows(f.q, p, b, h, t0, rows, w.q_block.data());
      Scores(w.q_block.data(), w.k_t.data(), lo / 16, n, d, w.scores.data());
      // Softmax per row; probabilities rounded to bf16 for the value product.
      for (int64_t r = 0; r < kRows; ++r) {
        uint16_t* pr = w.p_bf16.data() + r * n;
        float* lse = r < rows ? &f.lse[(b * p.heads + h) * p.t + t0 + r] : nullptr;
        if (r >= rows) {
          std::memset(pr, 0, n * 2);
          continue;
        }
        const bool* mask = f.visible + (b * p.t + t0 + r) * p.s;
        const float* s = w.scores.data() + r * n;
        __m512 mx = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
        for (int64_t i = 0; i < n; i += 16) mx = _mm512_max_ps(mx, MaskedScores(s, mask, lo, i, p.s, p.scale));
        const float top = _mm512_reduce_max_ps(mx);
        if (top == -std::numeric_limits<float>::infinity()) {  // this row sees nothing
          std::memset(pr, 0, n * 2);
          *lse = top;
          continue;
        }
        __m512 total = _mm512_setzero_ps();
        float* e = w.scores.data() + r * n;  // exponentials overwrite the scores
        for (int64_t i = 0; i < n; i += 16) {
          const __m512 x = ledex::Exp(_mm512_sub_ps(MaskedScores(s, mask, lo, i, p.s, p.scale), _mm512_set1_ps(top)));
          _mm512_storeu_ps(e + i, x);
          total = _mm512_add_ps(total, x);
        }
        const float sum = _mm512_reduce_add_ps(total);
        const __m512 inv = _mm512_set1_ps(1.0f / sum);
        for (int64_t i = 0; i < n; i += 16) ledex::StoreBf16x16(pr + i, _mm512_mul_ps(_mm512_loadu_ps(e + i), inv));
        *lse = top + std::log(sum);
      }
      BlockTimesPacked(w.p_bf16.data(), n, w.v_rows.data(), lo, p, b, h, t0, rows, f.out, w.acc.data());  // p @ v
    }
  }
}

struct Backward {
  const uint16_t *q, *k, *v, *dout;
  const bool* visible;
  const float* lse;
  uint16_t *dq, *dk, *dv;
};

void BackwardUnit(const Dims& p, const Backward& f, int64_t unit, Buffers& w) {
  const int64_t b = unit / p.kv_heads, hk = unit % p.kv_heads, d = p.dim;
  PackUnit(f.k, p, unit, true, w.k_t);
  PackUnit(f.k, p, unit, false, w.k_rows);
  PackUnit(f.v, p, unit, true, w.v_t);
  w.dk.assign(p.s_pad * d, 0.0f);
  w.dv.assign(p.s_pad * d, 0.0f);
  w.q_block.resize(kRows * d);
  w.do_block.resize(kRows * d);
  w.q_rows.resize(kRows * d);
  w.do_rows.resize(kRows * d);
  w.acc.resize(16 * 64);

  for (int64_t t0 = 0; t0 < p.t; t0 += kRows) {
    const int64_t rows = std::min<int64_t>(kRows, p.t - t0);
    const auto [lo, n] = BlockKeys(f.visible, p, b, t0, rows);
    if (n > 0) {
      w.scores.resize(kRows * n);
      w.dp.resize(kRows * n);
      w.p_t.resize(n * kRows);
      w.ds.resize(kRows * n);
      w.ds_t.resize(n * kRows);
    }
    for (int64_t g = 0; g < p.groups; ++g) {
      const int64_t h = hk * p.groups + g;
      if (n == 0) {
        for (int64_t r = 0; r < rows; ++r) std::memset(f.dq + ((b * p.t + t0 + r) * p.heads + h) * d, 0, d * 2);
        continue;
      }
      LoadRows(f.q, p, b, h, t0, rows, w.q_block.data());
      LoadRows(f.dout, p, b, h, t0, rows, w.do_block.data());
      PackRows(w.q_block.data(), d, kRows, kRows, d, w.q_rows.data());
      PackRows(w.do_block.data(), d, kRows, kRows, d, w.do_rows.data());
      Scores(w.q_block.data(), w.k_t.data(), lo / 16, n, d, w.scores.data());
      Scores(w.do_block.data(), w.v_t.data(), lo / 16, n, d, w.dp.data());
      for (int64_t r = 0; r < kRows; ++r) {
        uint16_t* ds = w.ds.data() + r * n;
        const float row_lse = r < rows ? f.lse[(b * p.heads + h) * p.t + t0 + r]
                                       : -std::numeric_limits<float>::infinity();
        if (row_lse == -std::numeric_limits<float>::infinity()) {  // padding row or one that sees nothing
          std::memset(ds, 0, n * 2);
          for (int64_t i = 0; i < n; ++i) w.p_t[i * kRows + r] = w.ds_t[i * kRows + r] = 0;
          continue;
        }
        const bool* mask = f.visible + (b * p.t + t0 + r) * p.s;
        float* pr = w.scores.data() + r * n;  // probabilities overwrite the scores
        const float* dpr = w.dp.data() + r * n;
        __m512 dot = _mm512_setzero_ps();
        for (int64_t i = 0; i < n; i += 16) {
          const __m512 x = ledex::Exp(_mm512_sub_ps(MaskedScores(pr, mask, lo, i, p.s, p.scale), _mm512_set1_ps(row_lse)));
          _mm512_storeu_ps(pr + i, x);
          dot = _mm512_fmadd_ps(x, _mm512_loadu_ps(dpr + i), dot);
        }
        const __m512 delta = _mm512_set1_ps(_mm512_reduce_add_ps(dot)), scale = _mm512_set1_ps(p.scale);
        alignas(64) uint16_t pb[16], db[16];
        for (int64_t i = 0; i < n; i += 16) {
          const __m512 x = _mm512_loadu_ps(pr + i);
          const __m512 grad = _mm512_mul_ps(_mm512_mul_ps(x, _mm512_sub_ps(_mm512_loadu_ps(dpr + i), delta)), scale);
          ledex::StoreBf16x16(ds + i, grad);
          ledex::StoreBf16x16(pb, x);
          std::memcpy(db, ds + i, sizeof db);
          for (int j = 0; j < 16; ++j) {
            w.p_t[(i + j) * kRows + r] = pb[j];
            w.ds_t[(i + j) * kRows + r] = db[j];
          }
        }
      }
      // dv += p^T dout and dk += ds^T q over this block's keys, 16 keys x 64 columns at a time.
      for (int64_t i = 0; i < n; i += 16) {
        for (int64_t c0 = 0; c0 < d; c0 += 64) {
          RowsTimesPacked(w.p_t.data() + i * kRows, kRows * 2, w.do_rows.data(), d / 16, 0, 1, c0 / 16,
                          w.dv.data() + (lo + i) * d + c0, static_cast<int>(d * 4), true);
          RowsTimesPacked(w.ds_t.data() + i * kRows, kRows * 2, w.q_rows.data(), d / 16, 0, 1, c0 / 16,
                          w.dk.data() + (lo + i) * d + c0, static_cast<int>(d * 4), true);
        }
      }
      BlockTimesPacked(w.ds.data(), n, w.k_rows.data(), lo, p, b, h, t0, rows, f.dq, w.acc.data());  // dq = ds @ k
    }
  }
  for (int64_t s = 0; s < p.s; ++s) {
    uint16_t* dk = f.dk + (b * p.s * p.kv_heads + s * p.kv_heads + hk) * d;
    uint16_t* dv = f.dv + (b * p.s * p.kv_heads + s * p.kv_heads + hk) * d;
    for (int64_t c = 0; c < d; c += 16) {
      ledex::StoreBf16x16(dk + c, _mm512_loadu_ps(w.dk.data() + s * d + c));
      ledex::StoreBf16x16(dv + c, _mm512_loadu_ps(w.dv.data() + s * d + c));
    }
  }
}

// Validates q [B, T, H, D], k, v [B, S, Hkv, D], visible [B, T, S] and fills the sizes.
ffi::Error CheckInputs(const char* name, const ffi::AnyBuffer& q, const ffi::AnyBuffer& k, const ffi::AnyBuffer& v,
                       const ffi::AnyBuffer& visible, float scale, Dims* p) {
  const auto qd = q.dimensions(), kd = k.dimensions(), md = visible.dimensions();
  for (const ffi::AnyBuffer* x : {&q, &k, &v}) {
    if (x->element_type() != ffi::DataType::BF16 || x->dimensions().size() != 4) {
      return ffi::Error::InvalidArgument(std::string(name) + ": q, k, v must be 4-D bfloat16");
    }
  }
  if (kd[0] != qd[0] || kd[3] != qd[3] || !ledex::SameDims(v.dimensions(), kd) || qd[2] % kd[2] != 0 ||
      visible.element_type() != ffi::DataType::PRED || md.size() != 3 || md[0] != qd[0] || md[1] != qd[1] ||
      md[2] != kd[1]) {
    return ffi::Error::InvalidArgument(std::string(name) +
                                       ": expected q [B, T, H, D], k, v [B, S, Hkv, D] (H a multiple of Hkv), "
                                       "visible [B, T, S] bool");
  }
  if (qd[3] % 64 != 0 || qd[3] > 256) {
    return ffi::Error::InvalidArgument(std::string(name) + ": head dim must be a multiple of 64, at most 256");
  }
  p->batch = qd[0];
  p->t = qd[1];
  p->heads = qd[2];
  p->dim = qd[3];
  p->s = kd[1];
  p->kv_heads = kd[2];
  p->groups = p->heads / p->kv_heads;
  p->s_pad = (p->s + kKeys - 1) / kKeys * kKeys;
  p->scale = scale;
  return ffi::Error::Success();
}

template <typename Unit>
void RunUnits(ffi::ThreadPool& pool, const Dims& p, Unit unit) {
  ledex::ParallelFor(pool, p.batch * p.kv_heads, [&p, &unit](int64_t begin, int64_t end) {
    ledex::ConfigureTiles(16);
    Buffers w;
    for (int64_t u = begin; u < end; ++u) unit(u, w);
    _tile_release();
  });
}

ffi::Error FlashAttentionForward(ffi::ThreadPool pool, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                                 ffi::AnyBuffer visible, ffi::Result<ffi::AnyBuffer> out,
                                 ffi::Result<ffi::AnyBuffer> lse, float scale) {
  Dims p;
  if (ffi::Error e = CheckInputs("flash_attention", q, k, v, visible, scale, &p); e.failure()) return e;
  const auto ld = lse->dimensions();
  if (!ledex::SameDims(out->dimensions(), q.dimensions()) || out->element_type() != ffi::DataType::BF16 ||
      lse->element_type() != ffi::DataType::F32 || ld.size() != 3 || ld[0] != p.batch || ld[1] != p.heads ||
      ld[2] != p.t) {
    return ffi::Error::InvalidArgument("flash_attention: expected out like q and lse [B, H, T] float32");
  }
  const Forward f{static_cast<const uint16_t*>(q.untyped_data()), static_cast<const uint16_t*>(k.untyped_data()),
                  static_cast<const uint16_t*>(v.untyped_data()), static_cast<const bool*>(visible.untyped_data()),
                  static_cast<uint16_t*>(out->untyped_data()), static_cast<float*>(lse->untyped_data())};
  RunUnits(pool, p, [&](int64_t u, Buffers& w) { ForwardUnit(p, f, u, w); });
  return ffi::Error::Success();
}

ffi::Error FlashAttentionBackward(ffi::ThreadPool pool, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                                  ffi::AnyBuffer visible, ffi::AnyBuffer lse, ffi::AnyBuffer dout,
                                  ffi::Result<ffi::AnyBuffer> dq, ffi::Result<ffi::AnyBuffer> dk,
                                  ffi::Result<ffi::AnyBuffer> dv, float scale) {
  Dims p;
  if (ffi::Error e = CheckInputs("flash_attention_backward", q, k, v, visible, scale, &p); e.failure()) return e;
  const auto ld = lse.dimensions();
  if (!ledex::SameDims(dout.dimensions(), q.dimensions()) || dout.element_type() != ffi::DataType::BF16 ||
      lse.element_type() != ffi::DataType::F32 || ld.size() != 3 || ld[0] != p.batch || ld[1] != p.heads ||
      ld[2] != p.t || !ledex::SameDims(dq->dimensions(), q.dimensions()) || !ledex::SameDims(dk->dimensions(), k.dimensions()) ||
      !ledex::SameDims(dv->dimensions(), k.dimensions())) {
    return ffi::Error::InvalidArgument(
        "flash_attention_backward: expected lse [B, H, T] float32, dout and dq like q, dk and dv like k");
  }
  const Backward f{static_cast<const uint16_t*>(q.untyped_data()), static_cast<const uint16_t*>(k.untyped_data()),
                   static_cast<const uint16_t*>(v.untyped_data()), static_cast<const uint16_t*>(dout.untyped_data()),
                   static_cast<const bool*>(visible.untyped_data()), static_cast<const float*>(lse.untyped_data()),
                   static_cast<uint16_t*>(dq->untyped_data()), static_cast<uint16_t*>(dk->untyped_data()),
                   static_cast<uint16_t*>(dv->untyped_data())};
  RunUnits(pool, p, [&](int64_t u, Buffers& w) { BackwardUnit(p, f, u, w); });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LedexFlashAttentionForward, FlashAttentionForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("scale"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(LedexFlashAttentionBackward, FlashAttentionBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("scale"));
