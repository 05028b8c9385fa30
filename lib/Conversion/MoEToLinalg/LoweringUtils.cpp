//===- LoweringUtils.cpp - building blocks shared by the moe lowerings ----===//

#include "LoweringUtils.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

#include <cmath>

using namespace mlir;
using namespace mlir::moe;

SmallVector<Value> mlir::moe::getDynamicSizes(OpBuilder &b, Location loc,
                                              Value shaped) {
  auto type = cast<RankedTensorType>(shaped.getType());
  SmallVector<Value> sizes;
  for (int64_t d = 0; d < type.getRank(); ++d)
    if (type.isDynamicDim(d))
      sizes.push_back(tensor::DimOp::create(b, loc, shaped, d));
  return sizes;
}

Value mlir::moe::getDimSize(OpBuilder &b, Location loc, Value tensor,
                            int64_t dim) {
  auto type = cast<RankedTensorType>(tensor.getType());
  if (!type.isDynamicDim(dim))
    return arith::ConstantIndexOp::create(b, loc, type.getDimSize(dim));
  return tensor::DimOp::create(b, loc, tensor, dim);
}

Value mlir::moe::createFilledTensor(OpBuilder &b, Location loc,
                                    RankedTensorType type, ValueRange dynSizes,
                                    Value value) {
  Value empty = tensor::EmptyOp::create(b, loc, type.getShape(),
                                        type.getElementType(), dynSizes);
  return linalg::FillOp::create(b, loc, value, empty).getResult(0);
}

Value mlir::moe::createZeroTensor(OpBuilder &b, Location loc,
                                  RankedTensorType type, ValueRange dynSizes) {
  Value zero = arith::ConstantOp::create(
      b, loc, b.getZeroAttr(type.getElementType()));
  return createFilledTensor(b, loc, type, dynSizes, zero);
}

Value mlir::moe::extendToF32(OpBuilder &b, Location loc, Value scalar) {
  if (scalar.getType().isF32())
    return scalar;
  return arith::ExtFOp::create(b, loc, b.getF32Type(), scalar);
}

Value mlir::moe::buildSigmoid(OpBuilder &b, Location loc, Value z) {
  Type t = z.getType();
  Value one = arith::ConstantOp::create(b, loc, b.getFloatAttr(t, 1.0));
  Value e = math::ExpOp::create(b, loc, arith::NegFOp::create(b, loc, z));
  return arith::DivFOp::create(b, loc, one,
                               arith::AddFOp::create(b, loc, one, e));
}

static Value buildGelu(OpBuilder &b, Location loc, Value z) {
  Type t = z.getType();
  auto cst = [&](double v) {
    return arith::ConstantOp::create(b, loc, b.getFloatAttr(t, v)).getResult();
  };
  Value scaled = arith::MulFOp::create(b, loc, z, cst(M_SQRT1_2));
  Value erf = math::ErfOp::create(b, loc, scaled);
  Value onePlus = arith::AddFOp::create(b, loc, cst(1.0), erf);
  Value half = arith::MulFOp::create(b, loc, cst(0.5), z);
  return arith::MulFOp::create(b, loc, half, onePlus);
}

Value mlir::moe::buildActivation(OpBuilder &b, Location loc, Activation act,
                                 Value z) {
  switch (act) {
  case Activation::swiglu:
  case Activation::silu:
    return arith::MulFOp::create(b, loc, z, buildSigmoid(b, loc, z));
  case Activation::geglu:
  case Activation::gelu:
    return buildGelu(b, loc, z);
  case Activation::relu: {
    Value zero =
        arith::ConstantOp::create(b, loc, b.getFloatAttr(z.getType(), 0.0));
    // maxnumf(NaN, 0) would hide a NaN; relu must propagate it.
    return arith::MaximumFOp::create(b, loc, z, zero);
  }
  }
  llvm_unreachable("unknown activation");
}

Value mlir::moe::buildRanksAhead(OpBuilder &b, Location loc, Value a, Value ia,
                                 Value b_, Value ib) {
  using arith::CmpFPredicate;
  Value aNaN = arith::CmpFOp::create(b, loc, CmpFPredicate::UNO, a, a);
  Value bNaN = arith::CmpFOp::create(b, loc, CmpFPredicate::UNO, b_, b_);
  Value greater = arith::CmpFOp::create(b, loc, CmpFPredicate::OGT, a, b_);
  Value equal = arith::CmpFOp::create(b, loc, CmpFPredicate::OEQ, a, b_);
  Value lowerIndex =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, ia, ib);
  Value trueV = arith::ConstantIntOp::create(b, loc, 1, 1);
  Value aNumber = arith::XOrIOp::create(b, loc, aNaN, trueV);
  Value bothNaN = arith::AndIOp::create(b, loc, aNaN, bNaN);
  // Same value (or both NaN): the lower index wins.
  Value tie = arith::OrIOp::create(b, loc, equal, bothNaN);
  Value tieWin = arith::AndIOp::create(b, loc, tie, lowerIndex);
  Value numberOverNaN = arith::AndIOp::create(b, loc, aNumber, bNaN);
  Value ahead = arith::OrIOp::create(b, loc, greater, tieWin);
  return arith::OrIOp::create(b, loc, ahead, numberOverNaN);
}
