// AMX tiles shared by the kernels: the configuration (tiles 0-3 C, rows x 16 float32; 4 A, rows x
// 32 bf16; 5-7 B, 16 pair-rows x 16 columns; every row 64 bytes) and the product of A rows with
// one 64-column chunk of B packed in the VNNI layout (`amx.pack`).
#ifndef LEDEX_JAX_KERNELS_AMX_TILES_H_
#define LEDEX_JAX_KERNELS_AMX_TILES_H_

#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace ledex {

struct TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// `rows`: rows of the C and A tiles (1..16); B tiles always have 16.
inline void ConfigureTiles(int rows) {
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof(cfg));
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = static_cast<uint8_t>(t < 5 ? rows : 16);
    cfg.colsb[t] = 64;
  }
  // GCC does not see LDTILECFG read `cfg` and drops the zeroing as a dead store; stray bytes in
  // the unused entries then make LDTILECFG fault.
  asm volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

constexpr int kTileRows = 16;   // rows of A / C tiles
constexpr int kKBlock = 32;     // bf16 elements of K per tile row
constexpr int kChunkCols = 64;  // 4 C tiles of 16 float32 columns
constexpr int kBTileElems = 16 * 32;
constexpr int64_t kPanelBytes = 1 << 20;  // packed B per panel: half of a core's L2

// acc[rows, 64] (float32, row stride 64) = A rows (tile loads from `a`, row stride a_stride
// bytes) @ one packed chunk of B (4 column blocks of k_blocks tiles each, `b_stride` elements
// apart).
inline void MultiplyChunk(const uint16_t* a, int a_stride, const uint16_t* b, int64_t k_blocks, float* acc) {
  const size_t b_stride = static_cast<size_t>(k_blocks) * kBTileElems;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t kb = 0; kb < k_blocks; ++kb) {
    const size_t off = static_cast<size_t>(kb) * kBTileElems;
    _tile_loadd(4, a + kb * kKBlock, a_stride);
    _tile_loadd(5, b + off, 64);
    _tile_dpbf16ps(0, 4, 5);
    _tile_loadd(6, b + b_stride + off, 64);
    _tile_dpbf16ps(1, 4, 6);
    _tile_loadd(7, b + 2 * b_stride + off, 64);
    _tile_dpbf16ps(2, 4, 7);
    _tile_loadd(5, b + 3 * b_stride + off, 64);
    _tile_dpbf16ps(3, 4, 5);
  }
  _tile_stored(0, acc, kChunkCols * sizeof(float));
  _tile_stored(1, acc + 16, kChunkCols * sizeof(float));
  _tile_stored(2, acc + 32, kChunkCols * sizeof(float));
  _tile_stored(3, acc + 48, kChunkCols * sizeof(float));
}

// Chunks (of 64 packed columns, K deep) per work unit for a product with m_blocks 16-row blocks:
// as many as fit kPanelBytes, so the panel stays in L2 while the row blocks pass; with few row
// blocks (decode) nothing re-reads a panel, and single chunks balance the threads (whole panels
// cost the bf16 sampler 20-30 %).
inline int64_t ChunksPerPanel(int64_t k, int64_t m_blocks) {
  if (m_blocks < 8) return 1;
  return std::max<int64_t>(1, kPanelBytes / (k * kChunkCols * static_cast<int64_t>(sizeof(uint16_t))));
}

}  // namespace ledex

#endif  // LEDEX_JAX_KERNELS_AMX_TILES_H_
