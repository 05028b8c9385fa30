//===- Philox.cpp - Philox4x32-10 and Box-Muller noise as arith ops -------===//

#include "Philox.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"

#include <cmath>

using namespace mlir;
using namespace mlir::moe;

static Value u32Constant(OpBuilder &b, Location loc, uint32_t v) {
  return arith::ConstantIntOp::create(b, loc, b.getI32Type(),
                                      static_cast<int32_t>(v));
}

std::array<Value, 4> mlir::moe::buildPhilox4x32(OpBuilder &b, Location loc,
                                                std::array<Value, 4> counter,
                                                std::array<Value, 2> key,
                                                unsigned rounds) {
  Value m0 = u32Constant(b, loc, kPhiloxM0);
  Value m1 = u32Constant(b, loc, kPhiloxM1);
  Value w0 = u32Constant(b, loc, kPhiloxW0);
  Value w1 = u32Constant(b, loc, kPhiloxW1);
  auto [c0, c1, c2, c3] = counter;
  auto [k0, k1] = key;
  for (unsigned r = 0; r < rounds; ++r) {
    if (r > 0) {
      // i32 addition wraps: the Weyl sequence is mod 2^32.
      k0 = arith::AddIOp::create(b, loc, k0, w0);
      k1 = arith::AddIOp::create(b, loc, k1, w1);
    }
    auto p0 = arith::MulUIExtendedOp::create(b, loc, m0, c0);
    auto p1 = arith::MulUIExtendedOp::create(b, loc, m1, c2);
    Value n0 = arith::XOrIOp::create(
        b, loc, arith::XOrIOp::create(b, loc, p1.getHigh(), c1), k0);
    Value n2 = arith::XOrIOp::create(
        b, loc, arith::XOrIOp::create(b, loc, p0.getHigh(), c3), k1);
    c0 = n0;
    c1 = p1.getLow();
    c2 = n2;
    c3 = p0.getLow();
  }
  return {c0, c1, c2, c3};
}

std::array<Value, 2> mlir::moe::buildPhiloxKey(OpBuilder &b, Location loc,
                                               Value seed) {
  Type i32 = b.getI32Type();
  Value thirtyTwo = arith::ConstantIntOp::create(b, loc, seed.getType(), 32);
  Value lo = arith::TruncIOp::create(b, loc, i32, seed);
  Value hi = arith::TruncIOp::create(
      b, loc, i32, arith::ShRUIOp::create(b, loc, seed, thirtyTwo));
  return {lo, hi};
}

Value mlir::moe::buildPhiloxNormal(OpBuilder &b, Location loc,
                                   std::array<Value, 2> key, Value c0,
                                   Value c1) {
  Value zero = u32Constant(b, loc, 0);
  std::array<Value, 4> r = buildPhilox4x32(b, loc, {c0, c1, zero, zero}, key);

  Type f32 = b.getF32Type();
  auto f32Constant = [&](float v) {
    return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v)).getResult();
  };
  Value eight = u32Constant(b, loc, 8);
  Value one = u32Constant(b, loc, 1);
  Value scale = f32Constant(0x1p-24f);
  // (r >> 8) + 1 <= 2^24: the conversions to f32 are exact.
  Value top0 = arith::AddIOp::create(
      b, loc, arith::ShRUIOp::create(b, loc, r[0], eight), one);
  Value top1 = arith::ShRUIOp::create(b, loc, r[1], eight);
  Value u1 = arith::MulFOp::create(
      b, loc, arith::UIToFPOp::create(b, loc, f32, top0), scale);
  Value u2 = arith::MulFOp::create(
      b, loc, arith::UIToFPOp::create(b, loc, f32, top1), scale);

  Value logU1 = math::LogOp::create(b, loc, u1);
  Value radius = math::SqrtOp::create(
      b, loc, arith::MulFOp::create(b, loc, f32Constant(-2.0f), logU1));
  // The f32 nearest 2π, 6.2831855f, as the NumPy reference uses.
  Value theta = arith::MulFOp::create(
      b, loc, f32Constant(static_cast<float>(2.0 * M_PI)), u2);
  return arith::MulFOp::create(b, loc, radius,
                               math::CosOp::create(b, loc, theta));
}
