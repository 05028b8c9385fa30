//===- ScalarEmitter.h - scalar index/integer ops in GPU lowerings -*- C++
//-*-===//
//
// The tensor-level GPU lowerings compute many indices, masks and selects per
// work item; these helpers keep that arithmetic readable.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_CONVERSION_MOETOGPU_SCALAREMITTER_H
#define MOE_LIB_CONVERSION_MOETOGPU_SCALAREMITTER_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"

namespace mlir::moe {

/// Index and integer helpers on one builder and location.
struct ScalarEmitter {
  OpBuilder &b;
  Location loc;

  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, loc, x, y); }
  Value sub(Value x, Value y) { return arith::SubIOp::create(b, loc, x, y); }
  Value mul(Value x, Value y) { return arith::MulIOp::create(b, loc, x, y); }
  Value div(Value x, int64_t d) {
    return arith::DivUIOp::create(b, loc, x, idx(d));
  }
  Value rem(Value x, int64_t d) {
    return arith::RemUIOp::create(b, loc, x, idx(d));
  }
  Value minU(Value x, Value y) { return arith::MinUIOp::create(b, loc, x, y); }
  Value cmp(arith::CmpIPredicate p, Value x, Value y) {
    return arith::CmpIOp::create(b, loc, p, x, y);
  }
  Value ult(Value x, Value y) { return cmp(arith::CmpIPredicate::ult, x, y); }
  Value ule(Value x, Value y) { return cmp(arith::CmpIPredicate::ule, x, y); }
  Value eq(Value x, Value y) { return cmp(arith::CmpIPredicate::eq, x, y); }
  Value both(Value x, Value y) { return arith::AndIOp::create(b, loc, x, y); }
  Value select(Value c, Value x, Value y) {
    return arith::SelectOp::create(b, loc, c, x, y);
  }
  Value i32(int64_t v) {
    return arith::ConstantIntOp::create(b, loc, b.getI32Type(), v);
  }
  /// An i32 as an index (sign-extended) and an index as an i32.
  Value toIndex(Value v) {
    return arith::IndexCastOp::create(b, loc, b.getIndexType(), v);
  }
  Value toI32(Value v) {
    return arith::IndexCastOp::create(b, loc, b.getI32Type(), v);
  }
  Value f32(double v) {
    return arith::ConstantFloatOp::create(b, loc, b.getF32Type(),
                                          APFloat(static_cast<float>(v)));
  }
  /// The value of `i` (index) picked from `values` by a select chain.
  Value pick(ArrayRef<Value> values, Value i) {
    Value picked = values[0];
    for (size_t j = 1; j < values.size(); ++j)
      picked = select(eq(i, idx(j)), values[j], picked);
    return picked;
  }
};

/// A tensor of `shape` whose every element is `body` of its indices: a
/// parallel linalg.generic with no inputs (a grid on the GPU).
inline Value
buildGenerated(OpBuilder &b, Location loc, ArrayRef<OpFoldResult> shape,
               Type elementType,
               function_ref<Value(ScalarEmitter &, ValueRange)> body) {
  Value init = tensor::EmptyOp::create(b, loc, shape, elementType);
  auto identity =
      AffineMap::getMultiDimIdentityMap(shape.size(), b.getContext());
  SmallVector<utils::IteratorType> parallel(shape.size(),
                                            utils::IteratorType::parallel);
  return linalg::GenericOp::create(
             b, loc, TypeRange{init.getType()}, ValueRange{}, ValueRange{init},
             ArrayRef<AffineMap>{identity}, parallel,
             [&](OpBuilder &nb, Location nloc, ValueRange) {
               ScalarEmitter in{nb, nloc};
               SmallVector<Value> indices;
               for (int64_t d = 0, e = shape.size(); d < e; ++d)
                 indices.push_back(linalg::IndexOp::create(nb, nloc, d));
               linalg::YieldOp::create(nb, nloc, body(in, indices));
             })
      .getResult(0);
}

} // namespace mlir::moe

#endif // MOE_LIB_CONVERSION_MOETOGPU_SCALAREMITTER_H
