// Splitting a kernel's independent work units over the calling thread and XLA's intra-op pool.
#ifndef LEDEX_JAX_KERNELS_PARALLEL_H_
#define LEDEX_JAX_KERNELS_PARALLEL_H_

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>

#include "xla/ffi/api/ffi.h"

namespace ledex {

// Runs body(begin, end) over [0, units) in grabs from an atomic counter shared by the caller and
// up to pool.num_threads() scheduled tasks. The caller never waits for a task that has not
// started: it takes whatever is left, then waits only for grabs already in progress. `body`
// must stay valid until the call returns (it does: tasks that start late find no work).
template <typename Body>
void ParallelFor(xla::ffi::ThreadPool& pool, int64_t units, Body body) {
  struct Shared {
    Body body;
    int64_t units, grain;
    std::atomic<int64_t> next{0}, done{0};
    Shared(Body b, int64_t u, int64_t g) : body(std::move(b)), units(u), grain(g) {}
    void Work() {
      int64_t finished = 0;
      for (;;) {
        const int64_t start = next.fetch_add(grain, std::memory_order_relaxed);
        if (start >= units) break;
        const int64_t end = std::min(start + grain, units);
        body(start, end);
        finished += end - start;
      }
      done.fetch_add(finished, std::memory_order_acq_rel);
    }
  };
  if (units <= 0) return;
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), units - 1);
  // A few grabs per thread balance uneven progress without contending on the counter.
  const int64_t grain = std::max<int64_t>(1, units / (4 * (helpers + 1)));
  auto shared = std::make_shared<Shared>(std::move(body), units, grain);
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([shared] { shared->Work(); });
  shared->Work();
  while (shared->done.load(std::memory_order_acquire) < units) _mm_pause();
}

}  // namespace ledex

#endif  // LEDEX_JAX_KERNELS_PARALLEL_H_
