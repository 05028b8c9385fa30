//===- Allocation.cpp - scratch memory of generated kernels ---------------===//
//
// Every C entry point takes all of its kernels' scratch memory in one
// allocation before any work starts (moe-allocate-scratch-up-front), through
// moe_rt_alloc_scratch, so that a failure becomes MOE_ERROR_OUT_OF_MEMORY with
// nothing written. MLIR's generic allocation hooks stay for code built
// without entry points (moe-opt pipelines, integration tests).
//
//===----------------------------------------------------------------------===//

#include "moe-c/moe_runtime.h"

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace {
// Vector loads of the generated code never straddle a cache line start.
constexpr size_t kMinAlignment = 64;

// Set by moe_set_scratch_limit; < 0: none. Shared by all threads, so that a
// test can make the allocation of a kernel running on any thread fail.
std::atomic<int64_t> scratchLimit{-1};

/// Null when the allocation fails or exceeds the scratch limit.
void *tryAllocate(size_t alignment, size_t size) {
  if (alignment < kMinAlignment)
    alignment = kMinAlignment;
  int64_t limit = scratchLimit.load(std::memory_order_relaxed);
  if (limit >= 0 && size > static_cast<uint64_t>(limit))
    return nullptr;
  // aligned_alloc wants a non-zero multiple of the alignment.
  if (size > SIZE_MAX - alignment)
    return nullptr;
  size_t rounded = ((size ? size : 1) + alignment - 1) / alignment * alignment;
  return std::aligned_alloc(alignment, rounded);
}

void *allocateOrAbort(size_t alignment, size_t size) {
  if (void *ptr = tryAllocate(alignment, size))
    return ptr;
  // Only code without a C entry point gets here (entry points allocate
  // through moe_rt_alloc_scratch): it cannot unwind from inside a loop nest,
  // so stop with a message rather than write through a null pointer.
  std::fprintf(stderr,
               "moe runtime: out of memory allocating %zu bytes of kernel "
               "scratch memory\n",
               size);
  std::abort();
}
} // namespace

extern "C" void *moe_rt_alloc_scratch(int64_t size, const char *entryPoint) {
  void *ptr = size >= 0 ? tryAllocate(kMinAlignment, size) : nullptr;
  if (ptr)
    return ptr;
  char message[256];
  int64_t limit = scratchLimit.load(std::memory_order_relaxed);
  if (size < 0)
    // The sizes overflowed 64 bits: more than any machine holds.
    std::snprintf(message, sizeof(message),
                  "%s: out of memory: the scratch memory needed exceeds "
                  "2^63 bytes",
                  entryPoint);
  else if (limit >= 0 && size > limit)
    std::snprintf(message, sizeof(message),
                  "%s: out of memory allocating %lld bytes of scratch memory "
                  "(over the limit of %lld bytes set by moe_set_scratch_limit)",
                  entryPoint, static_cast<long long>(size),
                  static_cast<long long>(limit));
  else
    std::snprintf(message, sizeof(message),
                  "%s: out of memory allocating %lld bytes of scratch memory",
                  entryPoint, static_cast<long long>(size));
  moe_rt_fail(MOE_ERROR_OUT_OF_MEMORY, message);
  return nullptr;
}

extern "C" void moe_rt_free_scratch(void *ptr) { std::free(ptr); }

extern "C" int64_t moe_set_scratch_limit(int64_t bytes) {
  return scratchLimit.exchange(bytes < 0 ? -1 : bytes);
}

extern "C" int64_t moe_get_scratch_limit(void) { return scratchLimit.load(); }

extern "C" void *_mlir_memref_to_llvm_alloc(size_t size) {
  return allocateOrAbort(kMinAlignment, size);
}

extern "C" void *_mlir_memref_to_llvm_aligned_alloc(size_t alignment,
                                                    size_t size) {
  return allocateOrAbort(alignment, size);
}

extern "C" void _mlir_memref_to_llvm_free(void *ptr) { std::free(ptr); }
