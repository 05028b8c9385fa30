//===- Allocation.cpp - scratch memory of generated kernels ---------------===//
//
// moe-compile lowers buffer allocation to these hooks (MLIR's generic
// allocation functions), so every kernel's scratch memory goes through one
// place: cache-line aligned, and a failure is reported, not dereferenced.
//
//===----------------------------------------------------------------------===//

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace {
// Vector loads of the generated code never straddle a cache line start.
constexpr size_t kMinAlignment = 64;

[[noreturn]] void outOfMemory(size_t size) {
  // The kernel has no way to unwind from inside a loop nest; stop with a
  // message rather than write through a null pointer.
  std::fprintf(stderr,
               "moe runtime: out of memory allocating %zu bytes of kernel "
               "scratch memory\n",
               size);
  std::abort();
}

void *allocate(size_t alignment, size_t size) {
  if (alignment < kMinAlignment)
    alignment = kMinAlignment;
  // aligned_alloc wants a non-zero multiple of the alignment.
  size_t rounded = ((size ? size : 1) + alignment - 1) / alignment * alignment;
  void *ptr = std::aligned_alloc(alignment, rounded);
  if (!ptr)
    outOfMemory(size);
  return ptr;
}
} // namespace

extern "C" void *_mlir_memref_to_llvm_alloc(size_t size) {
  return allocate(kMinAlignment, size);
}

extern "C" void *_mlir_memref_to_llvm_aligned_alloc(size_t alignment,
                                                    size_t size) {
  return allocate(alignment, size);
}

extern "C" void _mlir_memref_to_llvm_free(void *ptr) { std::free(ptr); }
