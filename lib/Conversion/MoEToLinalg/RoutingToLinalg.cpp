//===- RoutingToLinalg.cpp - reference lowering of routing ops ------------===//
//
// moe.linear, moe.route, moe.topk, moe.product_key_topk, moe.batch_norm,
// moe.layer_norm and moe.aux_loss on tensors: regular work (projections, scores, reductions) as
// linalg ops, per-row selection as scf.for loops over tokens that thread
// their result tensors (tensor.insert on iter_args bufferizes in place).
//
//===----------------------------------------------------------------------===//

#include "LoweringUtils.h"
#include "Philox.h"
#include "moe/Conversion/MoEToLinalg/MoEToLinalg.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/PatternMatch.h"

#include <cmath>

using namespace mlir;
using namespace mlir::moe;

//===----------------------------------------------------------------------===//
// Small builders
//===----------------------------------------------------------------------===//

/// An empty `[rows(like), cols...]` tensor: as many rows as the 2-D `like`,
/// static when its dim 0 is.
static Value createEmptyRowsLike(OpBuilder &b, Location loc, Value like,
                                 ArrayRef<int64_t> cols, Type elementType) {
  auto likeType = cast<RankedTensorType>(like.getType());
  SmallVector<int64_t> shape = {likeType.getDimSize(0)};
  shape.append(cols.begin(), cols.end());
  SmallVector<Value> dyn;
  if (likeType.isDynamicDim(0))
    dyn.push_back(tensor::DimOp::create(b, loc, like, 0));
  return tensor::EmptyOp::create(b, loc, shape, elementType, dyn);
}

/// Elementwise `fn` over the 2-D `x` (no per-row operands).
static Value buildMap(OpBuilder &b, Location loc, Value x,
                      function_ref<Value(OpBuilder &, Location, Value)> fn) {
  return buildRowBroadcastMap(b, loc, x, ValueRange{}, b.getF32Type(),
                              [&](OpBuilder &nb, Location nloc, Value v,
                                  ValueRange) { return fn(nb, nloc, v); });
}

/// softplus(z) = log1p(exp(-|z|)) + max(z, 0); maximumf keeps a NaN NaN.
static Value buildSoftplus(OpBuilder &b, Location loc, Value z) {
  Value negAbs =
      arith::NegFOp::create(b, loc, math::AbsFOp::create(b, loc, z));
  Value log1p =
      math::Log1pOp::create(b, loc, math::ExpOp::create(b, loc, negAbs));
  Value pos =
      arith::MaximumFOp::create(b, loc, z, createF32Constant(b, loc, 0.0));
  return addF(b, loc, log1p, pos);
}

/// The elementwise router scores: sigmoid, or DeepSeek-V4's sqrt(softplus).
static Value buildElementwiseScore(OpBuilder &b, Location loc, Value z,
                                   ScoreFunction score) {
  if (score == ScoreFunction::sqrt_softplus)
    return math::SqrtOp::create(b, loc, buildSoftplus(b, loc, z));
  return buildSigmoid(b, loc, z);
}

/// Elementwise `score` over the 2-D `x`.
static Value buildElementwiseScores(OpBuilder &b, Location loc, Value x,
                                    ScoreFunction score) {
  return buildMap(b, loc, x, [&](OpBuilder &nb, Location nloc, Value v) {
    return buildElementwiseScore(nb, nloc, v, score);
  });
}

/// `x[r, n] + bias[n]`: the per-expert selection bias.
static Value addColumnBias(OpBuilder &b, Location loc, Value x, Value bias) {
  auto type = cast<RankedTensorType>(x.getType());
  Value empty =
      tensor::EmptyOp::create(b, loc, type.getShape(), type.getElementType(),
                              getDynamicSizes(b, loc, x));
  MLIRContext *ctx = b.getContext();
  AffineExpr r = getAffineDimExpr(0, ctx), n = getAffineDimExpr(1, ctx);
  AffineMap full = AffineMap::get(2, 0, {r, n}, ctx);
  AffineMap column = AffineMap::get(2, 0, {n}, ctx);
  return linalg::GenericOp::create(
             b, loc, TypeRange{type}, ValueRange{x, bias}, ValueRange{empty},
             ArrayRef<AffineMap>{full, column, full},
             {utils::IteratorType::parallel, utils::IteratorType::parallel},
             [](OpBuilder &nb, Location nloc, ValueRange args) {
               linalg::YieldOp::create(nb, nloc,
                                       addF(nb, nloc, args[0], args[1]));
             })
      .getResult(0);
}

/// Columns [0, k) of the 2-D `x` (all of x when it has k columns).
static Value leadingColumns(OpBuilder &b, Location loc, Value x, int64_t k) {
  auto type = cast<RankedTensorType>(x.getType());
  if (type.getDimSize(1) == k)
    return x;
  SmallVector<OpFoldResult> offsets = {b.getIndexAttr(0), b.getIndexAttr(0)};
  SmallVector<OpFoldResult> sizes = {tensor::getMixedSize(b, loc, x, 0),
                                     b.getIndexAttr(k)};
  SmallVector<OpFoldResult> strides = {b.getIndexAttr(1), b.getIndexAttr(1)};
  return tensor::ExtractSliceOp::create(b, loc, x, offsets, sizes, strides);
}

/// `combine(acc, x0[i], x1[i], ...)` folded over i in order from `init`, for
/// 1-D tensors `xs` of one length: an f32 scalar.
static Value buildReduceToScalar(
    OpBuilder &b, Location loc, ValueRange xs, Value init,
    function_ref<Value(OpBuilder &, Location, Value, ValueRange)> combine) {
  auto scalarType = RankedTensorType::get({}, init.getType());
  Value acc = createFilledTensor(b, loc, scalarType, {}, init);
  MLIRContext *ctx = b.getContext();
  AffineMap elem = AffineMap::getMultiDimIdentityMap(1, ctx);
  SmallVector<AffineMap> maps(xs.size(), elem);
  maps.push_back(AffineMap::get(1, 0, {}, ctx));
  auto reduce = linalg::GenericOp::create(
      b, loc, TypeRange{scalarType}, xs, ValueRange{acc}, maps,
      {utils::IteratorType::reduction},
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        linalg::YieldOp::create(
            nb, nloc, combine(nb, nloc, args.back(), args.drop_back()));
      });
  return tensor::ExtractOp::create(b, loc, reduce.getResult(0), ValueRange{});
}

/// Column sums of the 2-D f32 `x`: `[N]`, each summed over rows in order.
static Value buildColumnSums(OpBuilder &b, Location loc, Value x) {
  auto type = cast<RankedTensorType>(x.getType());
  auto colType = RankedTensorType::get({type.getDimSize(1)}, b.getF32Type());
  SmallVector<Value> dyn;
  if (type.isDynamicDim(1))
    dyn.push_back(tensor::DimOp::create(b, loc, x, 1));
  Value acc = createZeroTensor(b, loc, colType, dyn);
  MLIRContext *ctx = b.getContext();
  AffineExpr r = getAffineDimExpr(0, ctx), n = getAffineDimExpr(1, ctx);
  return linalg::GenericOp::create(
             b, loc, TypeRange{colType}, ValueRange{x}, ValueRange{acc},
             ArrayRef<AffineMap>{AffineMap::get(2, 0, {r, n}, ctx),
                                 AffineMap::get(2, 0, {n}, ctx)},
             {utils::IteratorType::reduction, utils::IteratorType::parallel},
             [](OpBuilder &nb, Location nloc, ValueRange args) {
               linalg::YieldOp::create(nb, nloc,
                                       addF(nb, nloc, args[1], args[0]));
             })
      .getResult(0);
}

/// An index value as f32 (counts and sizes of the losses).
static Value indexToF32(OpBuilder &b, Location loc, Value index) {
  Value asI64 = arith::IndexCastUIOp::create(b, loc, b.getI64Type(), index);
  return arith::UIToFPOp::create(b, loc, b.getF32Type(), asI64);
}

/// Per-expert sums `Σ_{t,j} [ids[t, j] = e] · value(t, j)` over the experts
/// of `logits [T, E]` (an f32 `[E]`), in token-major order; ids outside
/// [0, E) contribute nothing.
static Value buildExpertHistogram(
    OpBuilder &b, Location loc, Value ids, Value logits,
    function_ref<Value(OpBuilder &, Location, Value t, Value j)> value) {
  auto logitsType = cast<RankedTensorType>(logits.getType());
  auto histType =
      RankedTensorType::get({logitsType.getDimSize(1)}, b.getF32Type());
  Value experts = getDimSize(b, loc, logits, 1);
  SmallVector<Value> dyn;
  if (logitsType.isDynamicDim(1))
    dyn.push_back(experts);
  Value hist = createZeroTensor(b, loc, histType, dyn);
  Value c0 = arith::ConstantIndexOp::create(b, loc, 0);
  Value c1 = arith::ConstantIndexOp::create(b, loc, 1);
  Value tokens = getDimSize(b, loc, ids, 0);
  Value choices = getDimSize(b, loc, ids, 1);
  Value zero = createF32Constant(b, loc, 0.0);
  auto tokenLoop = scf::ForOp::create(
      b, loc, c0, tokens, c1, ValueRange{hist},
      [&](OpBuilder &tb, Location tl, Value t, ValueRange tArgs) {
        auto choiceLoop = scf::ForOp::create(
            tb, tl, c0, choices, c1, tArgs,
            [&](OpBuilder &jb, Location jl, Value j, ValueRange jArgs) {
              Value id =
                  tensor::ExtractOp::create(jb, jl, ids, ValueRange{t, j});
              auto [valid, slot] = buildIdInRange(jb, jl, id, experts);
              Value add = arith::SelectOp::create(jb, jl, valid,
                                                  value(jb, jl, t, j), zero);
              Value cur = tensor::ExtractOp::create(jb, jl, jArgs[0], slot);
              Value updated = tensor::InsertOp::create(
                  jb, jl, addF(jb, jl, cur, add), jArgs[0], slot);
              scf::YieldOp::create(jb, jl, updated);
            });
        scf::YieldOp::create(tb, tl, choiceLoop.getResults());
      });
  return tokenLoop.getResult(0);
}

//===----------------------------------------------------------------------===//
// moe.linear
//===----------------------------------------------------------------------===//

namespace {
/// `init + x · wᵀ` as a linalg.matmul whose B map reads the [out, in]
/// weight transposed; a bf16/f16 weight is widened to f32 by the matmul's
/// cast, the accumulation is f32.
struct LowerLinear : OpRewritePattern<LinearOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(LinearOp op,
                                PatternRewriter &rewriter) const override {
    MLIRContext *ctx = rewriter.getContext();
    AffineExpr m = getAffineDimExpr(0, ctx), n = getAffineDimExpr(1, ctx),
               k = getAffineDimExpr(2, ctx);
    SmallVector<AffineMap> maps = {AffineMap::get(3, 0, {m, k}, ctx),
                                   AffineMap::get(3, 0, {n, k}, ctx),
                                   AffineMap::get(3, 0, {m, n}, ctx)};
    auto matmul = linalg::MatmulOp::create(
        rewriter, op.getLoc(), TypeRange{op.getType()},
        ValueRange{op.getInput(), op.getWeight()}, ValueRange{op.getInit()},
        {rewriter.getNamedAttr("indexing_maps",
                               rewriter.getAffineMapArrayAttr(maps))});
    rewriter.replaceOp(op, matmul.getResult(0));
    return success();
  }
};

//===----------------------------------------------------------------------===//
// moe.rms_norm
//===----------------------------------------------------------------------===//

/// `x · w / sqrt(Σ_j x_j² / D + eps)` per row: the sum of squares in `j`
/// order (one row reduction), then one elementwise pass.
struct LowerRMSNorm : OpRewritePattern<RMSNormOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(RMSNormOp op,
                                PatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    OpBuilder &b = rewriter;
    Value input = op.getInput();
    auto type = cast<RankedTensorType>(input.getType());
    Value sumSquares = buildRowReduction(
        b, loc, input, createF32Constant(b, loc, 0.0),
        [](OpBuilder &nb, Location nloc, Value acc, Value v) {
          return addF(nb, nloc, acc, mulF(nb, nloc, v, v));
        });
    Value width = createF32Constant(b, loc, type.getDimSize(1));
    Value eps = createF32Constant(b, loc, op.getEpsilon().convertToDouble());
    Value one = createF32Constant(b, loc, 1.0);
    Value empty =
        tensor::EmptyOp::create(b, loc, type.getShape(), type.getElementType(),
                                getDynamicSizes(b, loc, input));
    MLIRContext *ctx = b.getContext();
    AffineExpr t = getAffineDimExpr(0, ctx), c = getAffineDimExpr(1, ctx);
    AffineMap full = AffineMap::get(2, 0, {t, c}, ctx);
    AffineMap row = AffineMap::get(2, 0, {t}, ctx);
    AffineMap channel = AffineMap::get(2, 0, {c}, ctx);
    auto generic = linalg::GenericOp::create(
        b, loc, TypeRange{type}, ValueRange{input, sumSquares, op.getWeight()},
        ValueRange{empty}, ArrayRef<AffineMap>{full, row, channel, full},
        {utils::IteratorType::parallel, utils::IteratorType::parallel},
        [&](OpBuilder &nb, Location nloc, ValueRange args) {
          Value meanSquare = divF(nb, nloc, args[1], width);
          Value root =
              math::SqrtOp::create(nb, nloc, addF(nb, nloc, meanSquare, eps));
          Value normed = mulF(nb, nloc, args[0], divF(nb, nloc, one, root));
          linalg::YieldOp::create(nb, nloc, mulF(nb, nloc, normed, args[2]));
        });
    rewriter.replaceOp(op, generic.getResult(0));
    return success();
  }
};

//===----------------------------------------------------------------------===//
// moe.softcap
//===----------------------------------------------------------------------===//

/// `cap · tanh(l / cap)` elementwise, in f32 as written.
struct LowerSoftcap : OpRewritePattern<SoftcapOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(SoftcapOp op,
                                PatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value cap = createF32Constant(rewriter, loc,
                                  op.getCap().convertToDouble());
    rewriter.replaceOp(
        op, buildMap(rewriter, loc, op.getInput(),
                     [&](OpBuilder &nb, Location nloc, Value v) {
                       Value t = math::TanhOp::create(nb, nloc,
                                                      divF(nb, nloc, v, cap));
                       return mulF(nb, nloc, cap, t);
                     }));
    return success();
  }
};

//===----------------------------------------------------------------------===//
// moe.route
//===----------------------------------------------------------------------===//

/// The router: noisy logits, scores, the selection key (with bias), the
/// group-limited exclusion mask, top-C selection, then the combine weights of
/// the C chosen experts (normalised over the top-k, scaled).
struct LowerRoute : OpRewritePattern<RouteOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(RouteOp op,
                                PatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    OpBuilder &b = rewriter;
    Value logits = op.getLogits();
    auto logitsType = cast<RankedTensorType>(logits.getType());
    int64_t choices = op.getNumChoices();
    int64_t k = op.getTopK();
    SmallVector<Value> tokenDyn = getDynamicSizes(b, loc, logits);

    Value l = logits;
    if (op.isNoisy())
      l = buildNoisyLogits(b, loc, l, op.getNoiseLogits(), op.getSeed());

    if (op.isHashed()) {
      rewriter.replaceOp(op, lowerHashed(b, loc, op, l));
      return success();
    }

    bool scoreFirst = op.getOrder() == RoutingOrder::score_then_topk;
    Value scores = scoreFirst ? buildScores(b, loc, l, op.getScore()) : Value();
    Value key = scoreFirst ? scores : l;
    if (Value bias = op.getBias())
      key = addColumnBias(b, loc, key, bias);

    Value excluded;
    if (op.getGroups() > 1)
      excluded = buildGroupExclusion(b, loc, key, op.getGroups(),
                                     op.getTopkGroups(), op.getGroupScore());

    // Excluded experts rank below every kept one (NaN included), so the top-C
    // takes them only if C exceeds the kept experts, which the front end
    // never asks for (C <= min(2k, topk_groups * E/G)).
    auto idsType = RankedTensorType::get({logitsType.getDimSize(0), choices},
                                         b.getI32Type());
    Value idsInit = tensor::EmptyOp::create(b, loc, idsType.getShape(),
                                            b.getI32Type(), tokenDyn);
    Value ids = buildRowTopK(b, loc, key, idsInit, /*valuesInit=*/{},
                             /*elementIds=*/{}, excluded)
                    .ids;

    // Weights of the chosen experts, before normalisation and scaling.
    Value raw;
    if (scoreFirst) {
      raw = buildRowGather(b, loc, scores, ids);
    } else if (op.getScore() == ScoreFunction::sparsemixer) {
      raw = buildSparsemixerWeights(b, loc, l, ids,
                                    op.getJitterEps()->convertToDouble());
    } else if (op.getScore() != ScoreFunction::softmax) {
      raw = buildElementwiseScores(b, loc, buildRowGather(b, loc, l, ids),
                                   op.getScore());
    } else {
      // Softmax over the k chosen logits; the fallback columns share its max
      // and denominator.
      Value chosen = buildRowGather(b, loc, l, ids);
      Value rowMax = buildRowReduction(
          b, loc, leadingColumns(b, loc, chosen, k),
          createF32Constant(b, loc, -INFINITY),
          [](OpBuilder &nb, Location nloc, Value acc, Value v) {
            return arith::MaximumFOp::create(nb, nloc, acc, v).getResult();
          });
      Value exps = buildRowBroadcastMap(
          b, loc, chosen, rowMax, b.getF32Type(),
          [](OpBuilder &nb, Location nloc, Value v, ValueRange row) {
            Value shifted = arith::SubFOp::create(nb, nloc, v, row[0]);
            return math::ExpOp::create(nb, nloc, shifted).getResult();
          });
      Value denom = buildRowSum(b, loc, leadingColumns(b, loc, exps, k));
      raw = buildRowBroadcastMap(
          b, loc, exps, denom, b.getF32Type(),
          [](OpBuilder &nb, Location nloc, Value v, ValueRange row) {
            return divF(nb, nloc, v, row[0]);
          });
    }

    Value weights = raw;
    double scaling = op.getScaling().convertToDouble();
    Value scale = scaling == 1.0 ? Value() : createF32Constant(b, loc, scaling);
    if (op.getNormalize()) {
      Value norm = buildRowSum(b, loc, leadingColumns(b, loc, raw, k));
      weights = buildRowBroadcastMap(
          b, loc, raw, norm, b.getF32Type(),
          [&](OpBuilder &nb, Location nloc, Value v, ValueRange row) {
            Value normalized = divF(nb, nloc, v, row[0]);
            return scale ? mulF(nb, nloc, normalized, scale) : normalized;
          });
    } else if (scale) {
      weights =
          buildMap(b, loc, raw, [&](OpBuilder &nb, Location nloc, Value v) {
            return mulF(nb, nloc, v, scale);
          });
    }

    rewriter.replaceOp(op,
                       {castToType(b, loc, weights, op.getWeights().getType()),
                        castToType(b, loc, ids, op.getIds().getType())});
    return success();
  }

private:
  static Value buildRowSum(OpBuilder &b, Location loc, Value x) {
    return buildRowReduction(b, loc, x, createF32Constant(b, loc, 0.0),
                             [](OpBuilder &nb, Location nloc, Value acc,
                                Value v) { return addF(nb, nloc, acc, v); });
  }

  /// PhiMoE's sparsemixer weights `[T, C]` of the ranked picks `ids`: pick
  /// `i` (logit m) weighs `1 / Σ_j exp(l_j - m)` over the experts j not
  /// ranked ahead of it (the earlier picks) whose relative distance
  /// `(m - l_j) / max(|l_j|, m)` is at most `2·eps`, summed in expert order.
  static Value buildSparsemixerWeights(OpBuilder &b, Location loc, Value l,
                                       Value ids, double eps) {
    Value picked = buildRowGather(b, loc, l, ids);
    auto pickedType = cast<RankedTensorType>(picked.getType());
    Value sums = createZeroTensor(b, loc, pickedType,
                                  getDynamicSizes(b, loc, picked));
    MLIRContext *ctx = b.getContext();
    AffineExpr t = getAffineDimExpr(0, ctx), i = getAffineDimExpr(1, ctx),
               j = getAffineDimExpr(2, ctx);
    AffineMap expert = AffineMap::get(3, 0, {t, j}, ctx);
    AffineMap pick = AffineMap::get(3, 0, {t, i}, ctx);
    // 2·eps rounded to f32, as torch compares an f32 tensor with a scalar.
    float threshold = static_cast<float>(2.0 * eps);
    Value denominators =
        linalg::GenericOp::create(
            b, loc, TypeRange{pickedType}, ValueRange{l, picked, ids},
            ValueRange{sums}, ArrayRef<AffineMap>{expert, pick, pick, pick},
            {utils::IteratorType::parallel, utils::IteratorType::parallel,
             utils::IteratorType::reduction},
            [&](OpBuilder &nb, Location nloc, ValueRange args) {
              Value lj = args[0], m = args[1], id = args[2], acc = args[3];
              Value jIdx = arith::IndexCastOp::create(
                  nb, nloc, nb.getI32Type(),
                  linalg::IndexOp::create(nb, nloc, 2));
              Value earlier = buildRanksAhead(nb, nloc, lj, jIdx, m, id);
              Value scale = arith::MaximumFOp::create(
                  nb, nloc, math::AbsFOp::create(nb, nloc, lj), m);
              Value distance =
                  divF(nb, nloc, arith::SubFOp::create(nb, nloc, m, lj), scale);
              Value masked = arith::CmpFOp::create(
                  nb, nloc, arith::CmpFPredicate::OGT, distance,
                  createF32Constant(nb, nloc, threshold));
              Value excluded = arith::OrIOp::create(nb, nloc, earlier, masked);
              Value term = math::ExpOp::create(
                  nb, nloc, arith::SubFOp::create(nb, nloc, lj, m));
              Value added = arith::SelectOp::create(
                  nb, nloc, excluded, createF32Constant(nb, nloc, 0.0), term);
              linalg::YieldOp::create(nb, nloc, addF(nb, nloc, acc, added));
            })
            .getResult(0);
    return buildMap(b, loc, denominators,
                    [](OpBuilder &nb, Location nloc, Value v) {
                      return divF(nb, nloc, createF32Constant(nb, nloc, 1.0),
                                  v);
                    });
  }

  /// Hash routing: ids[t, j] = table[token_ids[t], j] (-1 where the token id
  /// or the entry is out of range), weighted by the scores of those experts
  /// (0 for -1), normalised and scaled as the other routes.
  static SmallVector<Value> lowerHashed(OpBuilder &b, Location loc, RouteOp op,
                                        Value l) {
    Value table = op.getHashTable();
    auto idsType = cast<RankedTensorType>(op.getIds().getType());
    Value idsInit =
        tensor::EmptyOp::create(b, loc, idsType.getShape(), b.getI32Type(),
                                getDynamicSizes(b, loc, l));
    Value vocab = tensor::DimOp::create(b, loc, table, 0);
    Value experts = tensor::DimOp::create(b, loc, l, 1);
    Type i32 = b.getI32Type();
    MLIRContext *ctx = b.getContext();
    AffineExpr t = getAffineDimExpr(0, ctx);
    AffineMap token = AffineMap::get(2, 0, {t}, ctx);
    AffineMap id = AffineMap::getMultiDimIdentityMap(2, ctx);
    Value ids =
        linalg::GenericOp::create(
            b, loc, TypeRange{idsType}, ValueRange{op.getTokenIds()},
            ValueRange{idsInit}, ArrayRef<AffineMap>{token, id},
            {utils::IteratorType::parallel, utils::IteratorType::parallel},
            [&](OpBuilder &nb, Location nloc, ValueRange args) {
              auto [known, row] = buildIdInRange(nb, nloc, args[0], vocab);
              Value col = linalg::IndexOp::create(nb, nloc, 1);
              Value entry =
                  buildGuardedExtract(nb, nloc, table, {row, col}, known);
              Value valid = arith::AndIOp::create(
                  nb, nloc, known, buildIdInRange(nb, nloc, entry, experts).first);
              Value none = arith::ConstantIntOp::create(nb, nloc, i32, -1);
              linalg::YieldOp::create(
                  nb, nloc,
                  arith::SelectOp::create(nb, nloc, valid, entry, none)
                      .getResult());
            })
            .getResult(0);

    Value scores = buildScores(b, loc, l, op.getScore());
    Value zero = createF32Constant(b, loc, 0.0);
    Value raw = buildRowBroadcastMap(
        b, loc, ids, ValueRange{}, b.getF32Type(),
        [&](OpBuilder &nb, Location nloc, Value expert, ValueRange) {
          Value t = linalg::IndexOp::create(nb, nloc, 0);
          auto [valid, e] = buildIdInRange(nb, nloc, expert, experts);
          return buildGuardedExtract(nb, nloc, scores, {t, e}, valid);
        });
    Value weights = raw;
    double scaling = op.getScaling().convertToDouble();
    if (op.getNormalize()) {
      Value norm = buildRowSum(b, loc, raw);
      // A row whose every choice is out of range sums to 0: its weights stay
      // 0 rather than 0/0.
      weights = buildRowBroadcastMap(
          b, loc, raw, norm, b.getF32Type(),
          [&](OpBuilder &nb, Location nloc, Value v, ValueRange row) {
            Value normalized = divF(nb, nloc, v, row[0]);
            Value isZero = arith::CmpFOp::create(
                nb, nloc, arith::CmpFPredicate::OEQ, v, zero);
            return arith::SelectOp::create(nb, nloc, isZero, zero, normalized)
                .getResult();
          });
    }
    if (scaling != 1.0) {
      Value scale = createF32Constant(b, loc, scaling);
      weights =
          buildMap(b, loc, weights, [&](OpBuilder &nb, Location nloc, Value v) {
            return mulF(nb, nloc, v, scale);
          });
    }
    return {castToType(b, loc, weights, op.getWeights().getType()),
            castToType(b, loc, ids, op.getIds().getType())};
  }

  /// softmax over each row, or an elementwise score.
  static Value buildScores(OpBuilder &b, Location loc, Value l,
                           ScoreFunction score) {
    if (score == ScoreFunction::softmax)
      return buildRowSoftmax(b, loc, l);
    return buildElementwiseScores(b, loc, l, score);
  }

  /// l + n·softplus(z), n[t, e] the Philox normal of counter (e, t, 0, 0)
  /// under the seed's key; softplus(z) = log1p(exp(-|z|)) + max(z, 0).
  static Value buildNoisyLogits(OpBuilder &b, Location loc, Value l,
                                Value noiseLogits, Value seed) {
    std::array<Value, 2> key = buildPhiloxKey(b, loc, seed);
    auto type = cast<RankedTensorType>(l.getType());
    Value empty =
        tensor::EmptyOp::create(b, loc, type.getShape(), type.getElementType(),
                                getDynamicSizes(b, loc, l));
    AffineMap id = AffineMap::getMultiDimIdentityMap(2, b.getContext());
    return linalg::GenericOp::create(
               b, loc, TypeRange{type}, ValueRange{l, noiseLogits},
               ValueRange{empty}, ArrayRef<AffineMap>{id, id, id},
               {utils::IteratorType::parallel, utils::IteratorType::parallel},
               [&](OpBuilder &nb, Location nloc, ValueRange args) {
                 Type i32 = nb.getI32Type();
                 Value t = arith::IndexCastUIOp::create(
                     nb, nloc, i32, linalg::IndexOp::create(nb, nloc, 0));
                 Value e = arith::IndexCastUIOp::create(
                     nb, nloc, i32, linalg::IndexOp::create(nb, nloc, 1));
                 Value n = buildPhiloxNormal(nb, nloc, key, e, t);
                 Value softplus = buildSoftplus(nb, nloc, args[1]);
                 linalg::YieldOp::create(
                     nb, nloc,
                     addF(nb, nloc, args[0], mulF(nb, nloc, n, softplus)));
               })
        .getResult(0);
  }

  /// i1 [T, E]: true for the experts outside each token's `keep` best
  /// groups. A group's score is its first-ranked key (max) or the sum of its
  /// two first-ranked keys (top2_sum); groups rank by the ranking rule.
  static Value buildGroupExclusion(OpBuilder &b, Location loc, Value key,
                                   int64_t groups, int64_t keep,
                                   GroupScore groupScore) {
    auto keyType = cast<RankedTensorType>(key.getType());
    int64_t experts = keyType.getDimSize(1);
    int64_t groupSize = experts / groups;
    int64_t perGroup = groupScore == GroupScore::max ? 1 : 2;
    Type f32 = b.getF32Type(), i32 = b.getI32Type();

    // [T, E] -> [T, G, E/G] -> [T·G, E/G]: one row per (token, group).
    OpFoldResult tokens = tensor::getMixedSize(b, loc, key, 0);
    auto grouped3Type =
        RankedTensorType::get({keyType.getDimSize(0), groups, groupSize}, f32);
    Value grouped3 = tensor::ExpandShapeOp::create(
        b, loc, grouped3Type, key, {ReassociationIndices{0}, {1, 2}},
        {tokens, b.getIndexAttr(groups), b.getIndexAttr(groupSize)});
    Value grouped = tensor::CollapseShapeOp::create(
        b, loc, grouped3, {ReassociationIndices{0, 1}, {2}});
    RowTopK best = buildRowTopK(
        b, loc, grouped, createEmptyRowsLike(b, loc, grouped, perGroup, i32),
        createEmptyRowsLike(b, loc, grouped, perGroup, f32));
    Value flatScore = buildRowSum(b, loc, best.values);
    auto scoreType =
        RankedTensorType::get({keyType.getDimSize(0), groups}, f32);
    Value groupScores = tensor::ExpandShapeOp::create(
        b, loc, scoreType, flatScore, {ReassociationIndices{0, 1}},
        {tokens, b.getIndexAttr(groups)});

    Value keptInit =
        tensor::EmptyOp::create(b, loc, {keyType.getDimSize(0), keep}, i32,
                                getDynamicSizes(b, loc, key));
    Value kept = buildRowTopK(b, loc, groupScores, keptInit).ids;

    Value groupSizeC = arith::ConstantIndexOp::create(b, loc, groupSize);
    return buildRowBroadcastMap(
        b, loc, key, ValueRange{}, b.getI1Type(),
        [&](OpBuilder &nb, Location nloc, Value, ValueRange) {
          Value t = linalg::IndexOp::create(nb, nloc, 0);
          Value e = linalg::IndexOp::create(nb, nloc, 1);
          Value group = arith::IndexCastOp::create(
              nb, nloc, i32, arith::DivUIOp::create(nb, nloc, e, groupSizeC));
          Value isKept = arith::ConstantIntOp::create(nb, nloc, 0, 1);
          for (int64_t j = 0; j < keep; ++j) {
            Value col = arith::ConstantIndexOp::create(nb, nloc, j);
            Value keptGroup =
                tensor::ExtractOp::create(nb, nloc, kept, ValueRange{t, col});
            Value same = arith::CmpIOp::create(
                nb, nloc, arith::CmpIPredicate::eq, keptGroup, group);
            isKept = arith::OrIOp::create(nb, nloc, isKept, same);
          }
          Value trueV = arith::ConstantIntOp::create(nb, nloc, 1, 1);
          return arith::XOrIOp::create(nb, nloc, isKept, trueV).getResult();
        });
  }
};

//===----------------------------------------------------------------------===//
// moe.topk
//===----------------------------------------------------------------------===//

/// Leading dims collapsed into rows; the row top-k writes into the inits.
struct LowerTopK : OpRewritePattern<TopKOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(TopKOp op,
                                PatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value input = collapseToRows(rewriter, loc, op.getInput());
    Value valuesInit = collapseToRows(rewriter, loc, op.getValuesInit());
    Value indicesInit = collapseToRows(rewriter, loc, op.getIndicesInit());
    RowTopK top = buildRowTopK(rewriter, loc, input, indicesInit, valuesInit);
    rewriter.replaceOp(
        op, {expandFromRows(rewriter, loc, top.values, op.getValuesInit()),
             expandFromRows(rewriter, loc, top.ids, op.getIndicesInit())});
    return success();
  }
};

//===----------------------------------------------------------------------===//
// moe.product_key_topk
//===----------------------------------------------------------------------===//

/// Sub-key scores per (token, head) as linalg.generic contractions, the two
/// top-k' selections and the final top-k of the k'×k' candidate sums as row
/// top-k over the [T·heads, ·] rows (ties by expert id i·n + j).
struct LowerProductKeyTopK : OpRewritePattern<ProductKeyTopKOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(ProductKeyTopKOp op,
                                PatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    OpBuilder &b = rewriter;
    Type f32 = b.getF32Type(), i32 = b.getI32Type();
    auto keysType = cast<RankedTensorType>(op.getKeys1().getType());
    int64_t n = keysType.getDimSize(keysType.getRank() - 2),
            half = keysType.getDimSize(keysType.getRank() - 1);
    int64_t heads = op.getHeads(), k = op.getTopK();
    int64_t kp = std::min(k, n);

    Value s1 = buildSubKeyScores(b, loc, op.getQuery(), op.getKeys1(), heads,
                                 /*offset=*/0);
    Value s2 = buildSubKeyScores(b, loc, op.getQuery(), op.getKeys2(), heads,
                                 /*offset=*/half);
    Value rows1 = collapseToRows(b, loc, s1);
    Value rows2 = collapseToRows(b, loc, s2);
    auto rowsOf = [&](ArrayRef<int64_t> cols, Type t) {
      return createEmptyRowsLike(b, loc, rows1, cols, t);
    };
    RowTopK top1 =
        buildRowTopK(b, loc, rows1, rowsOf(kp, i32), rowsOf(kp, f32));
    RowTopK top2 =
        buildRowTopK(b, loc, rows2, rowsOf(kp, i32), rowsOf(kp, f32));

    // Candidates (a, c): score v1[a] + v2[c], expert id i[a]·n + j[c].
    MLIRContext *ctx = b.getContext();
    AffineExpr r = getAffineDimExpr(0, ctx), a = getAffineDimExpr(1, ctx),
               c = getAffineDimExpr(2, ctx);
    AffineMap first = AffineMap::get(3, 0, {r, a}, ctx);
    AffineMap second = AffineMap::get(3, 0, {r, c}, ctx);
    AffineMap pair = AffineMap::get(3, 0, {r, a, c}, ctx);
    Value nC = arith::ConstantIntOp::create(b, loc, i32, n);
    Value candScoresInit = rowsOf({kp, kp}, f32);
    Value candIdsInit = rowsOf({kp, kp}, i32);
    auto candidates = linalg::GenericOp::create(
        b, loc, TypeRange{candScoresInit.getType(), candIdsInit.getType()},
        ValueRange{top1.values, top1.ids, top2.values, top2.ids},
        ValueRange{candScoresInit, candIdsInit},
        ArrayRef<AffineMap>{first, first, second, second, pair, pair},
        SmallVector<utils::IteratorType>(3, utils::IteratorType::parallel),
        [&](OpBuilder &nb, Location nloc, ValueRange args) {
          Value score = addF(nb, nloc, args[0], args[2]);
          Value id = arith::AddIOp::create(
              nb, nloc, arith::MulIOp::create(nb, nloc, args[1], nC), args[3]);
          linalg::YieldOp::create(nb, nloc, ValueRange{score, id});
        });
    auto flatten = [&](Value v) {
      return tensor::CollapseShapeOp::create(b, loc, v,
                                             {ReassociationIndices{0}, {1, 2}})
          .getResult();
    };
    Value candScores = flatten(candidates.getResult(0));
    Value candIds = flatten(candidates.getResult(1));

    Value idsInit = collapseToRows(b, loc, op.getIdsInit());
    RowTopK best =
        buildRowTopK(b, loc, candScores, idsInit, rowsOf(k, f32), candIds);
    Value weights = op.getScore() == ScoreFunction::softmax
                        ? buildRowSoftmax(b, loc, best.values)
                        : buildMap(b, loc, best.values, buildSigmoid);
    rewriter.replaceOp(op,
                       {expandFromRows(b, loc, weights, op.getWeightsInit()),
                        expandFromRows(b, loc, best.ids, op.getIdsInit())});
    return success();
  }

private:
  /// [T, heads, n]: keys[i] · query[t, h·dk + offset ..< h·dk + offset + dk/2]
  /// (keys[h, i] where each head has its own table).
  static Value buildSubKeyScores(OpBuilder &b, Location loc, Value query,
                                 Value keys, int64_t heads, int64_t offset) {
    auto keysType = cast<RankedTensorType>(keys.getType());
    bool perHead = keysType.getRank() == 3;
    int64_t n = keysType.getDimSize(perHead ? 1 : 0),
            half = keysType.getDimSize(perHead ? 2 : 1);
    auto queryType = cast<RankedTensorType>(query.getType());
    auto scoresType = RankedTensorType::get({queryType.getDimSize(0), heads, n},
                                            b.getF32Type());
    Value init =
        createZeroTensor(b, loc, scoresType, getDynamicSizes(b, loc, query));
    MLIRContext *ctx = b.getContext();
    AffineExpr t = getAffineDimExpr(0, ctx), h = getAffineDimExpr(1, ctx),
               i = getAffineDimExpr(2, ctx), d = getAffineDimExpr(3, ctx);
    AffineMap queryMap =
        AffineMap::get(4, 0, {t, h * (2 * half) + offset + d}, ctx);
    AffineMap keysMap = perHead ? AffineMap::get(4, 0, {h, i, d}, ctx)
                                : AffineMap::get(4, 0, {i, d}, ctx);
    AffineMap outMap = AffineMap::get(4, 0, {t, h, i}, ctx);
    return linalg::GenericOp::create(
               b, loc, TypeRange{scoresType}, ValueRange{query, keys},
               ValueRange{init}, ArrayRef<AffineMap>{queryMap, keysMap, outMap},
               {utils::IteratorType::parallel, utils::IteratorType::parallel,
                utils::IteratorType::parallel, utils::IteratorType::reduction},
               [](OpBuilder &nb, Location nloc, ValueRange args) {
                 Value key = extendToF32(nb, nloc, args[1]);
                 linalg::YieldOp::create(
                     nb, nloc,
                     addF(nb, nloc, args[2], mulF(nb, nloc, args[0], key)));
               })
        .getResult(0);
  }
};

//===----------------------------------------------------------------------===//
// moe.batch_norm
//===----------------------------------------------------------------------===//

/// (x - mean) / sqrt(var + eps) · scale + shift, channel params broadcast.
struct LowerBatchNorm : OpRewritePattern<BatchNormOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(BatchNormOp op,
                                PatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    OpBuilder &b = rewriter;
    Value input = op.getInput();
    auto type = cast<RankedTensorType>(input.getType());
    Value empty =
        tensor::EmptyOp::create(b, loc, type.getShape(), type.getElementType(),
                                getDynamicSizes(b, loc, input));
    Value eps = createF32Constant(b, loc, op.getEpsilon().convertToDouble());
    MLIRContext *ctx = b.getContext();
    AffineExpr t = getAffineDimExpr(0, ctx), c = getAffineDimExpr(1, ctx);
    AffineMap full = AffineMap::get(2, 0, {t, c}, ctx);
    AffineMap channel = AffineMap::get(2, 0, {c}, ctx);
    auto generic = linalg::GenericOp::create(
        b, loc, TypeRange{type},
        ValueRange{input, op.getMean(), op.getVariance(), op.getScale(),
                   op.getShift()},
        ValueRange{empty},
        ArrayRef<AffineMap>{full, channel, channel, channel, channel, full},
        {utils::IteratorType::parallel, utils::IteratorType::parallel},
        [&](OpBuilder &nb, Location nloc, ValueRange args) {
          Value centered = arith::SubFOp::create(nb, nloc, args[0], args[1]);
          Value stddev =
              math::SqrtOp::create(nb, nloc, addF(nb, nloc, args[2], eps));
          Value normalized = divF(nb, nloc, centered, stddev);
          linalg::YieldOp::create(
              nb, nloc,
              addF(nb, nloc, mulF(nb, nloc, normalized, args[3]), args[4]));
        });
    rewriter.replaceOp(op, generic.getResult(0));
    return success();
  }
};

//===----------------------------------------------------------------------===//
// moe.layer_norm
//===----------------------------------------------------------------------===//

/// Per row: sum over the channels in order, the sum of squared deviations
/// from sum / C in order, then (x - mean) / sqrt(var + eps) · scale + shift.
/// Two reductions over the same row: a row's bits never depend on the others.
struct LowerLayerNorm : OpRewritePattern<LayerNormOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(LayerNormOp op,
                                PatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    OpBuilder &b = rewriter;
    Value input = op.getInput();
    auto type = cast<RankedTensorType>(input.getType());
    SmallVector<Value> dynSizes = getDynamicSizes(b, loc, input);
    auto rowType = RankedTensorType::get({type.getDimSize(0)}, b.getF32Type());
    SmallVector<Value> rowDynSizes;
    if (type.isDynamicDim(0))
      rowDynSizes.push_back(dynSizes.front());
    Value channels =
        createF32Constant(b, loc, static_cast<double>(type.getDimSize(1)));
    Value eps = createF32Constant(b, loc, op.getEpsilon().convertToDouble());
    MLIRContext *ctx = b.getContext();
    AffineExpr t = getAffineDimExpr(0, ctx), c = getAffineDimExpr(1, ctx);
    AffineMap full = AffineMap::get(2, 0, {t, c}, ctx);
    AffineMap row = AffineMap::get(2, 0, {t}, ctx);
    AffineMap channel = AffineMap::get(2, 0, {c}, ctx);
    SmallVector<utils::IteratorType> rowReduction = {
        utils::IteratorType::parallel, utils::IteratorType::reduction};

    Value sum = buildRowReduction(
        b, loc, input, createF32Constant(b, loc, 0.0),
        [](OpBuilder &nb, Location nloc, Value acc, Value v) {
          return addF(nb, nloc, acc, v);
        });
    Value squares =
        linalg::GenericOp::create(
            b, loc, TypeRange{rowType}, ValueRange{input, sum},
            ValueRange{createZeroTensor(b, loc, rowType, rowDynSizes)},
            ArrayRef<AffineMap>{full, row, row}, rowReduction,
            [&](OpBuilder &nb, Location nloc, ValueRange args) {
              Value mean = divF(nb, nloc, args[1], channels);
              Value dev = arith::SubFOp::create(nb, nloc, args[0], mean);
              linalg::YieldOp::create(
                  nb, nloc, addF(nb, nloc, args[2], mulF(nb, nloc, dev, dev)));
            })
            .getResult(0);
    Value empty = tensor::EmptyOp::create(b, loc, type.getShape(),
                                          type.getElementType(), dynSizes);
    auto generic = linalg::GenericOp::create(
        b, loc, TypeRange{type},
        ValueRange{input, sum, squares, op.getScale(), op.getShift()},
        ValueRange{empty},
        ArrayRef<AffineMap>{full, row, row, channel, channel, full},
        {utils::IteratorType::parallel, utils::IteratorType::parallel},
        [&](OpBuilder &nb, Location nloc, ValueRange args) {
          Value mean = divF(nb, nloc, args[1], channels);
          Value var = divF(nb, nloc, args[2], channels);
          Value centered = arith::SubFOp::create(nb, nloc, args[0], mean);
          Value stddev =
              math::SqrtOp::create(nb, nloc, addF(nb, nloc, var, eps));
          Value normalized = divF(nb, nloc, centered, stddev);
          linalg::YieldOp::create(
              nb, nloc,
              addF(nb, nloc, mulF(nb, nloc, normalized, args[3]), args[4]));
        });
    rewriter.replaceOp(op, generic.getResult(0));
    return success();
  }
};

//===----------------------------------------------------------------------===//
// moe.aux_loss
//===----------------------------------------------------------------------===//

/// The three losses as reductions to an f32 scalar; the ids histograms are
/// loops over (token, choice) in order.
struct LowerAuxLoss : OpRewritePattern<AuxLossOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(AuxLossOp op,
                                PatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    OpBuilder &b = rewriter;
    Value logits = op.getLogits();
    Value tokensF = indexToF32(b, loc, getDimSize(b, loc, logits, 0));
    auto expertsF = [&] {
      return indexToF32(b, loc, getDimSize(b, loc, logits, 1));
    };
    Value zero = createF32Constant(b, loc, 0.0);

    Value loss;
    switch (op.getKind()) {
    case AuxLossKind::load_balance: {
      Value ids = op.getIds();
      Value choicesF = indexToF32(b, loc, getDimSize(b, loc, ids, 1));
      Value one = createF32Constant(b, loc, 1.0);
      Value counts = buildExpertHistogram(
          b, loc, ids, logits,
          [&](OpBuilder &, Location, Value, Value) { return one; });
      Value probs = buildProbabilities(b, loc, logits, op.getScore());
      Value meanProbTimesT = buildColumnSums(b, loc, probs);
      Value assignments = mulF(b, loc, tokensF, choicesF);
      // Σ_i f_i · P_i with f_i = counts_i / (T·k), P_i = Σ_t p_ti / T.
      Value dot = buildReduceToScalar(
          b, loc, ValueRange{counts, meanProbTimesT}, zero,
          [&](OpBuilder &nb, Location nloc, Value acc, ValueRange v) {
            Value f = divF(nb, nloc, v[0], assignments);
            Value p = divF(nb, nloc, v[1], tokensF);
            return addF(nb, nloc, acc, mulF(nb, nloc, f, p));
          });
      loss = mulF(b, loc, expertsF(), dot);
      break;
    }
    case AuxLossKind::importance: {
      Value ids = op.getIds(), weights = op.getWeights();
      Value importance = buildExpertHistogram(
          b, loc, ids, logits,
          [&](OpBuilder &nb, Location nloc, Value t, Value j) {
            return tensor::ExtractOp::create(nb, nloc, weights,
                                             ValueRange{t, j})
                .getResult();
          });
      Value sum = buildReduceToScalar(
          b, loc, importance, zero,
          [](OpBuilder &nb, Location nloc, Value acc, ValueRange v) {
            return addF(nb, nloc, acc, v[0]);
          });
      Value numExperts = expertsF();
      Value mean = divF(b, loc, sum, numExperts);
      Value squares = buildReduceToScalar(
          b, loc, importance, zero,
          [&](OpBuilder &nb, Location nloc, Value acc, ValueRange v) {
            Value d = arith::SubFOp::create(nb, nloc, v[0], mean);
            return addF(nb, nloc, acc, mulF(nb, nloc, d, d));
          });
      Value variance = divF(b, loc, squares, numExperts);
      Value meanSq = addF(b, loc, mulF(b, loc, mean, mean),
                          createF32Constant(b, loc, 1e-10));
      loss = divF(b, loc, variance, meanSq);
      break;
    }
    case AuxLossKind::z_loss: {
      Value rowMax = buildRowReduction(
          b, loc, logits, createF32Constant(b, loc, -INFINITY),
          [](OpBuilder &nb, Location nloc, Value acc, Value v) {
            return arith::MaximumFOp::create(nb, nloc, acc, v).getResult();
          });
      Value exps = buildRowBroadcastMap(
          b, loc, logits, rowMax, b.getF32Type(),
          [](OpBuilder &nb, Location nloc, Value v, ValueRange row) {
            Value shifted = arith::SubFOp::create(nb, nloc, v, row[0]);
            return math::ExpOp::create(nb, nloc, shifted).getResult();
          });
      Value expSum =
          buildRowReduction(b, loc, exps, zero,
                            [](OpBuilder &nb, Location nloc, Value acc,
                               Value v) { return addF(nb, nloc, acc, v); });
      Value squares = buildReduceToScalar(
          b, loc, ValueRange{rowMax, expSum}, zero,
          [](OpBuilder &nb, Location nloc, Value acc, ValueRange v) {
            Value lse =
                addF(nb, nloc, v[0], math::LogOp::create(nb, nloc, v[1]));
            return addF(nb, nloc, acc, mulF(nb, nloc, lse, lse));
          });
      loss = divF(b, loc, squares, tokensF);
      break;
    }
    }

    double coefficient = op.getCoefficient().convertToDouble();
    if (coefficient != 1.0)
      loss = mulF(b, loc, createF32Constant(b, loc, coefficient), loss);
    Value result = tensor::FromElementsOp::create(
        b, loc, op.getResult().getType(), ValueRange{loss});
    rewriter.replaceOp(op, result);
    return success();
  }

private:
  /// Router probabilities of load_balance: softmax rows, or elementwise
  /// scores (sigmoid, sqrt_softplus) normalised to sum 1 per token.
  static Value buildProbabilities(OpBuilder &b, Location loc, Value logits,
                                  ScoreFunction score) {
    if (score == ScoreFunction::softmax)
      return buildRowSoftmax(b, loc, logits);
    Value sig = buildElementwiseScores(b, loc, logits, score);
    Value rowSum =
        buildRowReduction(b, loc, sig, createF32Constant(b, loc, 0.0),
                          [](OpBuilder &nb, Location nloc, Value acc, Value v) {
                            return addF(nb, nloc, acc, v);
                          });
    return buildRowBroadcastMap(
        b, loc, sig, rowSum, b.getF32Type(),
        [](OpBuilder &nb, Location nloc, Value v, ValueRange row) {
          return divF(nb, nloc, v, row[0]);
        });
  }
};
} // namespace

void mlir::moe::populateRoutingLoweringPatterns(RewritePatternSet &patterns) {
  patterns.add<LowerLinear, LowerRMSNorm, LowerSoftcap, LowerRoute, LowerTopK,
               LowerProductKeyTopK, LowerBatchNorm, LowerLayerNorm,
               LowerAuxLoss>(patterns.getContext());
}
