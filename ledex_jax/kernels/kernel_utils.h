// Helpers shared by the CPU kernels: AVX-512 math, shape checks.
#ifndef LEDEX_JAX_KERNELS_KERNEL_UTILS_H_
#define LEDEX_JAX_KERNELS_KERNEL_UTILS_H_

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace ledex {

// exp(x) for float32 lanes: 2^n * p(r), x = n ln2 + r, |r| <= ln2 / 2; degree-6 polynomial
// (relative error ~2e-7); underflows to 0 below -87.
inline __m512 Exp(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.3f), hi = _mm512_set1_ps(88.7f);
  x = _mm512_max_ps(_mm512_min_ps(x, hi), lo);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  const __m512 y = _mm512_scalef_ps(p, n);
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, lo, _CMP_LE_OQ), y, _mm512_setzero_ps());
}

// The first `count` of 16 lanes (none for count <= 0, all from 16 on).
inline __mmask16 Lanes(int64_t count) {
  return static_cast<__mmask16>(count >= 16 ? 0xFFFF : count <= 0 ? 0 : (1u << count) - 1u);
}

// 16 float32 lanes rounded to bfloat16 (nearest even) and stored to the lanes `mask` selects.
inline void StoreBf16x16(uint16_t* dst, __m512 v, __mmask16 mask = 0xFFFF) {
  __m256bh o = _mm512_cvtneps_pbh(v);
  _mm256_mask_storeu_epi16(dst, mask, reinterpret_cast<__m256i&>(o));
}

// Two FFI dimension spans are equal.
template <typename A, typename B>
bool SameDims(const A& a, const B& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

}  // namespace ledex

#endif  // LEDEX_JAX_KERNELS_KERNEL_UTILS_H_
