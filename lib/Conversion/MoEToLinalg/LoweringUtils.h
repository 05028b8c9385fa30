//===- LoweringUtils.h - building blocks shared by the moe lowerings ------===//

#ifndef MOE_LIB_CONVERSION_MOETOLINALG_LOWERINGUTILS_H
#define MOE_LIB_CONVERSION_MOETOLINALG_LOWERINGUTILS_H

#include "moe/Dialect/MoE/IR/MoEDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"

#include <optional>

namespace mlir::moe {

/// Scalar float arithmetic, the building blocks of every region body.
Value addF(OpBuilder &b, Location loc, Value x, Value y);
Value mulF(OpBuilder &b, Location loc, Value x, Value y);
Value divF(OpBuilder &b, Location loc, Value x, Value y);

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
/// erf-GELU for geglu/gelu, tanh-approximated GELU for geglu_tanh/gelu_tanh,
/// relu, relu(z)^2 for relu2, silu (z * sigmoid(z)).
Value buildActivation(OpBuilder &b, Location loc, Activation act, Value z);

/// The activation of an expert MLP (moe.expert_ffn, moe.shared_expert) with
/// its SwiGLU options: clamp limit, alpha, offset of the up branch.
struct ExpertActivation {
  Activation act = Activation::swiglu;
  std::optional<double> limit;
  double alpha = 1.0;
  double upOffset = 0.0;
  bool clampAfterActivation = false;

  template <typename OpTy> static ExpertActivation of(OpTy op) {
    ExpertActivation a;
    a.act = op.getActivation();
    if (FloatAttr limit = op.getSwigluLimitAttr())
      a.limit = limit.getValueAsDouble();
    a.alpha = op.getSwigluAlpha().convertToDouble();
    a.upOffset = op.getSwigluUpOffset().convertToDouble();
    a.clampAfterActivation = op.getSwigluClampAfterActivation();
    return a;
  }
};

/// The gate branch on a scalar f32 `g`: act(g), for swiglu with the options
/// `min(g, limit)` before (or the minimum after) `g·σ(alpha·g)`.
Value buildGateActivation(OpBuilder &b, Location loc,
                          const ExpertActivation &a, Value g);

/// The up branch of a gated activation on a scalar or vector f32 `u`:
/// `clamp(u, -limit, limit) + upOffset` (each part only when set).
Value buildUpValue(OpBuilder &b, Location loc, const ExpertActivation &a,
                   Value u);

/// sigmoid(z) = 1 / (1 + exp(-z)).
Value buildSigmoid(OpBuilder &b, Location loc, Value z);

/// The ranking rule of every top-k: (a, ia) ranks ahead of (b, ib) iff
/// a > b, or a == b and ia < ib; NaN ranks below every non-NaN value and two
/// NaNs by index. `ia`/`ib` are integer values of the same type.
Value buildRanksAhead(OpBuilder &b, Location loc, Value a, Value ia, Value b_,
                      Value ib);


//===----------------------------------------------------------------------===//
// Dispatch and expert lowerings (DispatchToLinalg.cpp, ExpertsToLinalg.cpp)
//===----------------------------------------------------------------------===//

/// Whether the i32 id `id` lies in [0, size) (`size` an index value), and
/// `id` as an index clamped to 0 when it does not, so that a load at the
/// returned index is safe whenever `size` > 0.
std::pair<Value, Value> buildIdInRange(OpBuilder &b, Location loc, Value id,
                                       Value size);

/// `tensor[indices]` when `inBounds` holds, else zero of the element type;
/// the load happens only inside the taken branch (ids are data and may point
/// outside the tensor).
Value buildGuardedExtract(OpBuilder &b, Location loc, Value tensor,
                          ValueRange indices, Value inBounds);

/// `scf.if cond` yielding `values` (the untouched state) in the else branch
/// and what `thenBuilder` returns in the then branch.
SmallVector<Value>
buildIfUpdate(OpBuilder &b, Location loc, Value cond, ValueRange values,
              function_ref<SmallVector<Value>(OpBuilder &)> thenBuilder);

/// `scf.for iv in [lb, ub)` carrying `inits`; `body` returns the yielded
/// values.
SmallVector<Value>
buildLoop(OpBuilder &b, Location loc, Value lb, Value ub, ValueRange inits,
          function_ref<SmallVector<Value>(OpBuilder &, Value, ValueRange)> body);

/// `value` with type `type` (a `tensor.cast` when the static shape differs).
Value castToType(OpBuilder &b, Location loc, Value value, Type type);

//===----------------------------------------------------------------------===//
// Rows, reductions and top-k (RoutingToLinalg.cpp; usable by any lowering)
//===----------------------------------------------------------------------===//

/// An f32 constant.
Value createF32Constant(OpBuilder &b, Location loc, double value);

/// The 2-D `[rows, last]` view of a tensor of rank >= 1 (leading dims
/// collapsed; a rank-1 tensor becomes one row).
Value collapseToRows(OpBuilder &b, Location loc, Value tensor);

/// Inverse of `collapseToRows`: `rows` reshaped to the shape of `like`
/// (whose type the result has).
Value expandFromRows(OpBuilder &b, Location loc, Value rows, Value like);

/// `combine(acc, x[r, n])` folded over n = 0, 1, ... in order, starting from
/// `init`, for each row of the 2-D `x`: a `[R]` tensor of init's type.
Value buildRowReduction(
    OpBuilder &b, Location loc, Value x, Value init,
    function_ref<Value(OpBuilder &, Location, Value acc, Value elem)> combine);

/// `fn(x[r, n], row[0][r], row[1][r], ...)` for each element of the 2-D `x`:
/// an elementwise map with per-row operands (`[R]` tensors) broadcast along
/// the row. The result has x's shape and `resultElementType`.
Value buildRowBroadcastMap(
    OpBuilder &b, Location loc, Value x, ValueRange rowOperands,
    Type resultElementType,
    function_ref<Value(OpBuilder &, Location, Value elem, ValueRange row)> fn);

/// Softmax of each row of the 2-D f32 `x`, exp(x - m) / Σ exp(x - m) with m
/// the row max; a NaN anywhere in a row makes the whole row NaN.
Value buildRowSoftmax(OpBuilder &b, Location loc, Value x);

/// `src[r, ids[r, c]]` for each element of the 2-D i32 `ids` (in range by
/// construction: no bounds check).
Value buildRowGather(OpBuilder &b, Location loc, Value src, Value ids);

/// The ranking rule extended with exclusion: an excluded element (i1 `exA`
/// true) ranks below every element that is not, and elements alike in
/// exclusion rank by `buildRanksAhead`.
Value buildRanksAheadExcluding(OpBuilder &b, Location loc, Value a, Value ia,
                               Value exA, Value b_, Value ib, Value exB);

/// Per-row top-k of a 2-D f32 `keys [R, N]` under the ranking rule.
struct RowTopK {
  Value values; ///< [R, k] f32 keys in rank order (null without valuesInit).
  Value ids;    ///< [R, k] i32 ids of the chosen elements, in rank order.
};

/// Selects, for every row, the k = `idsInit` dim 1 first elements by the
/// ranking rule on (key, id) and writes their ids (and keys when `valuesInit`
/// is given) into the `[R, k]` inits. An element's id is its position unless
/// `elementIds` (i32 `[R, N]`, distinct per row) gives it; ties go to the
/// lower id. With `excluded` (i1 `[R, N]`) excluded elements rank below all
/// others. Selection sort: k scans of the row, pass p taking the best element
/// behind pick p-1, so O(R·k·N) with no scratch state. Should a row have
/// fewer than k elements, the missing picks are id -1 with key 0.
RowTopK buildRowTopK(OpBuilder &b, Location loc, Value keys, Value idsInit,
                     Value valuesInit = {}, Value elementIds = {},
                     Value excluded = {});

} // namespace mlir::moe

#endif // MOE_LIB_CONVERSION_MOETOLINALG_LOWERINGUTILS_H
