//===- CombineToGPU.cpp - token-parallel weighted combine -----------------===//
//
// The reference combine scatters slot after slot into the tokens' rows: a
// loop of one-row updates, each a launch on a GPU. Here a counting sort
// lists every token's slots in slot order (sequential, O(S + T) scalar
// work), then each (token, column) sums its slots in that order, all in
// parallel: the reference's order per token, so its bits, whatever the
// batch.
//
//===----------------------------------------------------------------------===//

#include "../MoEToLinalg/LoweringUtils.h"
#include "GPUPatterns.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;
using namespace mlir::moe;

namespace {

struct CombineToGPU : OpRewritePattern<CombineOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(CombineOp op,
                                PatternRewriter &b) const override {
    if (auto plan = op.getTokenIds().getDefiningOp<DispatchPlanOp>();
        plan && isParallelDispatchPlan(plan))
      return b.notifyMatchFailure(op, "its dispatch plan lists the slots");
    Location loc = op.getLoc();
    Value rows = op.getExpertRows(), tokenIds = op.getTokenIds();
    Value slotWeights = op.getSlotWeights(), init = op.getInit();
    Value numSlots = getDimSize(b, loc, tokenIds, 0);
    Value numTokens = getDimSize(b, loc, init, 0);
    Type indexType = b.getIndexType();
    Value zero = arith::ConstantIndexOp::create(b, loc, 0);
    Value one = arith::ConstantIndexOp::create(b, loc, 1);
    auto tokenOf = [&](OpBuilder &nb, Value slot) {
      Value id = tensor::ExtractOp::create(nb, loc, tokenIds, slot);
      return buildIdInRange(nb, loc, id, numTokens);
    };

    // starts[t] .. starts[t + 1]: the places of token t's slots in `order`.
    Value tokensPlusOne = arith::AddIOp::create(b, loc, numTokens, one);
    auto filled = [&](Value size) {
      Value empty = tensor::EmptyOp::create(
          b, loc, ArrayRef<OpFoldResult>{size}, indexType);
      return linalg::FillOp::create(b, loc, ValueRange{zero},
                                    ValueRange{empty})
          .getResult(0);
    };
    Value counts = buildLoop(
        b, loc, zero, numSlots, {filled(numTokens)},
        [&](OpBuilder &nb, Value slot, ValueRange args) {
          // Named (not a structured binding): the lambda below captures them.
          Value valid, token;
          std::tie(valid, token) = tokenOf(nb, slot);
          return buildIfUpdate(nb, loc, valid, args, [&](OpBuilder &ub) {
            Value c = tensor::ExtractOp::create(ub, loc, args[0], token);
            c = arith::AddIOp::create(ub, loc, c, one);
            return SmallVector<Value>{
                tensor::InsertOp::create(ub, loc, c, args[0], token)};
          });
        })[0];
    SmallVector<Value> scanned = buildLoop(
        b, loc, zero, numTokens, {filled(tokensPlusOne), zero},
        [&](OpBuilder &nb, Value t, ValueRange args) {
          Value starts = tensor::InsertOp::create(nb, loc, args[1], args[0], t);
          Value c = tensor::ExtractOp::create(nb, loc, counts, t);
          return SmallVector<Value>{starts,
                                    arith::AddIOp::create(nb, loc, args[1], c)};
        });
    Value starts = tensor::InsertOp::create(b, loc, scanned[1], scanned[0],
                                            numTokens);
    Value order = buildLoop(
        b, loc, zero, numSlots, {filled(numSlots), starts},
        [&](OpBuilder &nb, Value slot, ValueRange args) {
          // Named (not a structured binding): the lambda below captures them.
          Value valid, token;
          std::tie(valid, token) = tokenOf(nb, slot);
          return buildIfUpdate(nb, loc, valid, args, [&](OpBuilder &ub) {
            Value place = tensor::ExtractOp::create(ub, loc, args[1], token);
            Value order = tensor::InsertOp::create(ub, loc, slot, args[0],
                                                   place);
            Value next = arith::AddIOp::create(ub, loc, place, one);
            return SmallVector<Value>{
                order, tensor::InsertOp::create(ub, loc, next, args[1], token)};
          });
        })[0];

    Value result = buildSlotSums(
        b, loc, init, rows, slotWeights, order,
        [&](OpBuilder &nb, Location nloc, Value t) {
          Value next = arith::AddIOp::create(nb, nloc, t, one);
          return std::pair<Value, Value>{
              tensor::ExtractOp::create(nb, nloc, starts, t),
              tensor::ExtractOp::create(nb, nloc, starts, next)};
        });
    b.replaceOp(op, result);
    return success();
  }
};

} // namespace

Value mlir::moe::buildSlotSums(
    OpBuilder &b, Location loc, Value init, Value rows, Value slotWeights,
    Value order,
    function_ref<std::pair<Value, Value>(OpBuilder &, Location, Value)>
        rangeOf) {
  MLIRContext *ctx = b.getContext();
  auto identity = AffineMap::getMultiDimIdentityMap(2, ctx);
  // In place: each element reads its own init before writing it.
  return linalg::GenericOp::create(
             b, loc, TypeRange{init.getType()}, ValueRange{}, ValueRange{init},
             ArrayRef<AffineMap>{identity},
             ArrayRef<utils::IteratorType>{utils::IteratorType::parallel,
                                           utils::IteratorType::parallel},
             [&](OpBuilder &nb, Location nloc, ValueRange args) {
               Value t = linalg::IndexOp::create(nb, nloc, 0);
               Value d = linalg::IndexOp::create(nb, nloc, 1);
               auto [lo, hi] = rangeOf(nb, nloc, t);
               Value one = arith::ConstantIndexOp::create(nb, nloc, 1);
               Value zero = arith::ConstantIndexOp::create(nb, nloc, 0);
               auto loop = scf::ForOp::create(
                   nb, nloc, lo, hi, one, ValueRange{args[0]},
                   [&](OpBuilder &lb, Location lloc, Value j, ValueRange acc) {
                     Value entry = tensor::ExtractOp::create(lb, lloc, order, j);
                     Value listed = arith::CmpIOp::create(
                         lb, lloc, arith::CmpIPredicate::sge, entry, zero);
                     Value slot =
                         arith::SelectOp::create(lb, lloc, listed, entry, zero);
                     Value w =
                         tensor::ExtractOp::create(lb, lloc, slotWeights, slot);
                     Value r = tensor::ExtractOp::create(lb, lloc, rows,
                                                         ValueRange{slot, d});
                     Value prod = arith::MulFOp::create(lb, lloc, w, r);
                     Value sum = arith::AddFOp::create(lb, lloc, acc[0], prod);
                     scf::YieldOp::create(
                         lb, lloc,
                         ValueRange{arith::SelectOp::create(lb, lloc, listed,
                                                            sum, acc[0])});
                   });
               linalg::YieldOp::create(nb, nloc, loop.getResults());
             })
      .getResult(0);
}

void mlir::moe::populateCombineToGPUPatterns(RewritePatternSet &patterns) {
  patterns.add<CombineToGPU>(patterns.getContext());
}
