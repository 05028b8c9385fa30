//===- LoweringUtils.h - building blocks shared by the moe lowerings ------===//

#ifndef MOE_LIB_CONVERSION_MOETOLINALG_LOWERINGUTILS_H
#define MOE_LIB_CONVERSION_MOETOLINALG_LOWERINGUTILS_H

#include "moe/Dialect/MoE/IR/MoEDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"

namespace mlir::moe {

/// The sizes of `shaped`'s dynamic dims, as `tensor.dim` index values.
SmallVector<Value> getDynamicSizes(OpBuilder &b, Location loc, Value shaped);

/// `index` value of dim `dim` of a ranked tensor (constant when static).
Value getDimSize(OpBuilder &b, Location loc, Value tensor, int64_t dim);

/// A tensor of `type` filled with `value` (an f32/i32 scalar), shaped by the
/// dynamic sizes `dynSizes`.
Value createFilledTensor(OpBuilder &b, Location loc, RankedTensorType type,
                         ValueRange dynSizes, Value value);

/// A tensor of `type` filled with zeros of its element type.
Value createZeroTensor(OpBuilder &b, Location loc, RankedTensorType type,
                       ValueRange dynSizes);

/// Widens a bf16/f16 scalar to f32; f32 passes through.
Value extendToF32(OpBuilder &b, Location loc, Value scalar);

/// act(z) for the non-gated part of an activation: silu for swiglu, exact
/// erf-GELU for geglu/gelu, relu, silu (z * sigmoid(z)).
Value buildActivation(OpBuilder &b, Location loc, Activation act, Value z);

/// sigmoid(z) = 1 / (1 + exp(-z)).
Value buildSigmoid(OpBuilder &b, Location loc, Value z);

/// The ranking rule of every top-k: (a, ia) ranks ahead of (b, ib) iff
/// a > b, or a == b and ia < ib; NaN ranks below every non-NaN value and two
/// NaNs by index. `ia`/`ib` are integer values of the same type.
Value buildRanksAhead(OpBuilder &b, Location loc, Value a, Value ia, Value b_,
                      Value ib);

} // namespace mlir::moe

#endif // MOE_LIB_CONVERSION_MOETOLINALG_LOWERINGUTILS_H
