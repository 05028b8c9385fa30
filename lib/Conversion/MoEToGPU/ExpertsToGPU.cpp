//===- ExpertsToGPU.cpp - row-parallel grouped expert FFNs ----------------===//
//
// The reference lowering loops over experts with segment sizes read from
// `offsets`: on a GPU that loop would run on the host with device data, so
// moe-map-to-gpu would put all of it in one thread. Here every dispatched
// row finds its expert itself (a binary search over the clamped offsets)
// and the contractions run over (row, column) in parallel, gathering the
// expert's weights on load. Each sum runs in the reference lowering's order
// (k ascending, then bias, activation, scale, accumulate), so the bits are
// the reference's, whatever the batch.
//
//===----------------------------------------------------------------------===//

#include "../MoEToLinalg/LoweringUtils.h"
#include "GPUPatterns.h"
#include "moe/Conversion/Passes.h"
#include "moe/Dialect/MoE/IR/MoEDialect.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/PatternMatch.h"
#include "llvm/Support/MathExtras.h"

#include <optional>

using namespace mlir;
using namespace mlir::moe;

using utils::IteratorType;

namespace {

/// Offsets clamped into [0, S] and made non-decreasing, as the reference
/// lowering reads them: `[E+1]` index values (a short sequential scan).
Value buildClampedOffsets(OpBuilder &b, Location loc, Value offsets,
                          Value numRows) {
  auto type = cast<RankedTensorType>(offsets.getType());
  int64_t count = type.getDimSize(0);
  auto resultType = RankedTensorType::get({count}, b.getIndexType());
  Value init = tensor::EmptyOp::create(b, loc, resultType.getShape(),
                                       b.getIndexType());
  Value zero = arith::ConstantIndexOp::create(b, loc, 0);
  Value one = arith::ConstantIndexOp::create(b, loc, 1);
  Value end = arith::ConstantIndexOp::create(b, loc, count);
  auto loop = scf::ForOp::create(
      b, loc, zero, end, one, ValueRange{init, zero},
      [&](OpBuilder &nb, Location nloc, Value e, ValueRange args) {
        Value raw = arith::IndexCastOp::create(
            nb, nloc, nb.getIndexType(),
            tensor::ExtractOp::create(nb, nloc, offsets, e));
        Value v = arith::MaxSIOp::create(nb, nloc, raw, args[1]);
        v = arith::MinSIOp::create(nb, nloc, v, numRows);
        Value updated = tensor::InsertOp::create(nb, nloc, v, args[0], e);
        scf::YieldOp::create(nb, nloc, ValueRange{updated, v});
      });
  return loop.getResult(0);
}

/// The expert of each of the `numRows` rows (index; E for rows from
/// offsets[E] on, which no expert touches): the largest e in [0, E] with
/// offsets[e] <= row, by a bisection of fixed length.
Value buildExpertOfRow(OpBuilder &b, Location loc, Value clamped,
                       Value numRows, int64_t numExperts) {
  MLIRContext *ctx = b.getContext();
  Value init = tensor::EmptyOp::create(
      b, loc, ArrayRef<OpFoldResult>{numRows}, b.getIndexType());
  auto identity = AffineMap::getMultiDimIdentityMap(1, ctx);
  int64_t steps = llvm::Log2_64_Ceil(numExperts + 1);
  return linalg::GenericOp::create(
             b, loc, TypeRange{init.getType()}, ValueRange{}, ValueRange{init},
             ArrayRef<AffineMap>{identity},
             ArrayRef<IteratorType>{IteratorType::parallel},
             [&](OpBuilder &nb, Location nloc, ValueRange) {
               Value row = linalg::IndexOp::create(nb, nloc, 0);
               Value lo = arith::ConstantIndexOp::create(nb, nloc, 0);
               Value hi = arith::ConstantIndexOp::create(nb, nloc, numExperts);
               Value one = arith::ConstantIndexOp::create(nb, nloc, 1);
               for (int64_t s = 0; s < steps; ++s) {
                 // mid = (lo + hi + 1) / 2: offsets[lo] <= row holds.
                 Value sum = arith::AddIOp::create(nb, nloc, lo, hi);
                 sum = arith::AddIOp::create(nb, nloc, sum, one);
                 Value mid = arith::ShRUIOp::create(nb, nloc, sum, one);
                 Value at = tensor::ExtractOp::create(nb, nloc, clamped, mid);
                 Value fits = arith::CmpIOp::create(
                     nb, nloc, arith::CmpIPredicate::sle, at, row);
                 Value below = arith::SubIOp::create(nb, nloc, mid, one);
                 Value newLo = arith::SelectOp::create(nb, nloc, fits, mid, lo);
                 hi = arith::SelectOp::create(nb, nloc, fits, hi, below);
                 lo = newLo;
               }
               linalg::YieldOp::create(nb, nloc, lo);
             })
      .getResult(0);
}

/// `Σ_k lhs[r, k] · w[e(r), n, k]` as `[S, N]` f32 (k ascending), with
/// `w` a stacked `[E, N, K]` weight gathered per row; rows of no expert
/// read expert 0 (their result is never used).
Value buildGatheredMatmul(OpBuilder &b, Location loc, Value lhs, Value w,
                          Value expertOfRow, int64_t numExperts) {
  MLIRContext *ctx = b.getContext();
  auto wType = cast<RankedTensorType>(w.getType());
  Value acc = createZeroTensor(
      b, loc,
      RankedTensorType::get({ShapedType::kDynamic, wType.getDimSize(1)},
                            b.getF32Type()),
      {getDimSize(b, loc, lhs, 0)});
  AffineExpr r, n, k;
  bindDims(ctx, r, n, k);
  SmallVector<AffineMap> maps = {AffineMap::get(3, 0, {r, k}, ctx),
                                 AffineMap::get(3, 0, {r}, ctx),
                                 AffineMap::get(3, 0, {r, n}, ctx)};
  return linalg::GenericOp::create(
             b, loc, TypeRange{acc.getType()}, ValueRange{lhs, expertOfRow},
             ValueRange{acc}, maps,
             ArrayRef<IteratorType>{IteratorType::parallel,
                                    IteratorType::parallel,
                                    IteratorType::reduction},
             [&](OpBuilder &nb, Location nloc, ValueRange args) {
               Value last =
                   arith::ConstantIndexOp::create(nb, nloc, numExperts - 1);
               Value e = arith::MinUIOp::create(nb, nloc, args[1], last);
               Value col = linalg::IndexOp::create(nb, nloc, 1);
               Value depth = linalg::IndexOp::create(nb, nloc, 2);
               Value weight = tensor::ExtractOp::create(
                   nb, nloc, w, ValueRange{e, col, depth});
               Value prod = arith::MulFOp::create(
                   nb, nloc, args[0], extendToF32(nb, nloc, weight));
               linalg::YieldOp::create(
                   nb, nloc, ValueRange{arith::AddFOp::create(nb, nloc, args[2],
                                                              prod)});
             })
      .getResult(0);
}

/// An `[S, N]` f32 operand of an elementwise map: a tensor, or the
/// registers of tensor-core tiles read element by element in the map's own
/// loop (so the tiles' results never take a pass of their own).
struct Matrix {
  Value tensor;
  std::optional<TensorCoreProduct> product;
};

/// An elementwise map over `[S, N]` matrices with the row's expert (index)
/// passed to `fn` first.
Value buildRowwise(
    OpBuilder &b, Location loc, ArrayRef<Matrix> inputs, Value expertOfRow,
    Type elementType,
    function_ref<Value(OpBuilder &, Location, Value, ValueRange)> fn) {
  MLIRContext *ctx = b.getContext();
  const Matrix &first = inputs.front();
  SmallVector<OpFoldResult> shape =
      first.tensor ? tensor::getMixedSizes(b, loc, first.tensor)
                   : SmallVector<OpFoldResult>{
                         first.product->numRows,
                         b.getIndexAttr(first.product->numCols)};
  Value out = tensor::EmptyOp::create(b, loc, shape, elementType);
  auto identity = AffineMap::getMultiDimIdentityMap(2, ctx);
  SmallVector<Value> ins;
  SmallVector<AffineMap> maps;
  for (const Matrix &m : inputs)
    if (m.tensor) {
      ins.push_back(m.tensor);
      maps.push_back(identity);
    }
  size_t numTensors = ins.size();
  ins.push_back(expertOfRow);
  maps.push_back(AffineMap::get(2, 0, {getAffineDimExpr(0, ctx)}, ctx));
  maps.push_back(identity);
  return linalg::GenericOp::create(
             b, loc, TypeRange{out.getType()}, ins, ValueRange{out}, maps,
             ArrayRef<IteratorType>{IteratorType::parallel,
                                    IteratorType::parallel},
             [&](OpBuilder &nb, Location nloc, ValueRange args) {
               Value e = args[numTensors];
               SmallVector<Value> values;
               size_t next = 0;
               for (const Matrix &m : inputs) {
                 if (m.tensor) {
                   values.push_back(args[next++]);
                   continue;
                 }
                 values.push_back(m.product->read(
                     nb, nloc, linalg::IndexOp::create(nb, nloc, 0),
                     linalg::IndexOp::create(nb, nloc, 1)));
               }
               linalg::YieldOp::create(nb, nloc, fn(nb, nloc, e, values));
             })
      .getResult(0);
}

struct ExpertFFNToGPU : OpRewritePattern<ExpertFFNOp> {
  ExpertFFNToGPU(MLIRContext *ctx, const TensorCoreOptions &tensorCores)
      : OpRewritePattern(ctx), tensorCores(tensorCores) {}

  /// The gathered matmul of `lhs` and the stack `w`: on tensor cores for
  /// bf16 weights when asked, else one thread per output.
  Matrix buildMatmul(OpBuilder &b, Location loc, Value lhs, Value w,
                     Value expertOfRow, int64_t numExperts) const {
    auto wType = cast<RankedTensorType>(w.getType());
    if (tensorCores.mode != TensorCoreMode::none &&
        wType.getElementType().isBF16() && wType.hasStaticShape())
      return {Value(), buildTensorCoreMatmul(b, loc, lhs, w, expertOfRow,
                                             numExperts, tensorCores)};
    return {buildGatheredMatmul(b, loc, lhs, w, expertOfRow, numExperts),
            std::nullopt};
  }

  LogicalResult matchAndRewrite(ExpertFFNOp op,
                                PatternRewriter &b) const override {
    Location loc = op.getLoc();
    auto w1Type = cast<RankedTensorType>(op.getW1().getType());
    int64_t numExperts = w1Type.getDimSize(0);
    if (ShapedType::isDynamic(numExperts) || numExperts < 1 ||
        !cast<RankedTensorType>(op.getOffsets().getType()).hasStaticShape())
      return b.notifyMatchFailure(op, "needs a static number of experts");
    Value rows = op.getRows(), init = op.getInit();
    Value numRows = getDimSize(b, loc, rows, 0);
    Value clamped = buildClampedOffsets(b, loc, op.getOffsets(), numRows);
    Value expertOfRow =
        buildExpertOfRow(b, loc, clamped, numRows, numExperts);
    ExpertActivation act = ExpertActivation::of(op);
    Type f32 = b.getF32Type();
    auto lastExpert = [&](OpBuilder &nb, Location nloc, Value e) {
      Value last = arith::ConstantIndexOp::create(nb, nloc, numExperts - 1);
      return arith::MinUIOp::create(nb, nloc, e, last).getResult();
    };
    // bias[e, col] + v, as the reference adds a column bias.
    auto addBias = [&](Value bias, Matrix m) -> Matrix {
      if (!bias)
        return m;
      return {buildRowwise(
                  b, loc, {m}, expertOfRow, f32,
                  [&](OpBuilder &nb, Location nloc, Value e, ValueRange a) {
                    Value col = linalg::IndexOp::create(nb, nloc, 1);
                    Value v = tensor::ExtractOp::create(
                        nb, nloc, bias,
                        ValueRange{lastExpert(nb, nloc, e), col});
                    return addF(nb, nloc, a[0], v);
                  }),
              std::nullopt};
    };

    Matrix gate = addBias(
        op.getB1(),
        buildMatmul(b, loc, rows, op.getW1(), expertOfRow, numExperts));
    Value hidden;
    if (Value w3 = op.getW3()) {
      Matrix up = addBias(
          op.getB3(), buildMatmul(b, loc, rows, w3, expertOfRow, numExperts));
      hidden = buildRowwise(
          b, loc, {gate, up}, expertOfRow, f32,
          [&](OpBuilder &nb, Location nloc, Value, ValueRange a) {
            return arith::MulFOp::create(
                       nb, nloc, buildGateActivation(nb, nloc, act, a[0]),
                       buildUpValue(nb, nloc, act, a[1]))
                .getResult();
          });
    } else {
      hidden = buildRowwise(
          b, loc, {gate}, expertOfRow, f32,
          [&](OpBuilder &nb, Location nloc, Value, ValueRange a) {
            return buildGateActivation(nb, nloc, act, a[0]);
          });
    }
    Matrix y = addBias(
        op.getB2(),
        buildMatmul(b, loc, hidden, op.getW2(), expertOfRow, numExperts));
    Value scales = op.getScale();
    Value result = buildRowwise(
        b, loc, {y, Matrix{init, std::nullopt}}, expertOfRow,
        cast<RankedTensorType>(init.getType()).getElementType(),
        [&](OpBuilder &nb, Location nloc, Value e, ValueRange a) {
          Value mlp = a[0];
          if (scales)
            mlp = mulF(nb, nloc,
                       tensor::ExtractOp::create(nb, nloc, scales,
                                                 lastExpert(nb, nloc, e)),
                       mlp);
          Value sum = addF(nb, nloc, a[1], mlp);
          Value none = arith::ConstantIndexOp::create(nb, nloc, numExperts);
          Value touched = arith::CmpIOp::create(
              nb, nloc, arith::CmpIPredicate::ult, e, none);
          return arith::SelectOp::create(nb, nloc, touched, sum, a[1])
              .getResult();
        });
    b.replaceOp(op, result);
    return success();
  }

  TensorCoreOptions tensorCores;
};

} // namespace

void mlir::moe::populateExpertsToGPUPatterns(
    RewritePatternSet &patterns, const TensorCoreOptions &options) {
  patterns.add<ExpertFFNToGPU>(patterns.getContext(), options);
}
