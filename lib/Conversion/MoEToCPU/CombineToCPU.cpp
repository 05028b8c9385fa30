//===- CombineToCPU.cpp - fast CPU lowering of moe.combine ---------------===//
//
// The weighted scatter-add becomes a gather per token: a counting sort lists
// each token's slots in slot order (O(S + T)), then token blocks run in
// parallel and each token sums its slots in that order, vectorised along
// the model dim. The order per token is the reference's (slot order), so
// the result does not depend on the thread count or the batch.
//
//===----------------------------------------------------------------------===//

#include "../MoEToLinalg/LoweringUtils.h"
#include "FastPatterns.h"
#include "RowDotKernels.h"

#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/PatternMatch.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::cpu;

/// `body(s, token)` for every slot s (in order) whose token id is in
/// [0, numTokens).
static void forEachValidSlot(
    OpBuilder &b, Location loc, Value ids, Value numSlots, Value numTokens,
    function_ref<void(OpBuilder &, Location, Value, Value)> body) {
  scf::ForOp::create(
      b, loc, indexConstant(b, loc, 0), numSlots, indexConstant(b, loc, 1),
      ValueRange{}, [&](OpBuilder &lb, Location lloc, Value s, ValueRange) {
        Value id = memref::LoadOp::create(lb, lloc, ids, ValueRange{s});
        Value valid, token;
        std::tie(valid, token) = buildIdInRange(lb, lloc, id, numTokens);
        scf::IfOp::create(lb, lloc, valid, [&](OpBuilder &ib, Location iloc) {
          body(ib, iloc, s, token);
          scf::YieldOp::create(ib, iloc);
        });
        scf::YieldOp::create(lb, lloc);
      });
}

namespace {
struct CombineToCPU : FastCPUPattern<CombineOp> {
  using FastCPUPattern::FastCPUPattern;

  LogicalResult matchAndRewrite(CombineOp op,
                                PatternRewriter &b) const override {
    Location loc = op.getLoc();
    int64_t width = cast<ShapedType>(op.getInit().getType()).getDimSize(1);
    if (ShapedType::isDynamic(width))
      return b.notifyMatchFailure(op, "expects a static model width");
    Value ids = readBuffer(b, loc, op.getTokenIds());
    Value slotWeights = readBuffer(b, loc, op.getSlotWeights());
    Value rows = readBuffer(b, loc, op.getExpertRows());
    Value init = readBuffer(b, loc, op.getInit());
    Value numSlots = getDimSize(b, loc, op.getTokenIds(), 0);
    Value numTokens = getDimSize(b, loc, op.getInit(), 0);
    Value zero = indexConstant(b, loc, 0), one = indexConstant(b, loc, 1);

    // starts[t] .. starts[t+1]: token t's slots in `slots`, in slot order.
    auto indexBuffer = MemRefType::get({ShapedType::kDynamic}, b.getIndexType());
    Value numTokens1 = arith::AddIOp::create(b, loc, numTokens, one);
    Value starts = memref::AllocOp::create(b, loc, indexBuffer, numTokens1);
    Value cursor = memref::AllocOp::create(b, loc, indexBuffer, numTokens);
    Value slots = memref::AllocOp::create(b, loc, indexBuffer, numSlots);
    scf::ForOp::create(b, loc, zero, numTokens1, one, ValueRange{},
                       [&](OpBuilder &lb, Location lloc, Value t, ValueRange) {
                         memref::StoreOp::create(lb, lloc, zero, starts, t);
                         scf::YieldOp::create(lb, lloc);
                       });
    forEachValidSlot(b, loc, ids, numSlots, numTokens,
                     [&](OpBuilder &ib, Location iloc, Value, Value t) {
                       Value next = arith::AddIOp::create(ib, iloc, t, one);
                       Value c = memref::LoadOp::create(ib, iloc, starts, next);
                       memref::StoreOp::create(
                           ib, iloc, arith::AddIOp::create(ib, iloc, c, one),
                           starts, next);
                     });
    scf::ForOp::create(
        b, loc, zero, numTokens, one, ValueRange{},
        [&](OpBuilder &lb, Location lloc, Value t, ValueRange) {
          Value next = arith::AddIOp::create(lb, lloc, t, one);
          Value here = memref::LoadOp::create(lb, lloc, starts, t);
          Value count = memref::LoadOp::create(lb, lloc, starts, next);
          memref::StoreOp::create(lb, lloc, here, cursor, t);
          memref::StoreOp::create(
              lb, lloc, arith::AddIOp::create(lb, lloc, here, count), starts,
              next);
          scf::YieldOp::create(lb, lloc);
        });
    forEachValidSlot(b, loc, ids, numSlots, numTokens,
                     [&](OpBuilder &ib, Location iloc, Value s, Value t) {
                       Value p = memref::LoadOp::create(ib, iloc, cursor, t);
                       memref::StoreOp::create(ib, iloc, s, slots, p);
                       memref::StoreOp::create(
                           ib, iloc, arith::AddIOp::create(ib, iloc, p, one),
                           cursor, t);
                     });

    // out[t] = init[t] + Σ_{s of t, in order} w[s] · rows[s].
    Value out = allocBufferLike(b, loc, op.getInit());
    int64_t vw = config.vectorWidth, tb = config.tokenBlock;
    auto vecType = VectorType::get({vw}, b.getF32Type());
    Value numBlocks = arith::CeilDivUIOp::create(b, loc, numTokens,
                                                 indexConstant(b, loc, tb));
    buildParallelLoop(
        b, loc, ValueRange{numBlocks},
        [&](OpBuilder &pb, Location ploc, ValueRange ivs) {
          Value t0 = arith::MulIOp::create(pb, ploc, ivs[0],
                                           indexConstant(pb, ploc, tb));
          Value t1 = arith::MinUIOp::create(
              pb, ploc,
              arith::AddIOp::create(pb, ploc, t0, indexConstant(pb, ploc, tb)),
              numTokens);
          scf::ForOp::create(
              pb, ploc, t0, t1, indexConstant(pb, ploc, 1), ValueRange{},
              [&](OpBuilder &tb_, Location tloc, Value t, ValueRange) {
                Value first = memref::LoadOp::create(tb_, tloc, starts, t);
                Value next = arith::AddIOp::create(
                    tb_, tloc, t, indexConstant(tb_, tloc, 1));
                Value last = memref::LoadOp::create(tb_, tloc, starts,
                                                    ValueRange{next});
                auto chunk = [&](OpBuilder &cb, Location cloc, Value d,
                                 Value mask) {
                  RowRef initRow{init, {t}};
                  Value acc = loadRowVector(cb, cloc, initRow, d, vw, mask);
                  auto sum = scf::ForOp::create(
                      cb, cloc, first, last, indexConstant(cb, cloc, 1),
                      ValueRange{acc},
                      [&](OpBuilder &sb, Location sloc, Value j,
                          ValueRange iter) {
                        Value s =
                            memref::LoadOp::create(sb, sloc, slots, ValueRange{j});
                        Value w = memref::LoadOp::create(sb, sloc, slotWeights,
                                                         ValueRange{s});
                        Value wv =
                            vector::BroadcastOp::create(sb, sloc, vecType, w);
                        Value y = loadRowVector(sb, sloc, RowRef{rows, {s}}, d,
                                                vw, mask);
                        Value next =
                            addF(sb, sloc, iter[0], mulF(sb, sloc, wv, y));
                        scf::YieldOp::create(sb, sloc, next);
                      });
                  if (mask)
                    vector::MaskedStoreOp::create(cb, cloc, out,
                                                  ValueRange{t, d}, mask,
                                                  sum.getResult(0));
                  else
                    vector::StoreOp::create(cb, cloc, sum.getResult(0), out,
                                            ValueRange{t, d});
                };
                int64_t mainWidth = width / vw * vw;
                if (mainWidth > 0)
                  scf::ForOp::create(
                      tb_, tloc, indexConstant(tb_, tloc, 0),
                      indexConstant(tb_, tloc, mainWidth),
                      indexConstant(tb_, tloc, vw), ValueRange{},
                      [&](OpBuilder &db, Location dloc, Value d, ValueRange) {
                        chunk(db, dloc, d, Value());
                        scf::YieldOp::create(db, dloc);
                      });
                if (int64_t tail = width - mainWidth) {
                  Value mask = buildPrefixMask(tb_, tloc, vw, tail);
                  chunk(tb_, tloc, indexConstant(tb_, tloc, mainWidth), mask);
                }
                scf::YieldOp::create(tb_, tloc);
              });
        });
    b.replaceOp(op, bufferToTensor(b, loc, out, op.getType()));
    return success();
  }
};
} // namespace

void mlir::moe::populateFastCombinePatterns(RewritePatternSet &patterns,
                                            const CPUKernelConfig &config) {
  patterns.add<CombineToCPU>(patterns.getContext(), config);
}
