//===- MemRefCopy.cpp - strided buffer copies of generated code -----------===//
//
// The memref-to-LLVM lowering turns copies between buffers that are not both
// contiguous (slices of a token block, say) into calls of `memrefCopy`; the
// generated kernels link this implementation instead of MLIR's runner utils.
//
//===----------------------------------------------------------------------===//

#include <cstdint>
#include <cstring>

namespace {
/// The unranked memref of the MLIR C calling convention.
struct UnrankedMemRef {
  int64_t rank;
  void *descriptor;
};

/// {allocated, aligned, offset, sizes[rank], strides[rank]}.
struct StridedView {
  char *aligned;
  int64_t offset;
  const int64_t *sizes;
  const int64_t *strides;

  explicit StridedView(const UnrankedMemRef &m) {
    auto *fields = static_cast<char *>(m.descriptor);
    aligned = *reinterpret_cast<char **>(fields + sizeof(void *));
    auto *ints = reinterpret_cast<const int64_t *>(fields + 2 * sizeof(void *));
    offset = ints[0];
    sizes = ints + 1;
    strides = ints + 1 + m.rank;
  }
};
} // namespace

extern "C" void memrefCopy(int64_t elemSize, UnrankedMemRef *srcArg,
                           UnrankedMemRef *dstArg) {
  int64_t rank = srcArg->rank;
  StridedView src(*srcArg), dst(*dstArg);
  char *srcBase = src.aligned + src.offset * elemSize;
  char *dstBase = dst.aligned + dst.offset * elemSize;
  int64_t total = 1;
  for (int64_t d = 0; d < rank; ++d)
    total *= src.sizes[d];
  if (total == 0)
    return;
  if (rank == 0) {
    std::memcpy(dstBase, srcBase, elemSize);
    return;
  }
  // Walk the index space with an odometer over all dims but the innermost,
  // copying the innermost dim as one block when both sides are unit-strided.
  int64_t inner = src.sizes[rank - 1];
  bool contiguousInner = src.strides[rank - 1] == 1 && dst.strides[rank - 1] == 1;
  int64_t index[16] = {0};
  int64_t srcOff = 0, dstOff = 0;
  for (;;) {
    if (contiguousInner) {
      std::memcpy(dstBase + dstOff * elemSize, srcBase + srcOff * elemSize,
                  inner * elemSize);
    } else {
      for (int64_t i = 0; i < inner; ++i)
        std::memcpy(dstBase + (dstOff + i * dst.strides[rank - 1]) * elemSize,
                    srcBase + (srcOff + i * src.strides[rank - 1]) * elemSize,
                    elemSize);
    }
    int64_t d = rank - 2;
    for (; d >= 0; --d) {
      srcOff += src.strides[d];
      dstOff += dst.strides[d];
      if (++index[d] < src.sizes[d])
        break;
      srcOff -= src.strides[d] * src.sizes[d];
      dstOff -= dst.strides[d] * dst.sizes[d];
      index[d] = 0;
    }
    if (d < 0)
      return;
  }
}
