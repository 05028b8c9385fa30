//===- Philox.h - Philox4x32-10 and Box-Muller noise ----------*- C++ -*-===//
//
// The counter-based generator behind noisy top-k gating (Salmon et al., SC
// 2011, as in Random123). Kept on its own so that every lowering of moe.route
// (reference, CPU, GPU) draws the very same bits for a (seed, token, expert).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_CONVERSION_MOETOLINALG_PHILOX_H
#define MOE_LIB_CONVERSION_MOETOLINALG_PHILOX_H

#include "mlir/IR/Builders.h"

#include <array>
#include <cstdint>

namespace mlir::moe {

/// Round multipliers and Weyl key increments of Philox4x32.
constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

/// The Philox4x32-`rounds` block function on i32 values taken as u32: one
/// round maps (c0, c1, c2, c3) under key (k0, k1) to
/// (hi(M1·c2) ^ c1 ^ k0, lo(M1·c2), hi(M0·c0) ^ c3 ^ k1, lo(M0·c0)), the key
/// advancing by (W0, W1) between rounds.
std::array<Value, 4> buildPhilox4x32(OpBuilder &b, Location loc,
                                     std::array<Value, 4> counter,
                                     std::array<Value, 2> key,
                                     unsigned rounds = 10);

/// The key (seed & 0xffffffff, seed >> 32) of an i64 seed taken as u64.
std::array<Value, 2> buildPhiloxKey(OpBuilder &b, Location loc, Value seed);

/// An f32 N(0, 1) sample for counter (c0, c1, 0, 0): Box-Muller of the first
/// two output words, u1 = ((r0 >> 8) + 1)·2^-24 ∈ (0, 1],
/// u2 = (r1 >> 8)·2^-24 ∈ [0, 1), n = sqrt(-2·ln u1)·cos(2π·u2), in f32.
/// moe.route uses (c0, c1) = (expert, token); both are i32 values.
Value buildPhiloxNormal(OpBuilder &b, Location loc, std::array<Value, 2> key,
                        Value c0, Value c1);

} // namespace mlir::moe

#endif // MOE_LIB_CONVERSION_MOETOLINALG_PHILOX_H
