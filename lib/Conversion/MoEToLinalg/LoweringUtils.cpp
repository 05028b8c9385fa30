//===- LoweringUtils.cpp - building blocks shared by the moe lowerings ----===//

#include "LoweringUtils.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Utils/ReshapeOpsUtils.h"

#include <cmath>

using namespace mlir;
using namespace mlir::moe;

Value mlir::moe::addF(OpBuilder &b, Location loc, Value x, Value y) {
  return arith::AddFOp::create(b, loc, x, y);
}
Value mlir::moe::mulF(OpBuilder &b, Location loc, Value x, Value y) {
  return arith::MulFOp::create(b, loc, x, y);
}
Value mlir::moe::divF(OpBuilder &b, Location loc, Value x, Value y) {
  return arith::DivFOp::create(b, loc, x, y);
}

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

/// 0.5 z (1 + tanh(sqrt(2 / pi) (z + 0.044715 z^3))), PyTorch's
/// gelu(approximate="tanh") in its order of operations.
static Value buildGeluTanh(OpBuilder &b, Location loc, Value z) {
  Type t = z.getType();
  auto cst = [&](double v) {
    return arith::ConstantOp::create(b, loc, b.getFloatAttr(t, v)).getResult();
  };
  Value cube = arith::MulFOp::create(
      b, loc, arith::MulFOp::create(b, loc, z, z), z);
  Value inner = arith::AddFOp::create(
      b, loc, z, arith::MulFOp::create(b, loc, cst(0.044715), cube));
  Value scaled = arith::MulFOp::create(
      b, loc, cst(M_2_SQRTPI * M_SQRT1_2), inner);
  Value onePlus = arith::AddFOp::create(
      b, loc, cst(1.0), math::TanhOp::create(b, loc, scaled));
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
  case Activation::geglu_tanh:
  case Activation::gelu_tanh:
    return buildGeluTanh(b, loc, z);
  case Activation::relu:
  case Activation::relu2: {
    Value zero =
        arith::ConstantOp::create(b, loc, b.getFloatAttr(z.getType(), 0.0));
    // maxnumf(NaN, 0) would hide a NaN; relu must propagate it.
    Value r = arith::MaximumFOp::create(b, loc, z, zero);
    if (act == Activation::relu2)
      r = arith::MulFOp::create(b, loc, r, r);
    return r;
  }
  }
  llvm_unreachable("unknown activation");
}

/// A scalar f32 constant, or a splat of it shaped like the vector `like`.
static Value floatConstantLike(OpBuilder &b, Location loc, Type like,
                               double value) {
  if (auto vec = dyn_cast<VectorType>(like))
    return arith::ConstantOp::create(
        b, loc,
        DenseElementsAttr::get(vec,
                               b.getFloatAttr(vec.getElementType(), value)));
  return arith::ConstantOp::create(b, loc, b.getFloatAttr(like, value));
}

Value mlir::moe::buildGateActivation(OpBuilder &b, Location loc,
                                     const ExpertActivation &a, Value g) {
  // minimumf, like torch.clamp, propagates NaN.
  auto clamp = [&](Value v) -> Value {
    return arith::MinimumFOp::create(
        b, loc, v, floatConstantLike(b, loc, v.getType(), *a.limit));
  };
  if (a.limit && !a.clampAfterActivation)
    g = clamp(g);
  Value h;
  if (a.act == Activation::swiglu && a.alpha != 1.0) {
    Value scaled = arith::MulFOp::create(
        b, loc, g, floatConstantLike(b, loc, g.getType(), a.alpha));
    h = arith::MulFOp::create(b, loc, g, buildSigmoid(b, loc, scaled));
  } else {
    h = buildActivation(b, loc, a.act, g);
  }
  if (a.limit && a.clampAfterActivation)
    h = clamp(h);
  return h;
}

Value mlir::moe::buildUpValue(OpBuilder &b, Location loc,
                              const ExpertActivation &a, Value u) {
  Type type = u.getType();
  if (a.limit) {
    u = arith::MaximumFOp::create(b, loc, u,
                                  floatConstantLike(b, loc, type, -*a.limit));
    u = arith::MinimumFOp::create(b, loc, u,
                                  floatConstantLike(b, loc, type, *a.limit));
  }
  if (a.upOffset != 0.0)
    u = arith::AddFOp::create(b, loc, u,
                              floatConstantLike(b, loc, type, a.upOffset));
  return u;
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

//===----------------------------------------------------------------------===//
// Dispatch and expert lowerings (DispatchToLinalg.cpp, ExpertsToLinalg.cpp)
//===----------------------------------------------------------------------===//

std::pair<Value, Value> mlir::moe::buildIdInRange(OpBuilder &b, Location loc,
                                                  Value id, Value size) {
  Value idx = arith::IndexCastOp::create(b, loc, b.getIndexType(), id);
  Value zero = arith::ConstantIndexOp::create(b, loc, 0);
  Value nonNegative =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge, idx, zero);
  Value below =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, idx, size);
  Value valid = arith::AndIOp::create(b, loc, nonNegative, below);
  Value safe = arith::SelectOp::create(b, loc, valid, idx, zero);
  return {valid, safe};
}

Value mlir::moe::buildGuardedExtract(OpBuilder &b, Location loc, Value tensor,
                                     ValueRange indices, Value inBounds) {
  Type elemType = cast<RankedTensorType>(tensor.getType()).getElementType();
  auto ifOp = scf::IfOp::create(b, loc, TypeRange{elemType}, inBounds,
                                /*withElseRegion=*/true);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(ifOp.thenBlock());
  Value loaded = tensor::ExtractOp::create(b, loc, tensor, indices);
  scf::YieldOp::create(b, loc, loaded);
  b.setInsertionPointToStart(ifOp.elseBlock());
  Value zero =
      arith::ConstantOp::create(b, loc, b.getZeroAttr(elemType)).getResult();
  scf::YieldOp::create(b, loc, zero);
  return ifOp.getResult(0);
}

Value mlir::moe::castToType(OpBuilder &b, Location loc, Value value,
                            Type type) {
  if (value.getType() == type)
    return value;
  return tensor::CastOp::create(b, loc, type, value);
}

//===----------------------------------------------------------------------===//
// Rows, reductions and top-k (RoutingToLinalg.cpp; usable by any lowering)
//===----------------------------------------------------------------------===//

Value mlir::moe::createF32Constant(OpBuilder &b, Location loc, double value) {
  return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(value));
}

Value mlir::moe::collapseToRows(OpBuilder &b, Location loc, Value tensor) {
  auto type = cast<RankedTensorType>(tensor.getType());
  int64_t rank = type.getRank();
  if (rank == 2)
    return tensor;
  if (rank == 1) {
    auto rowType =
        RankedTensorType::get({1, type.getDimSize(0)}, type.getElementType());
    SmallVector<OpFoldResult> shape = {b.getIndexAttr(1),
                                       tensor::getMixedSize(b, loc, tensor, 0)};
    return tensor::ExpandShapeOp::create(b, loc, rowType, tensor,
                                         {ReassociationIndices{0, 1}}, shape);
  }
  ReassociationIndices leading =
      llvm::to_vector(llvm::seq<int64_t>(0, rank - 1));
  return tensor::CollapseShapeOp::create(
      b, loc, tensor, {leading, ReassociationIndices{rank - 1}});
}

Value mlir::moe::expandFromRows(OpBuilder &b, Location loc, Value rows,
                                Value like) {
  auto type = cast<RankedTensorType>(like.getType());
  int64_t rank = type.getRank();
  if (rank == 2)
    return castToType(b, loc, rows, type);
  if (rank == 1)
    return tensor::CollapseShapeOp::create(b, loc, type, rows,
                                           {ReassociationIndices{0, 1}});
  ReassociationIndices leading =
      llvm::to_vector(llvm::seq<int64_t>(0, rank - 1));
  return tensor::ExpandShapeOp::create(
      b, loc, type, rows, {leading, ReassociationIndices{rank - 1}},
      tensor::getMixedSizes(b, loc, like));
}

Value mlir::moe::buildRowReduction(
    OpBuilder &b, Location loc, Value x, Value init,
    function_ref<Value(OpBuilder &, Location, Value, Value)> combine) {
  auto type = cast<RankedTensorType>(x.getType());
  auto rowType = RankedTensorType::get({type.getDimSize(0)}, init.getType());
  SmallVector<Value> dyn;
  if (type.isDynamicDim(0))
    dyn.push_back(tensor::DimOp::create(b, loc, x, 0));
  Value acc = createFilledTensor(b, loc, rowType, dyn, init);
  MLIRContext *ctx = b.getContext();
  AffineExpr r = getAffineDimExpr(0, ctx), n = getAffineDimExpr(1, ctx);
  SmallVector<AffineMap> maps = {AffineMap::get(2, 0, {r, n}, ctx),
                                 AffineMap::get(2, 0, {r}, ctx)};
  auto generic = linalg::GenericOp::create(
      b, loc, TypeRange{rowType}, ValueRange{x}, ValueRange{acc}, maps,
      {utils::IteratorType::parallel, utils::IteratorType::reduction},
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        linalg::YieldOp::create(nb, nloc, combine(nb, nloc, args[1], args[0]));
      });
  return generic.getResult(0);
}

Value mlir::moe::buildRowBroadcastMap(
    OpBuilder &b, Location loc, Value x, ValueRange rowOperands,
    Type resultElementType,
    function_ref<Value(OpBuilder &, Location, Value, ValueRange)> fn) {
  auto type = cast<RankedTensorType>(x.getType());
  auto resultType = RankedTensorType::get(type.getShape(), resultElementType);
  Value empty =
      tensor::EmptyOp::create(b, loc, resultType.getShape(), resultElementType,
                              getDynamicSizes(b, loc, x));
  MLIRContext *ctx = b.getContext();
  AffineExpr r = getAffineDimExpr(0, ctx), n = getAffineDimExpr(1, ctx);
  AffineMap full = AffineMap::get(2, 0, {r, n}, ctx);
  AffineMap row = AffineMap::get(2, 0, {r}, ctx);
  SmallVector<AffineMap> maps = {full};
  SmallVector<Value> inputs = {x};
  for (Value v : rowOperands) {
    maps.push_back(row);
    inputs.push_back(v);
  }
  maps.push_back(full);
  auto generic = linalg::GenericOp::create(
      b, loc, TypeRange{resultType}, inputs, ValueRange{empty}, maps,
      {utils::IteratorType::parallel, utils::IteratorType::parallel},
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        ValueRange rowArgs = args.slice(1, rowOperands.size());
        linalg::YieldOp::create(nb, nloc, fn(nb, nloc, args[0], rowArgs));
      });
  return generic.getResult(0);
}

Value mlir::moe::buildRowSoftmax(OpBuilder &b, Location loc, Value x) {
  Type f32 = b.getF32Type();
  Value negInf = createF32Constant(b, loc, -INFINITY);
  // maximumf, not maxnumf: a NaN must reach the max and poison the row.
  Value rowMax = buildRowReduction(
      b, loc, x, negInf, [](OpBuilder &nb, Location nloc, Value acc, Value v) {
        return arith::MaximumFOp::create(nb, nloc, acc, v).getResult();
      });
  Value exps = buildRowBroadcastMap(
      b, loc, x, rowMax, f32,
      [](OpBuilder &nb, Location nloc, Value v, ValueRange row) {
        Value shifted = arith::SubFOp::create(nb, nloc, v, row[0]);
        return math::ExpOp::create(nb, nloc, shifted).getResult();
      });
  Value rowSum = buildRowReduction(
      b, loc, exps, createF32Constant(b, loc, 0.0),
      [](OpBuilder &nb, Location nloc, Value acc, Value v) {
        return arith::AddFOp::create(nb, nloc, acc, v).getResult();
      });
  return buildRowBroadcastMap(
      b, loc, exps, rowSum, f32,
      [](OpBuilder &nb, Location nloc, Value v, ValueRange row) {
        return arith::DivFOp::create(nb, nloc, v, row[0]).getResult();
      });
}

Value mlir::moe::buildRowGather(OpBuilder &b, Location loc, Value src,
                                Value ids) {
  Type elemType = cast<RankedTensorType>(src.getType()).getElementType();
  return buildRowBroadcastMap(
      b, loc, ids, ValueRange{}, elemType,
      [&](OpBuilder &nb, Location nloc, Value id, ValueRange) {
        Value r = linalg::IndexOp::create(nb, nloc, 0);
        Value col = arith::IndexCastOp::create(nb, nloc, nb.getIndexType(), id);
        return tensor::ExtractOp::create(nb, nloc, src, ValueRange{r, col})
            .getResult();
      });
}

Value mlir::moe::buildRanksAheadExcluding(OpBuilder &b, Location loc, Value a,
                                          Value ia, Value exA, Value b_,
                                          Value ib, Value exB) {
  Value trueV = arith::ConstantIntOp::create(b, loc, 1, 1);
  Value aKept = arith::XOrIOp::create(b, loc, exA, trueV);
  Value keptOverExcluded = arith::AndIOp::create(b, loc, aKept, exB);
  Value alike =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, exA, exB);
  Value ahead = arith::AndIOp::create(b, loc, alike,
                                      buildRanksAhead(b, loc, a, ia, b_, ib));
  return arith::OrIOp::create(b, loc, keptOverExcluded, ahead);
}

RowTopK mlir::moe::buildRowTopK(OpBuilder &b, Location loc, Value keys,
                                Value idsInit, Value valuesInit,
                                Value elementIds, Value excluded) {
  Type i32 = b.getI32Type();
  Value c0 = arith::ConstantIndexOp::create(b, loc, 0);
  Value c1 = arith::ConstantIndexOp::create(b, loc, 1);
  Value rows = getDimSize(b, loc, keys, 0);
  Value width = getDimSize(b, loc, keys, 1);
  Value k = getDimSize(b, loc, idsInit, 1);
  Value falseV = arith::ConstantIntOp::create(b, loc, 0, 1);
  Value trueV = arith::ConstantIntOp::create(b, loc, 1, 1);
  Value zeroF = createF32Constant(b, loc, 0.0);
  Value noId = arith::ConstantIntOp::create(b, loc, i32, -1);

  // The outputs threaded through the loops: ids, then values if wanted.
  SmallVector<Value> outs = {idsInit};
  if (valuesInit)
    outs.push_back(valuesInit);

  // Without exclusion every element is alike: compare by the plain rule.
  auto ranksAhead = [&](OpBuilder &cb, Location cl, Value a, Value ia,
                        Value exA, Value b_, Value ib, Value exB) {
    if (!excluded)
      return buildRanksAhead(cb, cl, a, ia, b_, ib);
    return buildRanksAheadExcluding(cb, cl, a, ia, exA, b_, ib, exB);
  };

  auto rowLoop = scf::ForOp::create(
      b, loc, c0, rows, c1, outs,
      [&](OpBuilder &rb, Location rl, Value r, ValueRange rowOuts) {
        // Element n of row r: (key, id, excluded).
        auto element = [&](OpBuilder &eb, Location el, Value n) {
          Value key = tensor::ExtractOp::create(eb, el, keys, ValueRange{r, n});
          Value id =
              elementIds
                  ? tensor::ExtractOp::create(eb, el, elementIds,
                                              ValueRange{r, n})
                        .getResult()
                  : arith::IndexCastOp::create(eb, el, i32, n).getResult();
          Value ex = excluded ? tensor::ExtractOp::create(eb, el, excluded,
                                                          ValueRange{r, n})
                                    .getResult()
                              : falseV;
          return std::array<Value, 3>{key, id, ex};
        };

        // Pass state: outputs, then the previous pick (key, id, excluded,
        // found).
        SmallVector<Value> passInits(rowOuts);
        passInits.append({zeroF, noId, falseV, falseV});
        auto passLoop = scf::ForOp::create(
            rb, rl, c0, k, c1, passInits,
            [&](OpBuilder &pb, Location pl, Value p, ValueRange state) {
              unsigned numOuts = rowOuts.size();
              Value prevKey = state[numOuts], prevId = state[numOuts + 1],
                    prevEx = state[numOuts + 2], prevFound = state[numOuts + 3];
              Value firstPass = arith::CmpIOp::create(
                  pb, pl, arith::CmpIPredicate::eq, p, c0);

              // Best element behind the previous pick: (key, id, ex, found).
              SmallVector<Value> scanInits = {zeroF, noId, falseV, falseV};
              auto scan = scf::ForOp::create(
                  pb, pl, c0, width, c1, scanInits,
                  [&](OpBuilder &sb, Location sl, Value n, ValueRange best) {
                    auto [key, id, ex] = element(sb, sl, n);
                    Value behindPrev = arith::AndIOp::create(
                        sb, sl, prevFound,
                        ranksAhead(sb, sl, prevKey, prevId, prevEx, key, id,
                                   ex));
                    Value eligible =
                        arith::OrIOp::create(sb, sl, firstPass, behindPrev);
                    Value none = arith::XOrIOp::create(sb, sl, best[3], trueV);
                    Value better = arith::OrIOp::create(
                        sb, sl, none,
                        ranksAhead(sb, sl, key, id, ex, best[0], best[1],
                                   best[2]));
                    Value take =
                        arith::AndIOp::create(sb, sl, eligible, better);
                    SmallVector<Value> next;
                    for (auto [cur, old] : llvm::zip(
                             std::array<Value, 4>{key, id, ex, trueV}, best))
                      next.push_back(
                          arith::SelectOp::create(sb, sl, take, cur, old));
                    scf::YieldOp::create(sb, sl, next);
                  });
              ValueRange best = scan.getResults();

              SmallVector<Value> yields;
              yields.push_back(tensor::InsertOp::create(
                  pb, pl, best[1], state[0], ValueRange{r, p}));
              if (valuesInit)
                yields.push_back(tensor::InsertOp::create(
                    pb, pl, best[0], state[1], ValueRange{r, p}));
              yields.append(best.begin(), best.end());
              scf::YieldOp::create(pb, pl, yields);
            });
        scf::YieldOp::create(rb, rl,
                             passLoop.getResults().take_front(rowOuts.size()));
      });

  RowTopK result;
  result.ids = rowLoop.getResult(0);
  if (valuesInit)
    result.values = rowLoop.getResult(1);
  return result;
}

SmallVector<Value> mlir::moe::buildIfUpdate(
    OpBuilder &b, Location loc, Value cond, ValueRange values,
    function_ref<SmallVector<Value>(OpBuilder &)> thenBuilder) {
  auto ifOp = scf::IfOp::create(b, loc, values.getTypes(), cond,
                                /*withElseRegion=*/true);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(ifOp.thenBlock());
  scf::YieldOp::create(b, loc, thenBuilder(b));
  b.setInsertionPointToStart(ifOp.elseBlock());
  scf::YieldOp::create(b, loc, values);
  return SmallVector<Value>(ifOp.getResults());
}

SmallVector<Value> mlir::moe::buildLoop(
    OpBuilder &b, Location loc, Value lb, Value ub, ValueRange inits,
    function_ref<SmallVector<Value>(OpBuilder &, Value, ValueRange)> body) {
  Value one = arith::ConstantIndexOp::create(b, loc, 1);
  auto forOp = scf::ForOp::create(
      b, loc, lb, ub, one, inits,
      [&](OpBuilder &nb, Location nloc, Value iv, ValueRange args) {
        scf::YieldOp::create(nb, nloc, body(nb, iv, args));
      });
  return SmallVector<Value>(forOp.getResults());
}
