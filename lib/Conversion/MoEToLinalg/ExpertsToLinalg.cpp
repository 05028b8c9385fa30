//===- ExpertsToLinalg.cpp - reference lowering of expert ops ------------===//
//
// The expert MLPs as linalg.generic contractions on f32 with the weights
// widened in the body (so bf16/f16 weights never round an accumulator);
// grouped experts loop over the expert-major segments with scf.for, and the
// single-neuron experts gather their weight rows with tensor.extract.
//
//===----------------------------------------------------------------------===//

#include "LoweringUtils.h"
#include "moe/Conversion/MoEToLinalg/MoEToLinalg.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/PatternMatch.h"

using namespace mlir;
using namespace mlir::moe;

using utils::IteratorType;

/// Indexing maps over `numDims` loop dims, one per list of result exprs.
static SmallVector<AffineMap>
dimMaps(unsigned numDims,
        std::initializer_list<std::initializer_list<AffineExpr>> results,
        MLIRContext *ctx) {
  SmallVector<AffineMap> maps;
  for (auto exprs : results)
    maps.push_back(
        AffineMap::get(numDims, 0, ArrayRef<AffineExpr>(exprs), ctx));
  return maps;
}

/// A zero-filled f32 tensor of shape `sizes` (static where known).
static Value zerosF32(OpBuilder &b, Location loc,
                      ArrayRef<OpFoldResult> sizes) {
  SmallVector<int64_t> shape;
  SmallVector<Value> dynSizes;
  dispatchIndexOpFoldResults(sizes, dynSizes, shape);
  auto type = RankedTensorType::get(shape, b.getF32Type());
  return createZeroTensor(b, loc, type, dynSizes);
}

/// `Σ_k lhs[m, k] · rhs[n, k]` as an [M, N] f32 tensor (a weight in the
/// `[out, in]` layout on the right, widened to f32 element by element).
static Value buildMatmulTransposedB(OpBuilder &b, Location loc, Value lhs,
                                    Value rhs) {
  MLIRContext *ctx = b.getContext();
  Value acc = zerosF32(b, loc,
                       {tensor::getMixedSize(b, loc, lhs, 0),
                        tensor::getMixedSize(b, loc, rhs, 0)});
  AffineExpr m, n, k;
  bindDims(ctx, m, n, k);
  auto maps = dimMaps(3, {{m, k}, {n, k}, {m, n}}, ctx);
  return linalg::GenericOp::create(
             b, loc, TypeRange{acc.getType()}, ValueRange{lhs, rhs},
             ValueRange{acc}, maps,
             ArrayRef<IteratorType>{IteratorType::parallel,
                                    IteratorType::parallel,
                                    IteratorType::reduction},
             [&](OpBuilder &nb, Location nloc, ValueRange args) {
               Value w = extendToF32(nb, nloc, args[1]);
               Value prod = arith::MulFOp::create(nb, nloc, args[0], w);
               linalg::YieldOp::create(
                   nb, nloc,
                   ValueRange{arith::AddFOp::create(nb, nloc, args[2], prod)});
             })
      .getResult(0);
}

/// An elementwise linalg.generic over same-shaped f32 tensors; the first
/// input's shape gives the result.
static Value
buildElementwise(OpBuilder &b, Location loc, ValueRange inputs,
                 function_ref<Value(OpBuilder &, Location, ValueRange)> fn) {
  auto type = cast<RankedTensorType>(inputs.front().getType());
  Value out = tensor::EmptyOp::create(
      b, loc, tensor::getMixedSizes(b, loc, inputs.front()),
      type.getElementType());
  auto identity =
      AffineMap::getMultiDimIdentityMap(type.getRank(), b.getContext());
  SmallVector<AffineMap> maps(inputs.size() + 1, identity);
  SmallVector<IteratorType> iterators(type.getRank(), IteratorType::parallel);
  return linalg::GenericOp::create(
             b, loc, TypeRange{out.getType()}, inputs, ValueRange{out}, maps,
             iterators,
             [&](OpBuilder &nb, Location nloc, ValueRange args) {
               linalg::YieldOp::create(nb, nloc,
                                       fn(nb, nloc, args.drop_back()));
             })
      .getResult(0);
}

/// `m[i, j] + bias[j]` for `m [M, N]` and an f32 `bias [N]`.
static Value buildAddColumnBias(OpBuilder &b, Location loc, Value m,
                                Value bias) {
  MLIRContext *ctx = b.getContext();
  AffineExpr i, j;
  bindDims(ctx, i, j);
  auto identity = AffineMap::getMultiDimIdentityMap(2, ctx);
  auto biasMap = AffineMap::get(2, 0, {j}, ctx);
  Value out = tensor::EmptyOp::create(b, loc, tensor::getMixedSizes(b, loc, m),
                                      b.getF32Type());
  return linalg::GenericOp::create(
             b, loc, TypeRange{out.getType()}, ValueRange{m, bias},
             ValueRange{out}, ArrayRef<AffineMap>{identity, biasMap, identity},
             ArrayRef<IteratorType>{IteratorType::parallel,
                                    IteratorType::parallel},
             [&](OpBuilder &nb, Location nloc, ValueRange a) {
               linalg::YieldOp::create(nb, nloc,
                                       ValueRange{addF(nb, nloc, a[0], a[1])});
             })
      .getResult(0);
}

/// One expert MLP on the rows of `x [M, D]`: `w2 · (act(w1 · x) ⊙ (w3 · x))`
/// for the gated activations (`w3` given), `w2 · act(w1 · x)` otherwise;
/// `w1, w3` are `[F, D]`, `w2` is `[D, F]`. Returns `[M, D]` f32.
static Value buildExpertMLP(OpBuilder &b, Location loc,
                            const ExpertActivation &act, Value x, Value w1,
                            Value w2, Value w3, Value b1 = {}, Value b3 = {},
                            Value b2 = {}) {
  Value hidden = buildMatmulTransposedB(b, loc, x, w1);
  if (b1)
    hidden = buildAddColumnBias(b, loc, hidden, b1);
  if (w3) {
    Value up = buildMatmulTransposedB(b, loc, x, w3);
    if (b3)
      up = buildAddColumnBias(b, loc, up, b3);
    hidden = buildElementwise(
        b, loc, {hidden, up}, [&](OpBuilder &nb, Location nloc, ValueRange a) {
          return arith::MulFOp::create(
                     nb, nloc, buildGateActivation(nb, nloc, act, a[0]),
                     buildUpValue(nb, nloc, act, a[1]))
              .getResult();
        });
  } else {
    hidden = buildElementwise(b, loc, {hidden},
                              [&](OpBuilder &nb, Location nloc, ValueRange a) {
                                return buildGateActivation(nb, nloc, act, a[0]);
                              });
  }
  Value y = buildMatmulTransposedB(b, loc, hidden, w2);
  return b2 ? buildAddColumnBias(b, loc, y, b2) : y;
}

/// `w[e]` of a stacked `[E, A, B]` weight, as `[A, B]`.
static Value sliceExpert(OpBuilder &b, Location loc, Value w, Value e) {
  auto type = cast<RankedTensorType>(w.getType());
  auto sliceType = RankedTensorType::get(type.getShape().drop_front(),
                                         type.getElementType());
  OpFoldResult zero = b.getIndexAttr(0), one = b.getIndexAttr(1);
  return tensor::ExtractSliceOp::create(
      b, loc, sliceType, w, ArrayRef<OpFoldResult>{e, zero, zero},
      ArrayRef<OpFoldResult>{one, tensor::getMixedSize(b, loc, w, 1),
                             tensor::getMixedSize(b, loc, w, 2)},
      ArrayRef<OpFoldResult>{one, one, one});
}

/// `bias[e]` of an f32 `[E, N]` bias, as `[N]`.
static Value sliceExpertBias(OpBuilder &b, Location loc, Value bias, Value e) {
  auto type = cast<RankedTensorType>(bias.getType());
  auto rowType = RankedTensorType::get({type.getDimSize(1)},
                                       type.getElementType());
  OpFoldResult zero = b.getIndexAttr(0), one = b.getIndexAttr(1);
  return tensor::ExtractSliceOp::create(
      b, loc, rowType, bias, ArrayRef<OpFoldResult>{e, zero},
      ArrayRef<OpFoldResult>{one, tensor::getMixedSize(b, loc, bias, 1)},
      ArrayRef<OpFoldResult>{one, one});
}

/// `dest + src` elementwise, written into `dest` (the op's init or a slice
/// of it) so that bufferization updates it in place.
static Value buildAccumulate(OpBuilder &b, Location loc, Value dest,
                             Value src) {
  auto type = cast<RankedTensorType>(dest.getType());
  auto identity =
      AffineMap::getMultiDimIdentityMap(type.getRank(), b.getContext());
  SmallVector<IteratorType> iterators(type.getRank(), IteratorType::parallel);
  return linalg::GenericOp::create(
             b, loc, TypeRange{type}, ValueRange{src}, ValueRange{dest},
             ArrayRef<AffineMap>{identity, identity}, iterators,
             [&](OpBuilder &nb, Location nloc, ValueRange a) {
               linalg::YieldOp::create(nb, nloc,
                                       ValueRange{addF(nb, nloc, a[1], a[0])});
             })
      .getResult(0);
}

//===----------------------------------------------------------------------===//
// moe.expert_ffn
//===----------------------------------------------------------------------===//

namespace {
/// result = init; for each expert e, the rows offsets[e] ..< offsets[e+1]
/// become init + MLP_e(rows). Offsets are clamped into [0, S] and made
/// non-decreasing so that bad data cannot reach outside the tensors.
struct ExpertFFNLowering : OpRewritePattern<ExpertFFNOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(ExpertFFNOp op,
                                PatternRewriter &b) const override {
    Location loc = op.getLoc();
    Value rows = op.getRows(), offsets = op.getOffsets(), init = op.getInit();
    Value numRows = getDimSize(b, loc, rows, 0);
    OpFoldResult width = tensor::getMixedSize(b, loc, rows, 1);
    Value numExperts = getDimSize(b, loc, op.getW1(), 0);
    Value zeroIdx = arith::ConstantIndexOp::create(b, loc, 0);
    Value oneIdx = arith::ConstantIndexOp::create(b, loc, 1);
    auto clampedOffset = [&](OpBuilder &nb, Value e, Value lowest) {
      Value raw = arith::IndexCastOp::create(
          nb, loc, nb.getIndexType(),
          tensor::ExtractOp::create(nb, loc, offsets, e));
      Value v = arith::MaxSIOp::create(nb, loc, raw, lowest);
      return arith::MinSIOp::create(nb, loc, v, numRows).getResult();
    };
    auto rowsType = cast<RankedTensorType>(rows.getType());
    auto segmentType = RankedTensorType::get(
        {ShapedType::kDynamic, rowsType.getDimSize(1)}, b.getF32Type());

    auto loop = scf::ForOp::create(
        b, loc, zeroIdx, numExperts, oneIdx, ValueRange{init},
        [&](OpBuilder &nb, Location, Value e, ValueRange args) {
          Value lo = clampedOffset(nb, e, zeroIdx);
          Value next = arith::AddIOp::create(nb, loc, e, oneIdx);
          Value hi = clampedOffset(nb, next, lo);
          Value count = arith::SubIOp::create(nb, loc, hi, lo);
          OpFoldResult zero = nb.getIndexAttr(0), one = nb.getIndexAttr(1);
          SmallVector<OpFoldResult> offs = {lo, zero}, sizes = {count, width},
                                    strides = {one, one};
          Value segment = tensor::ExtractSliceOp::create(
              nb, loc, segmentType, rows, offs, sizes, strides);
          Value w1 = sliceExpert(nb, loc, op.getW1(), e);
          Value w2 = sliceExpert(nb, loc, op.getW2(), e);
          Value w3 = op.getW3() ? sliceExpert(nb, loc, op.getW3(), e) : Value();
          auto bias = [&](Value all) {
            return all ? sliceExpertBias(nb, loc, all, e) : Value();
          };
          Value mlp = buildExpertMLP(nb, loc, ExpertActivation::of(op),
                                     segment, w1, w2, w3, bias(op.getB1()),
                                     bias(op.getB3()), bias(op.getB2()));
          if (Value scales = op.getScale()) {
            Value s = tensor::ExtractOp::create(nb, loc, scales, e);
            mlp = buildElementwise(nb, loc, {mlp},
                                   [&](OpBuilder &sb, Location sloc,
                                       ValueRange a) {
                                     return mulF(sb, sloc, s, a[0]);
                                   });
          }
          Value before = tensor::ExtractSliceOp::create(
              nb, loc, segmentType, args[0], offs, sizes, strides);
          Value after = buildAccumulate(nb, loc, before, mlp);
          Value updated = tensor::InsertSliceOp::create(nb, loc, after, args[0],
                                                        offs, sizes, strides);
          scf::YieldOp::create(nb, loc, updated);
        });
    b.replaceOp(op, loop.getResults());
    return success();
  }
};
} // namespace

//===----------------------------------------------------------------------===//
// moe.shared_expert
//===----------------------------------------------------------------------===//

namespace {
/// init + g · MLP(x), g = σ(x · gateᵀ) per token when the gate is given.
struct SharedExpertLowering : OpRewritePattern<SharedExpertOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(SharedExpertOp op,
                                PatternRewriter &b) const override {
    Location loc = op.getLoc();
    MLIRContext *ctx = b.getContext();
    Value x = op.getInput(), init = op.getInit();
    Value mlp = buildExpertMLP(b, loc, ExpertActivation::of(op), x, op.getW1(),
                               op.getW2(), op.getW3());
    if (Value gate = op.getGate()) {
      // One sigmoid per token, then mlp[t, :] scaled by it.
      Value gateLogit = buildMatmulTransposedB(b, loc, x, gate);
      Value g = buildElementwise(
          b, loc, {gateLogit}, [](OpBuilder &nb, Location nloc, ValueRange a) {
            return buildSigmoid(nb, nloc, a[0]);
          });
      AffineExpr t, d;
      bindDims(ctx, t, d);
      auto identity = AffineMap::getMultiDimIdentityMap(2, ctx);
      auto gateMap =
          AffineMap::get(2, 0, {t, getAffineConstantExpr(0, ctx)}, ctx);
      mlp = linalg::GenericOp::create(
                b, loc, TypeRange{mlp.getType()}, ValueRange{g},
                ValueRange{mlp}, ArrayRef<AffineMap>{gateMap, identity},
                ArrayRef<IteratorType>{IteratorType::parallel,
                                       IteratorType::parallel},
                [&](OpBuilder &nb, Location nloc, ValueRange a) {
                  linalg::YieldOp::create(
                      nb, nloc,
                      ValueRange{arith::MulFOp::create(nb, nloc, a[0], a[1])});
                })
                .getResult(0);
    }
    Value result = buildAccumulate(b, loc, init, mlp);
    b.replaceOp(op, result);
    return success();
  }
};
} // namespace

//===----------------------------------------------------------------------===//
// moe.single_neuron_experts
//===----------------------------------------------------------------------===//

namespace {
/// coef[t, h, j] = w · act(u_i · x_t) (PEER) or w (PKM), then
/// result[t] = init[t] + Σ_{h, j} coef · v_i, with i = ids[t, h, j]; the sum
/// runs over (h, j) in order. Out-of-range ids contribute nothing.
struct SingleNeuronExpertsLowering : OpRewritePattern<SingleNeuronExpertsOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(SingleNeuronExpertsOp op,
                                PatternRewriter &b) const override {
    Location loc = op.getLoc();
    MLIRContext *ctx = b.getContext();
    Value x = op.getInput(), ids = op.getIds(), weights = op.getWeights();
    Value expertOut = op.getExpertOut(), init = op.getInit();
    Value numNeurons = getDimSize(b, loc, expertOut, 0);
    auto readRow = [&](OpBuilder &nb, Location nloc, Value table, Value id,
                       Value col) {
      Value valid, row;
      std::tie(valid, row) = buildIdInRange(nb, nloc, id, numNeurons);
      Value v =
          buildGuardedExtract(nb, nloc, table, ValueRange{row, col}, valid);
      return extendToF32(nb, nloc, v);
    };
    AffineExpr d0, d1, d2, d3;
    bindDims(ctx, d0, d1, d2, d3);

    Value coef = weights;
    if (Value expertIn = op.getExpertIn()) {
      // Iteration (t, h, j, d): dot[t, h, j] = Σ_d x[t, d] · u[i, d].
      Value dots = zerosF32(b, loc, tensor::getMixedSizes(b, loc, ids));
      auto maps = dimMaps(4, {{d0, d1, d2}, {d0, d3}, {d0, d1, d2}}, ctx);
      dots = linalg::GenericOp::create(
                 b, loc, TypeRange{dots.getType()}, ValueRange{ids, x},
                 ValueRange{dots}, maps,
                 ArrayRef<IteratorType>{
                     IteratorType::parallel, IteratorType::parallel,
                     IteratorType::parallel, IteratorType::reduction},
                 [&](OpBuilder &nb, Location nloc, ValueRange a) {
                   Value col = linalg::IndexOp::create(nb, nloc, 3);
                   Value u = readRow(nb, nloc, expertIn, a[0], col);
                   Value prod = arith::MulFOp::create(nb, nloc, a[1], u);
                   linalg::YieldOp::create(
                       nb, nloc, ValueRange{addF(nb, nloc, a[2], prod)});
                 })
                 .getResult(0);
      Activation act = *op.getActivation();
      coef = buildElementwise(b, loc, {weights, dots},
                              [&](OpBuilder &nb, Location nloc, ValueRange a) {
                                return arith::MulFOp::create(
                                           nb, nloc, a[0],
                                           buildActivation(nb, nloc, act, a[1]))
                                    .getResult();
                              });
    }

    // Iteration (t, d, h, j): sum[t, d] = Σ_{h, j} coef[t, h, j] · v[i, d].
    Value sum = zerosF32(b, loc, tensor::getMixedSizes(b, loc, init));
    auto maps = dimMaps(4, {{d0, d2, d3}, {d0, d2, d3}, {d0, d1}}, ctx);
    sum = linalg::GenericOp::create(
              b, loc, TypeRange{sum.getType()}, ValueRange{coef, ids},
              ValueRange{sum}, maps,
              ArrayRef<IteratorType>{
                  IteratorType::parallel, IteratorType::parallel,
                  IteratorType::reduction, IteratorType::reduction},
              [&](OpBuilder &nb, Location nloc, ValueRange a) {
                Value col = linalg::IndexOp::create(nb, nloc, 1);
                Value v = readRow(nb, nloc, expertOut, a[1], col);
                Value prod = arith::MulFOp::create(nb, nloc, a[0], v);
                linalg::YieldOp::create(nb, nloc,
                                        ValueRange{addF(nb, nloc, a[2], prod)});
              })
              .getResult(0);
    b.replaceOp(op, buildAccumulate(b, loc, init, sum));
    return success();
  }
};
} // namespace

void mlir::moe::populateExpertLoweringPatterns(RewritePatternSet &patterns) {
  patterns.add<ExpertFFNLowering, SharedExpertLowering,
               SingleNeuronExpertsLowering>(patterns.getContext());
}
