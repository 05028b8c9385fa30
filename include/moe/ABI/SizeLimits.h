//===- SizeLimits.h - the sizes a compiled layer can address ----*- C++ -*-===//
//
// The one place that says how large a buffer, an index or a count of a
// compiled layer may be, and the overflow-checked arithmetic that the spec
// front end, the ABI description and the entry points use to stay below it.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_ABI_SIZELIMITS_H
#define MOE_ABI_SIZELIMITS_H

#include "mlir/Support/LLVM.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/MathExtras.h"

#include <cstdint>
#include <limits>
#include <optional>

namespace mlir::moe {

/// The largest byte size of one buffer, weights, inputs, outputs and scratch
/// alike: the user half of a 48-bit virtual address space (x86-64, AArch64),
/// so no buffer that could exist makes an int64 byte offset overflow.
inline constexpr int64_t kMaxBufferBytes = int64_t(1) << 47;

/// The largest count the compiled code keeps in 32 bits: expert ids (and
/// sub-key ids), the dispatch plan's per-expert counts and offsets, and the
/// row ids of the dispatched slots. A size in the spec is a count of this
/// kind too (it becomes an id bound).
inline constexpr int64_t kMaxInt32Count = std::numeric_limits<int32_t>::max();

/// `a * b`, or none if it overflows int64.
inline std::optional<int64_t> checkedMul(int64_t a, int64_t b) {
  int64_t product;
  if (llvm::MulOverflow(a, b, product))
    return std::nullopt;
  return product;
}

/// The product of `factors` (1 for none), or none if it overflows int64.
inline std::optional<int64_t> checkedProduct(ArrayRef<int64_t> factors) {
  int64_t product = 1;
  for (int64_t factor : factors) {
    std::optional<int64_t> next = checkedMul(product, factor);
    if (!next)
      return std::nullopt;
    product = *next;
  }
  return product;
}

/// Whether `count` elements of `elementBytes` bytes each fit in one buffer.
inline bool fitsInBuffer(int64_t count, int64_t elementBytes) {
  std::optional<int64_t> bytes = checkedMul(count, elementBytes);
  return bytes && *bytes <= kMaxBufferBytes;
}

/// The most tokens for which `perToken` items of `itemBytes` bytes each stay
/// within `limit` bytes (or, with `itemBytes` 1, `limit` items); 0 if not
/// even one token does.
inline int64_t maxTokensWithin(int64_t limit, int64_t perToken,
                               int64_t itemBytes = 1) {
  std::optional<int64_t> bytes = checkedMul(perToken, itemBytes);
  if (!bytes || *bytes > limit)
    return 0;
  return *bytes == 0 ? limit : limit / *bytes;
}

} // namespace mlir::moe

#endif // MOE_ABI_SIZELIMITS_H
