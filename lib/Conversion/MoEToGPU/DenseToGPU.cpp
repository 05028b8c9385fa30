//===- DenseToGPU.cpp - dense bf16 GEMMs on the tensor-core tiles ---------===//
//
// The dense GEMMs of a layer with bf16 weights — router logits, PEER
// queries, MH-MoE projections (moe.linear) and shared experts — run on the
// same warp tiles as the routed experts when tensor cores are on: a dense
// GEMM is a grouped one with a single expert that owns every row. Each
// row's sums are its own (batch invariance) and run in the tiles' fixed
// order.
//
//===----------------------------------------------------------------------===//

#include "../MoEToLinalg/LoweringUtils.h"
#include "GPUPatterns.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;
using namespace mlir::moe;

using utils::IteratorType;

namespace {

/// Narrower outputs keep the one-thread-per-output GEMM (a 32-column warp
/// tile would be mostly empty; Qwen-MoE's shared-expert gate has one).
constexpr int64_t kMinTensorCoreCols = 8;

bool isStaticBF16(Value weight) {
  auto type = dyn_cast_if_present<RankedTensorType>(weight.getType());
  return type && type.hasStaticShape() && type.getElementType().isBF16();
}

/// `[N, K]` as the `[1, N, K]` stack of a single expert.
Value asOneExpert(OpBuilder &b, Location loc, Value weight) {
  auto type = cast<RankedTensorType>(weight.getType());
  auto stacked = RankedTensorType::get(
      {1, type.getDimSize(0), type.getDimSize(1)}, type.getElementType());
  return tensor::ExpandShapeOp::create(
      b, loc, stacked, weight, ArrayRef<ReassociationIndices>{{0, 1}, {2}});
}

struct LinearToTensorCores : OpRewritePattern<LinearOp> {
  LinearToTensorCores(MLIRContext *ctx, const TensorCoreOptions &options)
      : OpRewritePattern(ctx), options(options) {}

  LogicalResult matchAndRewrite(LinearOp op,
                                PatternRewriter &b) const override {
    Value weight = op.getWeight();
    if (!isStaticBF16(weight) ||
        cast<RankedTensorType>(weight.getType()).getDimSize(0) <
            kMinTensorCoreCols)
      return b.notifyMatchFailure(op, "not a bf16 weight of 8+ outputs");
    Location loc = op.getLoc();
    MLIRContext *ctx = b.getContext();
    Value x = op.getInput(), init = op.getInit();
    // Every row belongs to expert 0.
    Value rows = getDimSize(b, loc, x, 0);
    Value zero = arith::ConstantIndexOp::create(b, loc, 0);
    Value experts =
        linalg::FillOp::create(
            b, loc, ValueRange{zero},
            ValueRange{tensor::EmptyOp::create(
                b, loc, ArrayRef<OpFoldResult>{rows}, b.getIndexType())})
            .getResult(0);
    TensorCoreProduct product =
        buildTensorCoreMatmul(b, loc, x, asOneExpert(b, loc, weight), experts,
                              /*numExperts=*/1, options);
    // init + the tiles' sums, read where they are.
    auto identity = AffineMap::getMultiDimIdentityMap(2, ctx);
    Value result =
        linalg::GenericOp::create(
            b, loc, TypeRange{init.getType()}, ValueRange{}, ValueRange{init},
            ArrayRef<AffineMap>{identity},
            ArrayRef<IteratorType>{IteratorType::parallel,
                                   IteratorType::parallel},
            [&](OpBuilder &nb, Location nloc, ValueRange a) {
              Value sum =
                  product.read(nb, nloc, linalg::IndexOp::create(nb, nloc, 0),
                               linalg::IndexOp::create(nb, nloc, 1));
              linalg::YieldOp::create(nb, nloc,
                                      ValueRange{addF(nb, nloc, a[0], sum)});
            })
            .getResult(0);
    b.replaceOp(op, result);
    return success();
  }

  TensorCoreOptions options;
};

/// A shared expert as a moe.expert_ffn of one expert over all rows (which
/// the tensor-core tiles then lower), scaled per token by its gate.
struct SharedExpertToExpertFFN : OpRewritePattern<SharedExpertOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(SharedExpertOp op,
                                PatternRewriter &b) const override {
    if (!isStaticBF16(op.getW1()) || !isStaticBF16(op.getW2()) ||
        (op.getW3() && !isStaticBF16(op.getW3())))
      return b.notifyMatchFailure(op, "not bf16 weights");
    Location loc = op.getLoc();
    MLIRContext *ctx = b.getContext();
    Value x = op.getInput(), init = op.getInit();
    auto rowsType = cast<RankedTensorType>(init.getType());
    Value rows = getDimSize(b, loc, x, 0);
    Value offsets = tensor::FromElementsOp::create(
        b, loc, RankedTensorType::get({2}, b.getI32Type()),
        ValueRange{arith::ConstantIntOp::create(b, loc, b.getI32Type(), 0),
                   arith::IndexCastOp::create(b, loc, b.getI32Type(), rows)});
    Value zeros = createZeroTensor(b, loc, rowsType, {rows});
    Value w3 = op.getW3() ? asOneExpert(b, loc, op.getW3()) : Value();
    auto ffn = ExpertFFNOp::create(
        b, loc, rowsType, x, offsets, asOneExpert(b, loc, op.getW1()),
        asOneExpert(b, loc, op.getW2()), w3, /*b1=*/Value(), /*b3=*/Value(),
        /*b2=*/Value(), /*scale=*/Value(), zeros, op.getActivation(),
        op.getSwigluLimitAttr(), op.getSwigluAlpha(), op.getSwigluUpOffset());
    ffn.setSwigluClampAfterActivation(op.getSwigluClampAfterActivation());

    auto identity = AffineMap::getMultiDimIdentityMap(2, ctx);
    SmallVector<Value> ins = {ffn.getResult()};
    SmallVector<AffineMap> maps = {identity};
    if (Value gate = op.getGate()) {
      // σ(gate · x_t), one per token (a [T, 1] moe.linear).
      auto logitType =
          RankedTensorType::get({ShapedType::kDynamic, 1}, b.getF32Type());
      Value logits =
          LinearOp::create(b, loc, logitType, x, gate,
                           createZeroTensor(b, loc, logitType, {rows}));
      ins.push_back(logits);
      AffineExpr t, d;
      bindDims(ctx, t, d);
      maps.push_back(
          AffineMap::get(2, 0, {t, getAffineConstantExpr(0, ctx)}, ctx));
    }
    maps.push_back(identity);
    bool gated = static_cast<bool>(op.getGate());
    Value result =
        linalg::GenericOp::create(
            b, loc, TypeRange{rowsType}, ins, ValueRange{init}, maps,
            ArrayRef<IteratorType>{IteratorType::parallel,
                                   IteratorType::parallel},
            [&](OpBuilder &nb, Location nloc, ValueRange a) {
              Value mlp = a[0];
              if (gated)
                mlp = mulF(nb, nloc, buildSigmoid(nb, nloc, a[1]), mlp);
              linalg::YieldOp::create(
                  nb, nloc, ValueRange{addF(nb, nloc, a.back(), mlp)});
            })
            .getResult(0);
    b.replaceOp(op, result);
    return success();
  }
};

} // namespace

void mlir::moe::populateDenseToGPUPatterns(RewritePatternSet &patterns,
                                           const TensorCoreOptions &options) {
  if (options.mode == TensorCoreMode::none)
    return;
  patterns.add<LinearToTensorCores>(patterns.getContext(), options);
  patterns.add<SharedExpertToExpertFFN>(patterns.getContext());
}
