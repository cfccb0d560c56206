// AMX tile configuration shared by the kernels: tiles 0-3 C (rows x 16 float32), 4 A (rows x 32
// bf16), 5-7 B (16 pair-rows x 16 columns); every row 64 bytes.
#ifndef LEDEX_JAX_KERNELS_AMX_TILES_H_
#define LEDEX_JAX_KERNELS_AMX_TILES_H_

#include <immintrin.h>

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

}  // namespace ledex

#endif  // LEDEX_JAX_KERNELS_AMX_TILES_H_
