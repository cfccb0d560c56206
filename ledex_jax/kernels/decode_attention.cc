// Attention of one new token per row over a bfloat16 or float32 KV cache, as an XLA FFI custom
// call for JAX on CPU (AVX-512; bf16 dot products for bfloat16).
//
// out[b, h, g, :] = softmax_s(scale * q[b, h, g, :] . k[b, h, s, :] | visible[b, s]) @ v[b, h, s, :]
// for q [B, Hkv, G, D] (G query heads share kv head h), k, v [B, Hkv, S, D], visible [B, S].
// Numerics follow the XLA path (`ops.attention.dot_attention`): float32 scores and softmax,
// probabilities rounded to bfloat16 before the value product (bf16 inputs), float32
// accumulation, output in the input dtype; a row with nothing visible averages every slot
// (what softmax over equal scores gives).
//
// Why: XLA:CPU runs these as B x Hkv tiny batched products: 0.35 ms per layer for SmolLM2 at
// batch 16, a third of a decode step. Here each (b, h) reads its cache rows once.
#include <immintrin.h>

#include <cfloat>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernel_utils.h"
#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

inline float RoundToBf16(float f) {  // round to nearest even, as XLA's f32 -> bf16 convert
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline __m512bh LoadBf16x32(const uint16_t* p) {
  const __m512i bits = _mm512_loadu_si512(p);
  __m512bh x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

struct Problem {
  const void *q, *k, *v;
  const bool* visible;
  void* out;
  float scale;
  int64_t batch, kv_heads, groups, slots, dim;
};

// Element access for the two supported dtypes: bfloat16 (bits in uint16_t) and float32.
inline float Dot(const uint16_t* a, const uint16_t* b, int64_t d) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t c = 0; c < d; c += 32) acc = _mm512_dpbf16_ps(acc, LoadBf16x32(a + c), LoadBf16x32(b + c));
  return _mm512_reduce_add_ps(acc);
}
inline float Dot(const float* a, const float* b, int64_t d) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t c = 0; c < d; c += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + c), _mm512_loadu_ps(b + c), acc);
  return _mm512_reduce_add_ps(acc);
}
inline __m512 Load16(const uint16_t* x) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x))), 16));
}
inline __m512 Load16(const float* x) { return _mm512_loadu_ps(x); }
inline void Store16(uint16_t* x, __m512 v) { ledex::StoreBf16x16(x, v); }
inline void Store16(float* x, __m512 v) { _mm512_storeu_ps(x, v); }
// The XLA path casts bf16 attention probabilities to bf16 before the value product; f32 keeps them.
inline float Probability(float p, const uint16_t*) { return RoundToBf16(p); }
inline float Probability(float p, const float*) { return p; }

// One (b, h): scores for its G queries, softmax, value sum.
template <typename T>
void RunUnit(const Problem& p, int64_t unit, std::vector<float>& scores, std::vector<int32_t>& seen) {
  const int64_t b = unit / p.kv_heads, d = p.dim, s_all = p.slots, g_all = p.groups;
  const T* q = static_cast<const T*>(p.q) + unit * g_all * d;
  const T* k = static_cast<const T*>(p.k) + unit * s_all * d;
  const T* v = static_cast<const T*>(p.v) + unit * s_all * d;
  const bool* visible = p.visible + b * s_all;
  T* out = static_cast<T*>(p.out) + unit * g_all * d;

  seen.clear();
  for (int64_t s = 0; s < s_all; ++s) {
    if (visible[s]) seen.push_back(static_cast<int32_t>(s));
  }
  const bool none = seen.empty();
  if (none) {  // softmax of all-equal (masked) scores: every slot weighs the same
    for (int64_t s = 0; s < s_all; ++s) seen.push_back(static_cast<int32_t>(s));
  }
  const int64_t n = static_cast<int64_t>(seen.size());
  const int64_t n_pad = (n + 15) / 16 * 16;
  scores.assign(g_all * n_pad, 0.0f);

  for (int64_t g = 0; g < g_all; ++g) {
    float* sc = scores.data() + g * n_pad;
    if (none) continue;
    for (int64_t i = 0; i < n; ++i) sc[i] = Dot(q + g * d, k + seen[i] * d, d) * p.scale;
  }
  // Softmax per query over the visible slots (padding lanes excluded), probabilities to bf16.
  for (int64_t g = 0; g < g_all; ++g) {
    float* sc = scores.data() + g * n_pad;
    __m512 mx = _mm512_set1_ps(-FLT_MAX);
    for (int64_t i = 0; i < n; i += 16) {
      mx = _mm512_mask_max_ps(mx, ledex::Lanes(n - i), mx, _mm512_loadu_ps(sc + i));
    }
    const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 total = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
      const __m512 e = _mm512_maskz_mov_ps(ledex::Lanes(n - i), ledex::Exp(_mm512_sub_ps(_mm512_loadu_ps(sc + i), top)));
      _mm512_storeu_ps(sc + i, e);
      total = _mm512_add_ps(total, e);
    }
    const float inv = 1.0f / _mm512_reduce_add_ps(total);
    for (int64_t i = 0; i < n; ++i) sc[i] = Probability(sc[i] * inv, q);
  }
  // out[g] = sum_i p[g, i] v[seen[i]], float32 accumulators, D / 16 vectors per query.
  constexpr int kMaxVecs = 16;  // D <= 256
  for (int64_t g0 = 0; g0 < g_all; g0 += 4) {
    const int64_t gn = std::min<int64_t>(4, g_all - g0);
    __m512 acc[4][kMaxVecs];
    const int64_t vecs = d / 16;
    for (int64_t j = 0; j < gn; ++j)
      for (int64_t c = 0; c < vecs; ++c) acc[j][c] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; ++i) {
      const T* vr = v + seen[i] * d;
      for (int64_t c = 0; c < vecs; ++c) {
        const __m512 vv = Load16(vr + c * 16);
        for (int64_t j = 0; j < gn; ++j) {
          acc[j][c] = _mm512_fmadd_ps(_mm512_set1_ps(scores[(g0 + j) * n_pad + i]), vv, acc[j][c]);
        }
      }
    }
    for (int64_t j = 0; j < gn; ++j) {
      for (int64_t c = 0; c < vecs; ++c) Store16(out + (g0 + j) * d + c * 16, acc[j][c]);
    }
  }
}

ffi::Error DecodeAttention(ffi::ThreadPool pool, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                           ffi::AnyBuffer visible, ffi::Result<ffi::AnyBuffer> out, float scale) {
  const ffi::DataType type = q.element_type();
  for (const ffi::AnyBuffer* x : {&q, &k, &v}) {
    if (x->element_type() != type || x->dimensions().size() != 4 ||
        (type != ffi::DataType::BF16 && type != ffi::DataType::F32)) {
      return ffi::Error::InvalidArgument("decode_attention: q, k, v must be 4-D, all bfloat16 or all float32");
    }
  }
  const auto qd = q.dimensions(), kd = k.dimensions(), vd = visible.dimensions();
  Problem p;
  p.batch = qd[0];
  p.kv_heads = qd[1];
  p.groups = qd[2];
  p.dim = qd[3];
  p.slots = kd[2];
  if (kd[0] != p.batch || kd[1] != p.kv_heads || kd[3] != p.dim || !ledex::SameDims(v.dimensions(), kd) ||
      visible.element_type() != ffi::DataType::PRED || vd.size() != 2 || vd[0] != p.batch ||
      vd[1] != p.slots || !ledex::SameDims(out->dimensions(), qd) || out->element_type() != type) {
    return ffi::Error::InvalidArgument(
        "decode_attention: expected q, out [B, Hkv, G, D], k, v [B, Hkv, S, D], visible [B, S] bool");
  }
  if (p.dim % 32 != 0 || p.dim > 256) {
    return ffi::Error::InvalidArgument("decode_attention: head dim must be a multiple of 32, at most 256");
  }
  p.q = q.untyped_data();
  p.k = k.untyped_data();
  p.v = v.untyped_data();
  p.visible = static_cast<const bool*>(visible.untyped_data());
  p.out = out->untyped_data();
  p.scale = scale;
  const bool bf16 = type == ffi::DataType::BF16;
  ledex::ParallelFor(pool, p.batch * p.kv_heads, [&p, bf16](int64_t begin, int64_t end) {
    std::vector<float> scores;
    std::vector<int32_t> seen;
    for (int64_t u = begin; u < end; ++u) {
      if (bf16) {
        RunUnit<uint16_t>(p, u, scores, seen);
      } else {
        RunUnit<float>(p, u, scores, seen);
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LedexDecodeAttention, DecodeAttention,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("scale"));
