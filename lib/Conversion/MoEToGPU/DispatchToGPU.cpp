//===- DispatchToGPU.cpp - a dropless dispatch plan in parallel -----------===//
//
// The reference dispatch plan visits the T·k assignments one after another
// (count, then place): on a GPU, a one-thread launch of O(T·k) dependent
// memory operations. Here the assignments are cut into chunks of
// kChunkSize, in their order (token, then choice rank), and everything but
// the scan over experts is parallel:
//
//   chunk_counts[c, e]  assignments of chunk c to expert e     (c, e) parallel
//   counts[e]           Σ_c chunk_counts[c, e]                 e parallel
//   offsets             exclusive scan of counts               one thread, E
//   steps chunk_starts[c, e]  offsets[e] + Σ_{c' < c} chunk_counts   (c, e)
//   parallel slot s              its expert e (bisection of offsets), its chunk
//   c
//                       (bisection of chunk_starts[·, e]), then the
//                       (s - chunk_starts[c, e])-th assignment of chunk c
//                       to e                                   s parallel
//
// Slots are gathered, not scattered: each slot finds the assignment that
// lands in it. The plan's moe.combine users are rewritten with it: each
// assignment's slot is its chunk's start plus the earlier assignments of
// the chunk to its expert, each token ranks its up to k slots, and the
// combine sums every (token, column) over them ascending — the reference's
// order, with no sort over all slots. Within an expert the slots keep the
// assignments' order, as the reference fills them, so every result is the
// reference's (integers and copied weights: the same bits), whatever the batch
// or the chunk size. Plans with capacity keep the reference lowering (their
// fill order across choices is sequential by definition).
//
//===----------------------------------------------------------------------===//

#include "../MoEToLinalg/LoweringUtils.h"
#include "GPUPatterns.h"
#include "ScalarEmitter.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "llvm/Support/MathExtras.h"

using namespace mlir;
using namespace mlir::moe;

using utils::IteratorType;

namespace {

/// Assignments per chunk: the serial work of a chunk's threads, and the
/// number of chunks a slot bisects (S / kChunkSize).
constexpr int64_t kChunkSize = 256;
/// Bisection steps over chunks: enough for 2^31 assignments.
constexpr int64_t kChunkBisectionSteps = 24;

using ExpertOfFn =
    function_ref<std::pair<Value, Value>(ScalarEmitter &, Value)>;
using IsOfFn = function_ref<Value(ScalarEmitter &, Value, Value)>;

/// `[T·k]` index: token t's slots ascending at t·k ..< t·k + k, then -1 for
/// choices that went to no expert. The slot of assignment a (chunk c, expert
/// e) is chunk_starts[c, e] plus the earlier assignments of its chunk to e;
/// a token's up to k slots are ranked among themselves (O(k²), k small).
Value buildSlotsByToken(OpBuilder &b, Location loc, Value chunkStarts,
                        Value numAssignments, ExpertOfFn expertOf, IsOfFn isOf,
                        int64_t topK) {
  auto parallel1d = [&](function_ref<Value(ScalarEmitter &, Value)> body) {
    return buildGenerated(
        b, loc, ArrayRef<OpFoldResult>{numAssignments}, b.getIndexType(),
        [&](ScalarEmitter &in, ValueRange ivs) { return body(in, ivs[0]); });
  };
  Value slotOf = parallel1d([&](ScalarEmitter &in, Value a) {
    Value valid, e; // named: the loop body below captures e
    std::tie(valid, e) = expertOf(in, a);
    Value c = in.div(a, kChunkSize);
    Value start = in.toIndex(
        tensor::ExtractOp::create(in.b, in.loc, chunkStarts, ValueRange{c, e}));
    Value earlier =
        buildLoop(in.b, in.loc, in.mul(c, in.idx(kChunkSize)), a, {in.idx(0)},
                  [&](OpBuilder &lb, Value a2, ValueRange n) {
                    ScalarEmitter l{lb, in.loc};
                    Value same = isOf(l, a2, e);
                    return SmallVector<Value>{
                        l.add(n[0], l.select(same, l.idx(1), l.idx(0)))};
                  })
            .front();
    return in.select(valid, in.add(start, earlier), in.idx(-1));
  });
  // Entry t·k + r: the slot of token t with r smaller ones, else -1.
  return parallel1d([&](ScalarEmitter &in, Value p) {
    Value first = in.mul(in.div(p, topK), in.idx(topK));
    Value r = in.rem(p, topK);
    auto slotAt = [&](ScalarEmitter &x, Value j) {
      return tensor::ExtractOp::create(x.b, x.loc, slotOf,
                                       ValueRange{x.add(first, j)})
          .getResult();
    };
    return buildLoop(
               in.b, in.loc, in.idx(0), in.idx(topK), {in.idx(-1)},
               [&](OpBuilder &jb, Value j, ValueRange found) {
                 ScalarEmitter l{jb, in.loc};
                 Value v = slotAt(l, j);
                 Value smaller =
                     buildLoop(
                         jb, in.loc, l.idx(0), l.idx(topK), {l.idx(0)},
                         [&](OpBuilder &ib, Value i, ValueRange n) {
                           ScalarEmitter m{ib, in.loc};
                           Value u = slotAt(m, i);
                           Value below = m.both(
                               m.cmp(arith::CmpIPredicate::sge, u, m.idx(0)),
                               m.cmp(arith::CmpIPredicate::slt, u, v));
                           return SmallVector<Value>{m.add(
                               n[0], m.select(below, m.idx(1), m.idx(0)))};
                         })
                         .front();
                 Value hit =
                     l.both(l.cmp(arith::CmpIPredicate::sge, v, l.idx(0)),
                            l.eq(smaller, r));
                 return SmallVector<Value>{l.select(hit, v, found[0])};
               })
        .front();
  });
}

struct DispatchPlanToGPU : OpRewritePattern<DispatchPlanOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(DispatchPlanOp op,
                                PatternRewriter &b) const override {
    if (!isParallelDispatchPlan(op))
      return b.notifyMatchFailure(op, "capacity fills choice by choice");
    Location loc = op.getLoc();
    MLIRContext *ctx = b.getContext();
    ScalarEmitter em{b, loc};
    int64_t numExperts = op.getNumExperts(), topK = op.getTopK();
    Value ids = op.getIds(), weights = op.getWeights();
    Value numTokens = getDimSize(b, loc, ids, 0);
    Value numAssignments = em.mul(numTokens, em.idx(topK));
    Value numChunks =
        em.div(em.add(numAssignments, em.idx(kChunkSize - 1)), kChunkSize);
    Type i32 = b.getI32Type();

    // The expert of assignment `a` (token a / k, choice a % k), and whether
    // its id names one.
    auto expertOf = [&](ScalarEmitter &in, Value a) {
      Value id = tensor::ExtractOp::create(
          in.b, in.loc, ids, ValueRange{in.div(a, topK), in.rem(a, topK)});
      return buildIdInRange(in.b, in.loc, id, in.idx(numExperts));
    };
    auto chunkBounds = [&](ScalarEmitter &in, Value c) {
      Value lo = in.mul(c, in.idx(kChunkSize));
      Value hi = in.minU(in.add(lo, in.idx(kChunkSize)), numAssignments);
      return std::pair{lo, hi};
    };
    auto isOf = [&](ScalarEmitter &in, Value a, Value e) {
      auto [valid, expert] = expertOf(in, a);
      return in.both(valid, in.eq(expert, e));
    };
    auto parallel2d =
        [&](ArrayRef<OpFoldResult> shape,
            function_ref<Value(ScalarEmitter &, Value, Value)> body) {
          return buildGenerated(b, loc, shape, i32,
                                [&](ScalarEmitter &in, ValueRange ivs) {
                                  return body(in, ivs[0], ivs[1]);
                                });
        };
    SmallVector<OpFoldResult> chunkShape = {numChunks,
                                            b.getIndexAttr(numExperts)};

    Value chunkCounts =
        parallel2d(chunkShape, [&](ScalarEmitter &in, Value c, Value e) {
          auto [lo, hi] = chunkBounds(in, c);
          return buildLoop(in.b, in.loc, lo, hi, {in.i32(0)},
                           [&](OpBuilder &lb, Value a, ValueRange count) {
                             ScalarEmitter l{lb, in.loc};
                             Value one = arith::ExtUIOp::create(lb, in.loc, i32,
                                                                isOf(l, a, e));
                             return SmallVector<Value>{l.add(count[0], one)};
                           })
              .front();
        });

    // counts[e] = Σ_c chunk_counts[c, e] (integers: any order is exact).
    auto countsType = cast<RankedTensorType>(op.getCounts().getType());
    Value countsInit =
        linalg::FillOp::create(b, loc, ValueRange{em.i32(0)},
                               ValueRange{tensor::EmptyOp::create(
                                   b, loc, countsType.getShape(), i32)})
            .getResult(0);
    AffineExpr d0, d1;
    bindDims(ctx, d0, d1);
    Value counts =
        linalg::GenericOp::create(
            b, loc, TypeRange{countsType}, ValueRange{chunkCounts},
            ValueRange{countsInit},
            ArrayRef<AffineMap>{AffineMap::get(2, 0, {d1, d0}, ctx),
                                AffineMap::get(2, 0, {d0}, ctx)},
            ArrayRef<IteratorType>{IteratorType::parallel,
                                   IteratorType::reduction},
            [&](OpBuilder &nb, Location nloc, ValueRange args) {
              linalg::YieldOp::create(nb, nloc,
                                      ValueRange{arith::AddIOp::create(
                                          nb, nloc, args[1], args[0])});
            })
            .getResult(0);

    // offsets: the exclusive scan, E sequential steps.
    auto offsetsType = cast<RankedTensorType>(op.getOffsets().getType());
    Value offsets =
        tensor::EmptyOp::create(b, loc, offsetsType.getShape(), i32);
    offsets = tensor::InsertOp::create(b, loc, em.i32(0), offsets,
                                       ValueRange{em.idx(0)});
    offsets =
        buildLoop(b, loc, em.idx(0), em.idx(numExperts),
                  ValueRange{offsets, em.i32(0)},
                  [&](OpBuilder &nb, Value e, ValueRange st) {
                    ScalarEmitter in{nb, loc};
                    Value c = tensor::ExtractOp::create(nb, loc, counts,
                                                        ValueRange{e});
                    Value sum = in.add(st[1], c);
                    Value o = tensor::InsertOp::create(
                        nb, loc, sum, st[0], ValueRange{in.add(e, in.idx(1))});
                    return SmallVector<Value>{o, sum};
                  })
            .front();

    Value chunkStarts = parallel2d(chunkShape, [&](ScalarEmitter &in, Value c,
                                                   Value e) {
      Value start =
          tensor::ExtractOp::create(in.b, in.loc, offsets, ValueRange{e});
      return buildLoop(in.b, in.loc, in.idx(0), c, {start},
                       [&](OpBuilder &lb, Value earlier, ValueRange sum) {
                         ScalarEmitter l{lb, in.loc};
                         Value n = tensor::ExtractOp::create(
                             lb, in.loc, chunkCounts, ValueRange{earlier, e});
                         return SmallVector<Value>{l.add(sum[0], n)};
                       })
          .front();
    });

    // Each slot gathers its assignment's token and weight.
    auto tokensType = cast<RankedTensorType>(op.getTokenIds().getType());
    auto slotWType = cast<RankedTensorType>(op.getSlotWeights().getType());
    auto identity = AffineMap::getMultiDimIdentityMap(1, ctx);
    SmallVector<Value> slotInits = {
        tensor::EmptyOp::create(b, loc, ArrayRef<OpFoldResult>{numAssignments},
                                i32),
        tensor::EmptyOp::create(b, loc, ArrayRef<OpFoldResult>{numAssignments},
                                b.getF32Type())};
    auto slots = linalg::GenericOp::create(
        b, loc, TypeRange{tokensType, slotWType}, ValueRange{}, slotInits,
        ArrayRef<AffineMap>{identity, identity},
        ArrayRef<IteratorType>{IteratorType::parallel},
        [&](OpBuilder &nb, Location nloc, ValueRange) {
          ScalarEmitter in{nb, nloc};
          Value s = linalg::IndexOp::create(nb, nloc, 0);
          Value slot = in.toI32(s);
          auto offsetAt = [&](ScalarEmitter &x, Value e) {
            return tensor::ExtractOp::create(x.b, x.loc, offsets, ValueRange{e})
                .getResult();
          };
          Value kept = offsetAt(in, in.idx(numExperts));
          // The expert: the largest e < E with offsets[e] <= s (fixed steps).
          Value lo = in.idx(0), hi = in.idx(numExperts - 1);
          int64_t steps = llvm::Log2_64_Ceil(numExperts + 1);
          for (int64_t step = 0; step < steps; ++step) {
            Value mid = arith::ShRUIOp::create(
                nb, nloc, in.add(in.add(lo, hi), in.idx(1)), in.idx(1));
            Value fits =
                in.cmp(arith::CmpIPredicate::sle, offsetAt(in, mid), slot);
            Value below = in.sub(mid, in.idx(1));
            Value newLo = in.select(fits, mid, lo);
            hi = in.select(fits, hi, below);
            lo = newLo;
          }
          Value e = lo;
          // The chunk: the largest c with chunk_starts[c, e] <= s.
          Value lastChunk = in.sub(numChunks, in.idx(1));
          auto bisect = scf::ForOp::create(
              nb, nloc, in.idx(0), in.idx(kChunkBisectionSteps), in.idx(1),
              ValueRange{in.idx(0), lastChunk},
              [&](OpBuilder &fb, Location floc, Value, ValueRange bounds) {
                ScalarEmitter f{fb, floc};
                Value mid = arith::ShRUIOp::create(
                    fb, floc, f.add(f.add(bounds[0], bounds[1]), f.idx(1)),
                    f.idx(1));
                mid = f.minU(mid, bounds[1]);
                Value start = tensor::ExtractOp::create(fb, floc, chunkStarts,
                                                        ValueRange{mid, e});
                Value fits = f.cmp(arith::CmpIPredicate::sle, start, slot);
                Value newLo = f.select(fits, mid, bounds[0]);
                Value newHi =
                    f.select(fits, bounds[1],
                             f.select(f.ult(bounds[0], mid),
                                      f.sub(mid, f.idx(1)), bounds[0]));
                scf::YieldOp::create(fb, floc, ValueRange{newLo, newHi});
              });
          Value c = bisect.getResult(0);
          Value rank =
              in.sub(slot, tensor::ExtractOp::create(nb, nloc, chunkStarts,
                                                     ValueRange{c, e}));
          // The rank-th assignment of chunk c to expert e.
          auto [first, last] = chunkBounds(in, c);
          SmallVector<Value> found = buildLoop(
              nb, nloc, first, last, {in.i32(0), first},
              [&](OpBuilder &lb, Value a, ValueRange st) {
                ScalarEmitter l{lb, nloc};
                Value mine = isOf(l, a, e);
                Value hit = l.both(mine, l.eq(st[0], rank));
                Value seen =
                    l.add(st[0], arith::ExtUIOp::create(lb, nloc, i32, mine));
                return SmallVector<Value>{seen, l.select(hit, a, st[1])};
              });
          Value a = found[1];
          Value t = in.div(a, topK), j = in.rem(a, topK);
          Value used = in.cmp(arith::CmpIPredicate::slt, slot, kept);
          Value token = in.select(used, in.toI32(t), in.i32(-1));
          Value w =
              tensor::ExtractOp::create(nb, nloc, weights, ValueRange{t, j});
          Value weight = in.select(used, w, in.f32(0.0));
          linalg::YieldOp::create(nb, nloc, ValueRange{token, weight});
        });

    // The combines of these slots: each token lists its slots ascending.
    SmallVector<CombineOp> combines;
    for (Operation *user : op.getTokenIds().getUsers())
      if (auto combine = dyn_cast<CombineOp>(user);
          combine && combine.getTokenIds() == op.getTokenIds())
        combines.push_back(combine);
    if (!combines.empty()) {
      Value order = buildSlotsByToken(b, loc, chunkStarts, numAssignments,
                                      expertOf, isOf, topK);
      for (CombineOp combine : combines) {
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPoint(combine);
        // Token t's slots are order[t·k ..< t·k + k]; tokens of the
        // combine past the plan's have none.
        Value sums = buildSlotSums(
            b, combine.getLoc(), combine.getInit(), combine.getExpertRows(),
            combine.getSlotWeights(), order,
            [&](OpBuilder &nb, Location nloc, Value t) {
              ScalarEmitter in{nb, nloc};
              Value lo = in.mul(in.minU(t, numTokens), in.idx(topK));
              Value hi =
                  in.select(in.ult(t, numTokens), in.add(lo, in.idx(topK)), lo);
              return std::pair{lo, hi};
            });
        b.replaceOp(combine, sums);
      }
    }

    Value dropped =
        em.sub(em.toI32(numAssignments),
               tensor::ExtractOp::create(b, loc, offsets,
                                         ValueRange{em.idx(numExperts)}));
    Value droppedTensor = tensor::FromElementsOp::create(
        b, loc, op.getDropped().getType(), ValueRange{dropped});
    b.replaceOp(op, {counts, offsets, slots.getResult(0), slots.getResult(1),
                     droppedTensor});
    return success();
  }
};

} // namespace

bool mlir::moe::isParallelDispatchPlan(DispatchPlanOp plan) {
  return !plan.hasCapacity();
}

void mlir::moe::populateDispatchToGPUPatterns(RewritePatternSet &patterns) {
  patterns.add<DispatchPlanToGPU>(patterns.getContext());
}
