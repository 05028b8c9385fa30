//===- DispatchToLinalg.cpp - reference lowering of dispatch ops ----------===//
//
// dispatch_plan is inherently sequential (capacity is claimed in priority
// order), so it lowers to scf.for loops over tensors carried as iter_args;
// gather, combine and the MH-MoE reshapes lower to linalg and tensor ops.
//
//===----------------------------------------------------------------------===//

#include "LoweringUtils.h"
#include "moe/Conversion/MoEToLinalg/MoEToLinalg.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/PatternMatch.h"

using namespace mlir;
using namespace mlir::moe;

using arith::CmpIPredicate;

static Value indexConst(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIndexOp::create(b, loc, v);
}

static Value i32Const(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIntOp::create(b, loc, b.getI32Type(), v);
}

static Value toIndex(OpBuilder &b, Location loc, Value v) {
  return arith::IndexCastOp::create(b, loc, b.getIndexType(), v);
}

static Value toI32(OpBuilder &b, Location loc, Value v) {
  return arith::IndexCastOp::create(b, loc, b.getI32Type(), v);
}

/// An empty tensor of `type` whose dynamic dims take their sizes from
/// `sizes` (one index value per dim, static dims ignored).
static Value emptyOfType(OpBuilder &b, Location loc, RankedTensorType type,
                         ArrayRef<Value> sizes) {
  SmallVector<Value> dynSizes;
  for (int64_t d = 0; d < type.getRank(); ++d)
    if (type.isDynamicDim(d))
      dynSizes.push_back(sizes[d]);
  return tensor::EmptyOp::create(b, loc, type.getShape(), type.getElementType(),
                                 dynSizes);
}

static Value filledOfType(OpBuilder &b, Location loc, RankedTensorType type,
                          ArrayRef<Value> sizes, Value value) {
  return linalg::FillOp::create(b, loc, value, emptyOfType(b, loc, type, sizes))
      .getResult(0);
}

//===----------------------------------------------------------------------===//
// moe.dispatch_plan
//===----------------------------------------------------------------------===//

/// cap = min(tokens, T·k) for a fixed capacity (Switch's expert_capacity),
/// as an i32 (tokens < 2^31 by the verifier).
static Value buildFixedCapacity(OpBuilder &b, Location loc, int64_t tokens,
                                Value numTokens, int64_t topK) {
  Type i64 = b.getI64Type();
  Value t = arith::IndexCastOp::create(b, loc, i64, numTokens);
  Value limit = arith::MulIOp::create(
      b, loc, t, arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(topK)));
  Value cap = arith::MinSIOp::create(
      b, loc, limit,
      arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(tokens)));
  return arith::TruncIOp::create(b, loc, b.getI32Type(), cap);
}

/// cap = ceil(factor · T · k / E), or with no `numExperts` ceil(factor · T)
/// (NLLB-MoE's token fraction), evaluated in f64 left to right and clamped
/// to T·k (no expert can take more) before it becomes an i32.
static Value buildCapacity(OpBuilder &b, Location loc, double factor,
                           Value numTokens, int64_t topK,
                           std::optional<int64_t> numExperts) {
  Type f64 = b.getF64Type();
  auto f64Const = [&](double v) {
    return arith::ConstantOp::create(b, loc, b.getFloatAttr(f64, v))
        .getResult();
  };
  Value tokens = arith::SIToFPOp::create(
      b, loc, f64,
      arith::IndexCastOp::create(b, loc, b.getI64Type(), numTokens));
  Value cap = arith::MulFOp::create(b, loc, f64Const(factor), tokens);
  if (numExperts) {
    cap = arith::MulFOp::create(b, loc, cap, f64Const(topK));
    cap = arith::DivFOp::create(b, loc, cap, f64Const(*numExperts));
  }
  cap = math::CeilOp::create(b, loc, cap);
  Value limit = arith::MulFOp::create(b, loc, tokens, f64Const(topK));
  cap = arith::MinimumFOp::create(b, loc, cap, limit);
  return arith::FPToSIOp::create(b, loc, b.getI32Type(), cap);
}

/// Tokens in the order they claim capacity under batch_prioritized: sorted
/// by the ranking rule on (w[t, 0], t), which is a total order (the token
/// index breaks ties), by a bottom-up merge sort: ceil(log2 T) passes of
/// O(T) each, so O(T log T) rather than ranking every pair.
static Value buildBatchPriorityOrder(OpBuilder &b, Location loc, Value weights,
                                     Value numTokens) {
  auto weightsType = cast<RankedTensorType>(weights.getType());
  int64_t staticTokens = weightsType.getDimSize(0);
  auto vecType = [&](Type elem) {
    return RankedTensorType::get({staticTokens}, elem);
  };
  Value zeroIdx = indexConst(b, loc, 0), oneIdx = indexConst(b, loc, 1);

  // First-choice weights as a [T] vector.
  SmallVector<OpFoldResult> offsets = {b.getIndexAttr(0), b.getIndexAttr(0)};
  SmallVector<OpFoldResult> sizes = {tensor::getMixedSize(b, loc, weights, 0),
                                     b.getIndexAttr(1)};
  SmallVector<OpFoldResult> strides = {b.getIndexAttr(1), b.getIndexAttr(1)};
  Value first = tensor::ExtractSliceOp::create(
      b, loc, vecType(b.getF32Type()), weights, offsets, sizes, strides);

  // order = [0, 1, ..., T - 1]; spare is the other buffer of each pass.
  Value order = emptyOfType(b, loc, vecType(b.getI32Type()), {numTokens});
  order = buildLoop(b, loc, zeroIdx, numTokens, order,
                    [&](OpBuilder &nb, Value t, ValueRange args) {
                      return SmallVector<Value>{tensor::InsertOp::create(
                          nb, loc, toI32(nb, loc, t), args[0], t)};
                    })
              .front();

  // Pass p merges runs of width 2^p from a copy of the order back into it
  // (one buffer updated in place, which bufferization keeps); index widths
  // are 64 bits, so 63 passes cover every T.
  auto passes = buildLoop(
      b, loc, zeroIdx, indexConst(b, loc, 63), ValueRange{order},
      [&](OpBuilder &pb, Value pass, ValueRange bufs) {
        Value width = arith::ShLIOp::create(pb, loc, oneIdx, pass);
        Value active = arith::CmpIOp::create(pb, loc, arith::CmpIPredicate::ult,
                                             width, numTokens);
        return buildIfUpdate(pb, loc, active, bufs, [&](OpBuilder &ib) {
          Value src =
              linalg::CopyOp::create(
                  ib, loc, bufs[0],
                  emptyOfType(ib, loc, vecType(ib.getI32Type()), {numTokens}))
                  .getResult(0);
          Value step = arith::ShLIOp::create(ib, loc, width, oneIdx);
          Value runs = arith::CeilDivUIOp::create(ib, loc, numTokens, step);
          Value merged =
              buildLoop(
                  ib, loc, zeroIdx, runs, ValueRange{bufs[0]},
                  [&](OpBuilder &rb, Value run, ValueRange dst) {
                    Value lo = arith::MulIOp::create(rb, loc, run, step);
                    Value mid = arith::MinUIOp::create(
                        rb, loc, arith::AddIOp::create(rb, loc, lo, width),
                        numTokens);
                    Value hi = arith::MinUIOp::create(
                        rb, loc, arith::AddIOp::create(rb, loc, lo, step),
                        numTokens);
                    // Take the right run's head only when it ranks ahead of
                    // the left run's head (or the left run is used up).
                    return SmallVector<Value>{
                        buildLoop(
                            rb, loc, lo, hi, ValueRange{lo, mid, dst[0]},
                            [&](OpBuilder &mb, Value out, ValueRange st) {
                              Value i = st[0], j = st[1];
                              Value leftLeft = arith::CmpIOp::create(
                                  mb, loc, arith::CmpIPredicate::ult, i, mid);
                              Value rightLeft = arith::CmpIOp::create(
                                  mb, loc, arith::CmpIPredicate::ult, j, hi);
                              Value iSafe = arith::SelectOp::create(
                                  mb, loc, leftLeft, i, lo);
                              Value jSafe = arith::SelectOp::create(
                                  mb, loc, rightLeft, j, lo);
                              Value ti =
                                  tensor::ExtractOp::create(mb, loc, src, iSafe);
                              Value tj =
                                  tensor::ExtractOp::create(mb, loc, src, jSafe);
                              Value tiIdx = toIndex(mb, loc, ti);
                              Value tjIdx = toIndex(mb, loc, tj);
                              Value wi = tensor::ExtractOp::create(
                                  mb, loc, first, tiIdx);
                              Value wj = tensor::ExtractOp::create(
                                  mb, loc, first, tjIdx);
                              Value rightAhead = buildRanksAhead(
                                  mb, loc, wj, tjIdx, wi, tiIdx);
                              Value leftDone = arith::XOrIOp::create(
                                  mb, loc, leftLeft,
                                  arith::ConstantIntOp::create(mb, loc, 1, 1));
                              Value takeRight = arith::AndIOp::create(
                                  mb, loc, rightLeft,
                                  arith::OrIOp::create(mb, loc, leftDone,
                                                       rightAhead));
                              Value taken = arith::SelectOp::create(
                                  mb, loc, takeRight, tj, ti);
                              Value next = tensor::InsertOp::create(
                                  mb, loc, taken, st[2], out);
                              Value iNext = arith::SelectOp::create(
                                  mb, loc, takeRight, i,
                                  arith::AddIOp::create(mb, loc, i, oneIdx));
                              Value jNext = arith::SelectOp::create(
                                  mb, loc, takeRight,
                                  arith::AddIOp::create(mb, loc, j, oneIdx), j);
                              return SmallVector<Value>{iNext, jNext, next};
                            })[2]};
                  })
                  .front();
          return SmallVector<Value>{merged};
        });
      });
  return passes.front();
}

namespace {
/// What the capacity phase carries from one assignment to the next.
struct CapacityState {
  Value counts;  // [E] i32: slots taken in each expert
  Value experts; // [T, k] i32: the expert (t, j) landed in, -1 if dropped
  Value weights; // [T, k] f32: its combine weight
  Value used;    // [T, C] i1: fallback columns a token has moved to already

  SmallVector<Value> values() const { return {counts, experts, weights, used}; }
  static CapacityState from(ValueRange v) { return {v[0], v[1], v[2], v[3]}; }
};

/// Loop invariants of the capacity phase.
struct CapacityContext {
  Location loc;
  Value ids, weights; // [T, C]
  Value cap;          // i32
  Value numExperts;   // index
};
} // namespace

/// Whether expert `e` (an i32 id, possibly out of range) has room.
static Value buildHasRoom(OpBuilder &b, const CapacityContext &ctx,
                          Value counts, Value e) {
  Location loc = ctx.loc;
  Value valid, idx;
  std::tie(valid, idx) = buildIdInRange(b, loc, e, ctx.numExperts);
  Value count = tensor::ExtractOp::create(b, loc, counts, idx);
  Value below =
      arith::CmpIOp::create(b, loc, CmpIPredicate::slt, count, ctx.cap);
  return arith::AndIOp::create(b, loc, valid, below);
}

/// Assignment (t, j) takes a slot of the expert in column `col` of token t
/// (j itself, or a fallback column, which is then marked used).
static CapacityState buildTakeSlot(OpBuilder &b, const CapacityContext &ctx,
                                   CapacityState st, Value t, Value j,
                                   Value col, bool isFallback) {
  Location loc = ctx.loc;
  Value e = tensor::ExtractOp::create(b, loc, ctx.ids, ValueRange{t, col});
  Value w = tensor::ExtractOp::create(b, loc, ctx.weights, ValueRange{t, col});
  Value eIdx = toIndex(b, loc, e);
  Value count = tensor::ExtractOp::create(b, loc, st.counts, eIdx);
  Value next = arith::AddIOp::create(b, loc, count, i32Const(b, loc, 1));
  st.counts = tensor::InsertOp::create(b, loc, next, st.counts, eIdx);
  st.experts =
      tensor::InsertOp::create(b, loc, e, st.experts, ValueRange{t, j});
  st.weights =
      tensor::InsertOp::create(b, loc, w, st.weights, ValueRange{t, j});
  if (isFallback)
    st.used = tensor::InsertOp::create(
        b, loc, arith::ConstantIntOp::create(b, loc, 1, 1), st.used,
        ValueRange{t, col});
  return st;
}

/// The first fallback column c in [k, C) of token t, in order, that the token
/// has not moved to yet and whose expert has room; -1 (i32) when none.
static Value buildFindFallback(OpBuilder &b, const CapacityContext &ctx,
                               const CapacityState &st, Value t, int64_t topK,
                               int64_t numChoices) {
  Location loc = ctx.loc;
  Value none = i32Const(b, loc, -1);
  return buildLoop(b, loc, indexConst(b, loc, topK),
                   indexConst(b, loc, numChoices), ValueRange{none},
                   [&](OpBuilder &nb, Value c, ValueRange found) {
                     Value e = tensor::ExtractOp::create(nb, loc, ctx.ids,
                                                         ValueRange{t, c});
                     Value room = buildHasRoom(nb, ctx, st.counts, e);
                     Value wasUsed = tensor::ExtractOp::create(
                         nb, loc, st.used, ValueRange{t, c});
                     Value fresh = arith::XOrIOp::create(
                         nb, loc, wasUsed,
                         arith::ConstantIntOp::create(nb, loc, 1, 1));
                     Value notFound =
                         arith::CmpIOp::create(nb, loc, CmpIPredicate::slt,
                                               found[0], i32Const(nb, loc, 0));
                     Value take = arith::AndIOp::create(
                         nb, loc, notFound,
                         arith::AndIOp::create(nb, loc, room, fresh));
                     return SmallVector<Value>{arith::SelectOp::create(
                         nb, loc, take, toI32(nb, loc, c), found[0])};
                   })
      .front();
}

/// The capacity phase: choice rank by choice rank, tokens in priority order
/// claim a slot of their expert while it has room; an overflowing assignment
/// is dropped or (next_choice) takes the token's first unused fallback
/// column whose expert still has room.
static CapacityState buildCapacityAssignment(OpBuilder &b, Location loc,
                                             DispatchPlanOp op,
                                             Value numTokens) {
  Value ids = op.getIds(), weights = op.getWeights();
  auto idsType = cast<RankedTensorType>(ids.getType());
  int64_t numExperts = op.getNumExperts(), topK = op.getTopK();
  int64_t numChoices = idsType.getDimSize(1);
  bool nextChoice = op.getOverflow() == OverflowPolicy::next_choice;

  Value expertsIdx = indexConst(b, loc, numExperts);
  Value capacity;
  if (std::optional<uint64_t> tokens = op.getCapacityTokens())
    capacity = buildFixedCapacity(b, loc, static_cast<int64_t>(*tokens),
                                  numTokens, topK);
  else if (std::optional<APFloat> fraction = op.getCapacityFraction())
    capacity = buildCapacity(b, loc, fraction->convertToDouble(), numTokens,
                             topK, std::nullopt);
  else
    capacity = buildCapacity(b, loc, op.getCapacityFactor()->convertToDouble(),
                             numTokens, topK, numExperts);
  CapacityContext ctx{loc, ids, weights, capacity, expertsIdx};
  Value order;
  if (op.getPriority() == DispatchPriority::batch_prioritized)
    order = buildBatchPriorityOrder(b, loc, weights, numTokens);

  Value kIdx = indexConst(b, loc, topK), cIdx = indexConst(b, loc, numChoices);
  auto tableType = [&](int64_t cols, Type elem) {
    return RankedTensorType::get({idsType.getDimSize(0), cols}, elem);
  };
  CapacityState init;
  init.counts =
      filledOfType(b, loc, RankedTensorType::get({numExperts}, b.getI32Type()),
                   {expertsIdx}, i32Const(b, loc, 0));
  init.experts = filledOfType(b, loc, tableType(topK, b.getI32Type()),
                              {numTokens, kIdx}, i32Const(b, loc, -1));
  init.weights =
      filledOfType(b, loc, tableType(topK, b.getF32Type()), {numTokens, kIdx},
                   arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0.0)));
  init.used = filledOfType(b, loc, tableType(numChoices, b.getI1Type()),
                           {numTokens, cIdx},
                           arith::ConstantIntOp::create(b, loc, 0, 1));

  // One assignment (t, j): its own expert if it has room, else a fallback.
  auto assign = [&](OpBuilder &ib, Value t, Value j,
                    const CapacityState &st) -> SmallVector<Value> {
    Value e = tensor::ExtractOp::create(ib, loc, ids, ValueRange{t, j});
    Value fits = buildHasRoom(ib, ctx, st.counts, e);
    auto ifOp = scf::IfOp::create(ib, loc, ValueRange(st.values()).getTypes(),
                                  fits, /*withElseRegion=*/true);
    OpBuilder::InsertionGuard guard(ib);
    ib.setInsertionPointToStart(ifOp.thenBlock());
    scf::YieldOp::create(
        ib, loc,
        buildTakeSlot(ib, ctx, st, t, j, j, /*isFallback=*/false).values());
    ib.setInsertionPointToStart(ifOp.elseBlock());
    if (!nextChoice) {
      scf::YieldOp::create(ib, loc, st.values());
    } else {
      Value col = buildFindFallback(ib, ctx, st, t, topK, numChoices);
      Value found = arith::CmpIOp::create(ib, loc, CmpIPredicate::sge, col,
                                          i32Const(ib, loc, 0));
      scf::YieldOp::create(
          ib, loc,
          buildIfUpdate(ib, loc, found, st.values(), [&](OpBuilder &mb) {
            return buildTakeSlot(mb, ctx, st, t, j, toIndex(mb, loc, col),
                                 /*isFallback=*/true)
                .values();
          }));
    }
    return SmallVector<Value>(ifOp.getResults());
  };

  Value zeroIdx = indexConst(b, loc, 0);
  SmallVector<Value> last = buildLoop(
      b, loc, zeroIdx, kIdx, init.values(),
      [&](OpBuilder &nb, Value j, ValueRange outer) {
        return buildLoop(nb, loc, zeroIdx, numTokens, outer,
                         [&](OpBuilder &ib, Value p, ValueRange st) {
                           Value t = order ? toIndex(ib, loc,
                                                     tensor::ExtractOp::create(
                                                         ib, loc, order, p))
                                           : p;
                           return assign(ib, t, j, CapacityState::from(st));
                         });
      });
  return CapacityState::from(last);
}

/// NLLB-MoE's renormalisation after drops: each row of the kept weights
/// `[T, k]` (0 where dropped) divided by max(its sum in column order, 2^-23).
static Value buildRenormalized(OpBuilder &b, Location loc, Value weights) {
  Value sums = buildRowReduction(
      b, loc, weights,
      arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0.0)),
      [](OpBuilder &nb, Location nloc, Value acc, Value v) {
        return addF(nb, nloc, acc, v);
      });
  // torch.finfo(float32).eps, the clamp of NLLB-MoE's denominator.
  Value eps = arith::ConstantOp::create(b, loc,
                                        b.getF32FloatAttr(0x1.0p-23f));
  return buildRowBroadcastMap(
      b, loc, weights, sums, b.getF32Type(),
      [&](OpBuilder &nb, Location nloc, Value w, ValueRange row) {
        Value denom = arith::MaximumFOp::create(nb, nloc, row[0], eps);
        return divF(nb, nloc, w, denom);
      });
}

namespace {
struct DispatchPlanLowering : OpRewritePattern<DispatchPlanOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(DispatchPlanOp op,
                                PatternRewriter &b) const override {
    Location loc = op.getLoc();
    int64_t numExperts = op.getNumExperts(), topK = op.getTopK();
    Value numTokens = getDimSize(b, loc, op.getIds(), 0);
    Value zeroIdx = indexConst(b, loc, 0), oneIdx = indexConst(b, loc, 1);
    Value kIdx = indexConst(b, loc, topK);
    Value expertsIdx = indexConst(b, loc, numExperts);
    Value zeroI32 = i32Const(b, loc, 0), oneI32 = i32Const(b, loc, 1);

    // Where each (t, j < k) lands: dropless, ids[t, j] itself (C == k).
    Value assignedExperts = op.getIds(), assignedWeights = op.getWeights();
    if (op.hasCapacity()) {
      CapacityState st = buildCapacityAssignment(b, loc, op, numTokens);
      assignedExperts = st.experts;
      assignedWeights = st.weights;
      if (op.getRenormalize())
        assignedWeights = buildRenormalized(b, loc, assignedWeights);
    }

    // Visits the kept assignments in token order, then choice rank: the
    // order slots are filled in within each expert.
    auto forEachAssignment =
        [&](ValueRange inits,
            function_ref<SmallVector<Value>(OpBuilder &, Value, Value, Value,
                                            Value, ValueRange)>
                body) {
          return buildLoop(b, loc, zeroIdx, numTokens, inits,
                           [&](OpBuilder &nb, Value t, ValueRange outer) {
                             return buildLoop(
                                 nb, loc, zeroIdx, kIdx, outer,
                                 [&](OpBuilder &ib, Value j, ValueRange st) {
                                   Value e = tensor::ExtractOp::create(
                                       ib, loc, assignedExperts,
                                       ValueRange{t, j});
                                   auto [valid, eIdx] =
                                       buildIdInRange(ib, loc, e, expertsIdx);
                                   return body(ib, t, j, valid, eIdx, st);
                                 });
                           });
        };

    // counts[e]: branch-free, an invalid id adds 0 to counts[0].
    auto countsType = cast<RankedTensorType>(op.getCounts().getType());
    Value counts = filledOfType(b, loc, countsType, {expertsIdx}, zeroI32);
    counts =
        forEachAssignment(counts, [&](OpBuilder &ib, Value, Value, Value valid,
                                      Value eIdx, ValueRange st) {
          Value old = tensor::ExtractOp::create(ib, loc, st[0], eIdx);
          Value inc = arith::ExtUIOp::create(ib, loc, ib.getI32Type(), valid);
          return SmallVector<Value>{tensor::InsertOp::create(
              ib, loc, arith::AddIOp::create(ib, loc, old, inc), st[0], eIdx)};
        }).front();

    // offsets = exclusive prefix sum of counts.
    auto offsetsType = cast<RankedTensorType>(op.getOffsets().getType());
    Value offsets = filledOfType(b, loc, offsetsType,
                                 {indexConst(b, loc, numExperts + 1)}, zeroI32);
    offsets =
        buildLoop(b, loc, zeroIdx, expertsIdx, ValueRange{offsets, zeroI32},
                  [&](OpBuilder &nb, Value e, ValueRange st) {
                    Value c = tensor::ExtractOp::create(nb, loc, counts, e);
                    Value sum = arith::AddIOp::create(nb, loc, st[1], c);
                    Value next = arith::AddIOp::create(nb, loc, e, oneIdx);
                    Value o =
                        tensor::InsertOp::create(nb, loc, sum, st[0], next);
                    return SmallVector<Value>{o, sum};
                  })
            .front();

    // Slots: each kept assignment goes to its expert's next free slot.
    auto tokensType = cast<RankedTensorType>(op.getTokenIds().getType());
    auto slotWType = cast<RankedTensorType>(op.getSlotWeights().getType());
    Value numSlots = arith::MulIOp::create(b, loc, numTokens, kIdx);
    Value tokenIds =
        filledOfType(b, loc, tokensType, {numSlots}, i32Const(b, loc, -1));
    Value slotWeights =
        filledOfType(b, loc, slotWType, {numSlots},
                     arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0.0)));
    // Next free slot of each expert, starting at its offset.
    Value cursor = tensor::ExtractSliceOp::create(
        b, loc, RankedTensorType::get({numExperts}, b.getI32Type()), offsets,
        ArrayRef<OpFoldResult>{b.getIndexAttr(0)},
        ArrayRef<OpFoldResult>{b.getIndexAttr(numExperts)},
        ArrayRef<OpFoldResult>{b.getIndexAttr(1)});
    SmallVector<Value> slots = forEachAssignment(
        ValueRange{tokenIds, slotWeights, cursor},
        [&](OpBuilder &ib, Value t, Value j, Value valid, Value eIdx,
            ValueRange st) {
          return buildIfUpdate(ib, loc, valid, st, [&](OpBuilder &sb) {
            Value slot = tensor::ExtractOp::create(sb, loc, st[2], eIdx);
            Value slotIdx = toIndex(sb, loc, slot);
            Value w = tensor::ExtractOp::create(sb, loc, assignedWeights,
                                                ValueRange{t, j});
            Value ti = tensor::InsertOp::create(sb, loc, toI32(sb, loc, t),
                                                st[0], slotIdx);
            Value sw = tensor::InsertOp::create(sb, loc, w, st[1], slotIdx);
            Value cur = tensor::InsertOp::create(
                sb, loc, arith::AddIOp::create(sb, loc, slot, oneI32), st[2],
                eIdx);
            return SmallVector<Value>{ti, sw, cur};
          });
        });

    // Every assignment either got a slot or was dropped.
    Value kept = tensor::ExtractOp::create(b, loc, offsets, expertsIdx);
    Value dropped =
        arith::SubIOp::create(b, loc, toI32(b, loc, numSlots), kept);
    Value droppedTensor = tensor::FromElementsOp::create(
        b, loc, op.getDropped().getType(), ValueRange{dropped});

    b.replaceOp(op, {counts, offsets, slots[0], slots[1], droppedTensor});
    return success();
  }
};
} // namespace

//===----------------------------------------------------------------------===//
// moe.gather / moe.combine
//===----------------------------------------------------------------------===//

namespace {
struct GatherLowering : OpRewritePattern<GatherOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(GatherOp op,
                                PatternRewriter &b) const override {
    Location loc = op.getLoc();
    MLIRContext *ctx = b.getContext();
    Value input = op.getInput();
    Value numRows = getDimSize(b, loc, input, 0);
    AffineExpr s, d;
    bindDims(ctx, s, d);
    auto slotMap = AffineMap::get(2, 0, {s}, ctx);
    auto identity = AffineMap::getMultiDimIdentityMap(2, ctx);
    // With a scale (Llama 4), row s is input[token_ids[s]] · scale[s].
    SmallVector<Value> ins = {op.getTokenIds()};
    SmallVector<AffineMap> maps = {slotMap};
    if (Value scale = op.getScale()) {
      ins.push_back(scale);
      maps.push_back(slotMap);
    }
    maps.push_back(identity);
    auto gathered = linalg::GenericOp::create(
        b, loc, TypeRange{op.getInit().getType()}, ins,
        ValueRange{op.getInit()}, maps,
        ArrayRef<utils::IteratorType>{utils::IteratorType::parallel,
                                      utils::IteratorType::parallel},
        [&](OpBuilder &nb, Location nloc, ValueRange args) {
          auto [valid, row] = buildIdInRange(nb, nloc, args[0], numRows);
          Value col = linalg::IndexOp::create(nb, nloc, 1);
          Value v =
              buildGuardedExtract(nb, nloc, input, ValueRange{row, col}, valid);
          if (args.size() > 2)
            v = arith::MulFOp::create(nb, nloc, v, args[1]);
          linalg::YieldOp::create(nb, nloc, v);
        });
    b.replaceOp(op, gathered.getResults());
    return success();
  }
};
} // namespace

namespace {
struct CombineLowering : OpRewritePattern<CombineOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(CombineOp op,
                                PatternRewriter &b) const override {
    Location loc = op.getLoc();
    MLIRContext *ctx = b.getContext();
    Value rows = op.getExpertRows(), tokenIds = op.getTokenIds();
    Value slotWeights = op.getSlotWeights(), init = op.getInit();
    Value numSlots = getDimSize(b, loc, tokenIds, 0);
    Value numTokens = getDimSize(b, loc, init, 0);
    OpFoldResult width = tensor::getMixedSize(b, loc, init, 1);
    int64_t staticWidth = cast<RankedTensorType>(init.getType()).getDimSize(1);
    auto rowType = RankedTensorType::get({staticWidth}, b.getF32Type());
    OpFoldResult one = b.getIndexAttr(1), zero = b.getIndexAttr(0);
    auto identity = AffineMap::getMultiDimIdentityMap(1, ctx);

    // Slot by slot, so each token's sum is formed in slot order.
    Value zeroIdx = indexConst(b, loc, 0);
    Value combined =
        buildLoop(
            b, loc, zeroIdx, numSlots, init,
            [&](OpBuilder &nb, Value slot, ValueRange st) {
              Value tid = tensor::ExtractOp::create(nb, loc, tokenIds, slot);
              Value valid, token;
              std::tie(valid, token) = buildIdInRange(nb, loc, tid, numTokens);
              return buildIfUpdate(nb, loc, valid, st, [&](OpBuilder &ub) {
                Value w = tensor::ExtractOp::create(ub, loc, slotWeights, slot);
                Value src = tensor::ExtractSliceOp::create(
                    ub, loc, rowType, rows, ArrayRef<OpFoldResult>{slot, zero},
                    ArrayRef<OpFoldResult>{one, width},
                    ArrayRef<OpFoldResult>{one, one});
                SmallVector<OpFoldResult> offsets = {token, zero};
                SmallVector<OpFoldResult> sizes = {one, width};
                SmallVector<OpFoldResult> strides = {one, one};
                Value dst = tensor::ExtractSliceOp::create(
                    ub, loc, rowType, st[0], offsets, sizes, strides);
                Value sum =
                    linalg::GenericOp::create(
                        ub, loc, TypeRange{rowType}, ValueRange{src},
                        ValueRange{dst},
                        ArrayRef<AffineMap>{identity, identity},
                        ArrayRef<utils::IteratorType>{
                            utils::IteratorType::parallel},
                        [&](OpBuilder &gb, Location gloc, ValueRange args) {
                          Value prod =
                              arith::MulFOp::create(gb, gloc, w, args[0]);
                          linalg::YieldOp::create(
                              gb, gloc,
                              ValueRange{arith::AddFOp::create(gb, gloc,
                                                               args[1], prod)});
                        })
                        .getResult(0);
                return SmallVector<Value>{tensor::InsertSliceOp::create(
                    ub, loc, sum, st[0], offsets, sizes, strides)};
              });
            })
            .front();
    b.replaceOp(op, combined);
    return success();
  }
};
} // namespace

//===----------------------------------------------------------------------===//
// moe.token_split / moe.token_merge
//===----------------------------------------------------------------------===//

namespace {
/// [T, D] -> [T, h, D/h] -> [T·h, D/h].
struct TokenSplitLowering : OpRewritePattern<TokenSplitOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(TokenSplitOp op,
                                PatternRewriter &b) const override {
    Location loc = op.getLoc();
    auto inType = cast<RankedTensorType>(op.getInput().getType());
    int64_t heads = op.getHeads();
    int64_t width = inType.getDimSize(1) / heads;
    auto expandedType = RankedTensorType::get(
        {inType.getDimSize(0), heads, width}, inType.getElementType());
    Value expanded = tensor::ExpandShapeOp::create(
        b, loc, expandedType, op.getInput(),
        ArrayRef<ReassociationIndices>{{0}, {1, 2}});
    Value collapsed = tensor::CollapseShapeOp::create(
        b, loc, expanded, ArrayRef<ReassociationIndices>{{0, 1}, {2}});
    b.replaceOp(op, castToType(b, loc, collapsed, op.getType()));
    return success();
  }
};
} // namespace

namespace {
/// [T·h, D/h] -> [T, h, D/h] -> [T, D].
struct TokenMergeLowering : OpRewritePattern<TokenMergeOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(TokenMergeOp op,
                                PatternRewriter &b) const override {
    Location loc = op.getLoc();
    auto inType = cast<RankedTensorType>(op.getInput().getType());
    int64_t heads = op.getHeads();
    int64_t rows = inType.getDimSize(0);
    int64_t tokens = ShapedType::isDynamic(rows) ? rows : rows / heads;
    auto expandedType = RankedTensorType::get(
        {tokens, heads, inType.getDimSize(1)}, inType.getElementType());
    Value expanded = tensor::ExpandShapeOp::create(
        b, loc, expandedType, op.getInput(),
        ArrayRef<ReassociationIndices>{{0, 1}, {2}});
    Value collapsed = tensor::CollapseShapeOp::create(
        b, loc, expanded, ArrayRef<ReassociationIndices>{{0}, {1, 2}});
    b.replaceOp(op, castToType(b, loc, collapsed, op.getType()));
    return success();
  }
};
} // namespace

void mlir::moe::populateDispatchLoweringPatterns(RewritePatternSet &patterns) {
  patterns.add<DispatchPlanLowering, GatherLowering, CombineLowering,
               TokenSplitLowering, TokenMergeLowering>(patterns.getContext());
}
