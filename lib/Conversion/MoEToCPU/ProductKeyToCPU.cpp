//===- ProductKeyToCPU.cpp - fast CPU lowering of PEER/PKM retrieval -----===//
//
// moe.product_key_topk: an scf.forall over (token block, head). Inside, row
// tiles of `rowTile` tokens score both sub-key tables with the vectorised
// row-dot tile (queries x `colTile` keys at a time, O(n·d_k) per head and
// token), then per token: the top-k' of each half by insertion into a sorted
// list of k' = min(top_k, n) entries (scanned in sub-key order, so ties keep
// the lower index), the top-k of the k'×k' candidate sums by insertion under
// the full ranking rule (ties to the lower expert id i·n + j, NaN last), and
// the softmax or sigmoid of the head's k scores as the reference computes it.
// Never O(N): only n sub-keys and k'² candidates per head.
//
// moe.single_neuron_experts: PEER first computes coef[t, m] =
// w · act(u_i · x_t) for the token's H·k retrieved experts (an scf.forall
// over (token, block of ids), dots vectorised over D), then an scf.forall
// over (token, column chunk) sums coef · v_i over m = (h, j) in order in
// vector registers and writes init + sum. PKM takes coef = w. Out-of-range
// ids contribute nothing. Every token is computed by the same code in the
// same order whatever T or the thread count.
//
//===----------------------------------------------------------------------===//

#include "../MoEToLinalg/LoweringUtils.h"
#include "FastPatterns.h"
#include "RowDotKernels.h"

#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/PatternMatch.h"

#include <cmath>

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::cpu;

/// Choices (h, j) of one token per work item of the PEER coefficient phase.
static constexpr int64_t kChoicesPerItem = 16;
/// Model columns per work item of the accumulation phase, kept in registers
/// (8 ymm / 4 zmm accumulators).
static constexpr int64_t kChunkColumns = 64;

static int64_t staticDim(Value v, int64_t d) {
  return cast<ShapedType>(v.getType()).getDimSize(d);
}

static SmallVector<Value> withIndex(ValueRange prefix, Value j) {
  SmallVector<Value> indices(prefix.begin(), prefix.end());
  indices.push_back(j);
  return indices;
}

/// Whether a new element (v, id) ranks ahead of the list entry (ev, eid).
using AheadFn = function_ref<Value(OpBuilder &, Location, Value v, Value id,
                                   Value ev, Value eid)>;

/// Inserts (v, id) into the list `vals[prefix, 0 ..< cap]`,
/// `ids[prefix, 0 ..< cap]`, sorted best first, that holds
/// `min(count, cap)` entries: dropped when the list is full and the new
/// element does not rank ahead of its last entry, else the entries it ranks
/// ahead of move down one place (the last one falls off a full list). Reads
/// only the entries the list holds.
static void buildSortedInsert(OpBuilder &b, Location loc, Value vals,
                              Value ids, ValueRange prefix, int64_t cap,
                              Value count, Value v, Value id, AheadFn ahead) {
  Type i1 = b.getI1Type(), index = b.getIndexType();
  Value last = indexConstant(b, loc, cap - 1);
  Value full = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::uge, count,
                                     indexConstant(b, loc, cap));
  auto check = scf::IfOp::create(b, loc, TypeRange{i1}, full,
                                 /*withElseRegion=*/true);
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(check.thenBlock());
    Value ev = memref::LoadOp::create(b, loc, vals, withIndex(prefix, last));
    Value eid = memref::LoadOp::create(b, loc, ids, withIndex(prefix, last));
    scf::YieldOp::create(b, loc, ahead(b, loc, v, id, ev, eid));
    b.setInsertionPointToStart(check.elseBlock());
    scf::YieldOp::create(b, loc,
                         ValueRange{arith::ConstantIntOp::create(b, loc, 1, 1)});
  }
  scf::IfOp::create(
      b, loc, check.getResult(0), [&](OpBuilder &ib, Location il) {
        Value start = arith::MinUIOp::create(ib, il, count, last);
        Value zero = indexConstant(ib, il, 0), one = indexConstant(ib, il, 1);
        auto loop = scf::WhileOp::create(
            ib, il, TypeRange{index}, ValueRange{start},
            [&](OpBuilder &wb, Location wl, ValueRange args) {
              Value j = args[0];
              Value positive = arith::CmpIOp::create(
                  wb, wl, arith::CmpIPredicate::ugt, j, zero);
              auto move = scf::IfOp::create(wb, wl, TypeRange{i1}, positive,
                                            /*withElseRegion=*/true);
              {
                OpBuilder::InsertionGuard guard(wb);
                wb.setInsertionPointToStart(move.thenBlock());
                Value prev = arith::SubIOp::create(wb, wl, j, one);
                Value ev = memref::LoadOp::create(wb, wl, vals,
                                                  withIndex(prefix, prev));
                Value eid = memref::LoadOp::create(wb, wl, ids,
                                                   withIndex(prefix, prev));
                scf::YieldOp::create(wb, wl, ahead(wb, wl, v, id, ev, eid));
                wb.setInsertionPointToStart(move.elseBlock());
                scf::YieldOp::create(
                    wb, wl,
                    ValueRange{arith::ConstantIntOp::create(wb, wl, 0, 1)});
              }
              scf::ConditionOp::create(wb, wl, move.getResult(0), j);
            },
            [&](OpBuilder &wb, Location wl, ValueRange args) {
              Value j = args[0];
              Value prev = arith::SubIOp::create(wb, wl, j, one);
              Value ev =
                  memref::LoadOp::create(wb, wl, vals, withIndex(prefix, prev));
              Value eid =
                  memref::LoadOp::create(wb, wl, ids, withIndex(prefix, prev));
              memref::StoreOp::create(wb, wl, ev, vals, withIndex(prefix, j));
              memref::StoreOp::create(wb, wl, eid, ids, withIndex(prefix, j));
              scf::YieldOp::create(wb, wl, prev);
            });
        Value j = loop.getResult(0);
        memref::StoreOp::create(ib, il, v, vals, withIndex(prefix, j));
        memref::StoreOp::create(ib, il, id, ids, withIndex(prefix, j));
        scf::YieldOp::create(ib, il);
      });
}

/// The ranking rule for elements scanned in increasing index order: the new
/// element (higher index) ranks ahead of an entry only if it is a number and
/// the entry is smaller or NaN (`ult`: e < v or unordered).
static Value buildScanAhead(OpBuilder &b, Location loc, Value v, Value,
                            Value ev, Value) {
  Value number =
      arith::CmpFOp::create(b, loc, arith::CmpFPredicate::ORD, v, v);
  Value below =
      arith::CmpFOp::create(b, loc, arith::CmpFPredicate::ULT, ev, v);
  return arith::AndIOp::create(b, loc, number, below);
}

/// The full ranking rule, ties (and NaN pairs) to the lower id.
static Value buildIdAhead(OpBuilder &b, Location loc, Value v, Value id,
                          Value ev, Value eid) {
  return buildRanksAhead(b, loc, v, id, ev, eid);
}

/// `for (i = lo; i < hi; ++i) body(i)`.
static void buildFor(OpBuilder &b, Location loc, Value lo, Value hi,
                     function_ref<void(OpBuilder &, Location, Value)> body) {
  scf::ForOp::create(b, loc, lo, hi, indexConstant(b, loc, 1), ValueRange{},
                     [&](OpBuilder &lb, Location ll, Value i, ValueRange) {
                       body(lb, ll, i);
                       scf::YieldOp::create(lb, ll);
                     });
}

//===----------------------------------------------------------------------===//
// moe.product_key_topk
//===----------------------------------------------------------------------===//

namespace {
struct ProductKeyTopKToCPU : OpRewritePattern<ProductKeyTopKOp> {
  ProductKeyTopKToCPU(MLIRContext *ctx, const CPUKernelConfig &config)
      : OpRewritePattern(ctx, /*benefit=*/2), config(config) {}

  LogicalResult matchAndRewrite(ProductKeyTopKOp op,
                                PatternRewriter &b) const override {
    Location loc = op.getLoc();
    int64_t n = staticDim(op.getKeys1(), 0), half = staticDim(op.getKeys1(), 1);
    int64_t heads = op.getHeads(), k = op.getTopK();
    if (ShapedType::isDynamic(n) || ShapedType::isDynamic(half) ||
        ShapedType::isDynamic(staticDim(op.getQuery(), 1)))
      return b.notifyMatchFailure(op, "expects static key and query widths");
    int64_t kp = std::min(k, n), keyDim = 2 * half;
    int64_t vw = config.vectorWidth;
    int64_t rowTile = std::max<int64_t>(1, config.rowTile);
    int64_t keyTile = std::max<int64_t>(1, config.colTile);
    int64_t tokenBlock = std::max<int64_t>(1, config.tokenBlock);
    Type f32 = b.getF32Type(), i32 = b.getI32Type();

    Value query = readBuffer(b, loc, op.getQuery());
    std::array<Value, 2> keys = {readBuffer(b, loc, op.getKeys1()),
                                 readBuffer(b, loc, op.getKeys2())};
    Value weightsOut = allocBufferLike(b, loc, op.getWeightsInit());
    Value idsOut = allocBufferLike(b, loc, op.getIdsInit());
    Value numTokens = getDimSize(b, loc, op.getQuery(), 0);
    Value numBlocks = arith::CeilDivUIOp::create(
        b, loc, numTokens, indexConstant(b, loc, tokenBlock));
    auto queryType = cast<MemRefType>(query.getType());

    buildParallelLoop(
        b, loc, ValueRange{numBlocks, indexConstant(b, loc, heads)},
        [&](OpBuilder &pb, Location pl, ValueRange ivs) {
          Value h = ivs[1];
          // Per work item scratch (the body becomes its own function): the
          // sub-key scores of a row tile and each row's two top-k' lists.
          Value scores = memref::AllocaOp::create(
              pb, pl, MemRefType::get({2, rowTile, n}, f32));
          Value listVals = memref::AllocaOp::create(
              pb, pl, MemRefType::get({2, rowTile, kp}, f32));
          Value listIds = memref::AllocaOp::create(
              pb, pl, MemRefType::get({2, rowTile, kp}, i32));
          Value t0 = arith::MulIOp::create(
              pb, pl, ivs[0], indexConstant(pb, pl, tokenBlock));
          Value t1 = arith::MinUIOp::create(
              pb, pl,
              arith::AddIOp::create(pb, pl, t0,
                                    indexConstant(pb, pl, tokenBlock)),
              numTokens);
          Value headBase =
              arith::MulIOp::create(pb, pl, h, indexConstant(pb, pl, keyDim));

          buildRowTiles(
              pb, pl, t0, t1, rowTile,
              [&](OpBuilder &rb, Location rl, Value m, int64_t count) {
                // Sub-key scores of the tile's tokens, both halves.
                for (int64_t s = 0; s < 2; ++s) {
                  Value col = arith::AddIOp::create(
                      rb, rl, headBase, indexConstant(rb, rl, s * half));
                  SmallVector<RowRef> qRows;
                  for (int64_t r = 0; r < count; ++r) {
                    Value t = arith::AddIOp::create(
                        rb, rl, m, indexConstant(rb, rl, r));
                    SmallVector<OpFoldResult> offsets = {t, col};
                    SmallVector<OpFoldResult> sizes = {rb.getIndexAttr(1),
                                                       rb.getIndexAttr(half)};
                    SmallVector<OpFoldResult> strides = {rb.getIndexAttr(1),
                                                         rb.getIndexAttr(1)};
                    auto rowType = memref::SubViewOp::inferRankReducedResultType(
                        {half}, queryType, offsets, sizes, strides);
                    Value row = memref::SubViewOp::create(
                        rb, rl, rowType, query, offsets, sizes, strides);
                    qRows.push_back(RowRef{row, {}});
                  }
                  buildColumnTiles(
                      rb, rl, indexConstant(rb, rl, 0),
                      indexConstant(rb, rl, n), keyTile, n % keyTile,
                      [&](OpBuilder &cb, Location cl, Value j0,
                          int64_t keys_) {
                        SmallVector<RowRef> kRows;
                        SmallVector<Value> js;
                        for (int64_t c = 0; c < keys_; ++c) {
                          Value j = arith::AddIOp::create(
                              cb, cl, j0, indexConstant(cb, cl, c));
                          js.push_back(j);
                          kRows.push_back(RowRef{keys[s], {j}});
                        }
                        SmallVector<Value> dots =
                            buildDotTile(cb, cl, qRows, kRows, half, vw);
                        for (int64_t r = 0; r < count; ++r)
                          for (int64_t c = 0; c < keys_; ++c)
                            memref::StoreOp::create(
                                cb, cl, dots[r * keys_ + c], scores,
                                ValueRange{indexConstant(cb, cl, s),
                                           indexConstant(cb, cl, r), js[c]});
                      });
                }
                buildFor(rb, rl, indexConstant(rb, rl, 0),
                         indexConstant(rb, rl, count),
                         [&](OpBuilder &tb, Location tl, Value r) {
                           Value t = arith::AddIOp::create(tb, tl, m, r);
                           buildSelection(tb, tl, scores, listVals, listIds,
                                          r, t, h, n, kp, k, weightsOut,
                                          idsOut, op.getScore());
                         });
              });
        });
    b.replaceOp(op, {bufferToTensor(b, loc, weightsOut,
                                    op.getWeights().getType()),
                     bufferToTensor(b, loc, idsOut, op.getIds().getType())});
    return success();
  }

private:
  /// Token t, head h, whose sub-key scores are row r of `scores`: the two
  /// top-k' lists, the top-k of the candidates into weightsOut/idsOut[t, h],
  /// then the score function over them.
  static void buildSelection(OpBuilder &b, Location loc, Value scores,
                             Value listVals, Value listIds, Value r, Value t,
                             Value h, int64_t n, int64_t kp, int64_t k,
                             Value weightsOut, Value idsOut,
                             ScoreFunction score) {
    Type i32 = b.getI32Type();
    Value zero = indexConstant(b, loc, 0);
    // Stage 1: the top-k' of each half, scanning sub-keys in index order.
    buildFor(b, loc, zero, indexConstant(b, loc, 2),
             [&](OpBuilder &sb, Location sl, Value s) {
               buildFor(sb, sl, indexConstant(sb, sl, 0),
                        indexConstant(sb, sl, n),
                        [&](OpBuilder &jb, Location jl, Value j) {
                          Value v = memref::LoadOp::create(
                              jb, jl, scores, ValueRange{s, r, j});
                          Value id =
                              arith::IndexCastOp::create(jb, jl, i32, j);
                          buildSortedInsert(jb, jl, listVals, listIds,
                                            ValueRange{s, r}, kp, j, v, id,
                                            buildScanAhead);
                        });
             });

    // Stage 2: the top-k of the k'×k' sums v1[a] + v2[c], id i·n + j.
    Value zeroS = indexConstant(b, loc, 0), oneS = indexConstant(b, loc, 1);
    Value nI = arith::ConstantIntOp::create(b, loc, i32, n);
    Value kpV = indexConstant(b, loc, kp);
    buildFor(b, loc, zero, kpV, [&](OpBuilder &ab, Location al, Value a) {
      Value va = memref::LoadOp::create(ab, al, listVals,
                                        ValueRange{zeroS, r, a});
      Value ia = memref::LoadOp::create(ab, al, listIds,
                                        ValueRange{zeroS, r, a});
      Value base = arith::MulIOp::create(ab, al, ia, nI);
      Value seen = arith::MulIOp::create(ab, al, a, kpV);
      buildFor(ab, al, indexConstant(ab, al, 0), kpV,
               [&](OpBuilder &cb, Location cl, Value c) {
                 Value vc = memref::LoadOp::create(cb, cl, listVals,
                                                   ValueRange{oneS, r, c});
                 Value ic = memref::LoadOp::create(cb, cl, listIds,
                                                   ValueRange{oneS, r, c});
                 Value sum = addF(cb, cl, va, vc);
                 Value id = arith::AddIOp::create(cb, cl, base, ic);
                 Value count = arith::AddIOp::create(cb, cl, seen, c);
                 buildSortedInsert(cb, cl, weightsOut, idsOut,
                                   ValueRange{t, h}, k, count, sum, id,
                                   buildIdAhead);
               });
    });

    // The weights, as the reference's row softmax / sigmoid computes them.
    Value kV = indexConstant(b, loc, k);
    auto at = [&](Value j) { return SmallVector<Value>{t, h, j}; };
    if (score == ScoreFunction::sigmoid) {
      buildFor(b, loc, zero, kV, [&](OpBuilder &jb, Location jl, Value j) {
        Value v = memref::LoadOp::create(jb, jl, weightsOut, at(j));
        memref::StoreOp::create(jb, jl, buildSigmoid(jb, jl, v), weightsOut,
                                at(j));
      });
      return;
    }
    // maximumf: a NaN reaches the max and poisons the head's weights.
    auto maxLoop = scf::ForOp::create(
        b, loc, zero, kV, indexConstant(b, loc, 1),
        ValueRange{createF32Constant(b, loc, -INFINITY)},
        [&](OpBuilder &jb, Location jl, Value j, ValueRange acc) {
          Value v = memref::LoadOp::create(jb, jl, weightsOut, at(j));
          scf::YieldOp::create(
              jb, jl,
              ValueRange{arith::MaximumFOp::create(jb, jl, acc[0], v)});
        });
    Value rowMax = maxLoop.getResult(0);
    auto sumLoop = scf::ForOp::create(
        b, loc, zero, kV, indexConstant(b, loc, 1),
        ValueRange{createF32Constant(b, loc, 0.0)},
        [&](OpBuilder &jb, Location jl, Value j, ValueRange acc) {
          Value v = memref::LoadOp::create(jb, jl, weightsOut, at(j));
          Value e = math::ExpOp::create(
              jb, jl, arith::SubFOp::create(jb, jl, v, rowMax));
          memref::StoreOp::create(jb, jl, e, weightsOut, at(j));
          scf::YieldOp::create(jb, jl, ValueRange{addF(jb, jl, acc[0], e)});
        });
    Value rowSum = sumLoop.getResult(0);
    buildFor(b, loc, zero, kV, [&](OpBuilder &jb, Location jl, Value j) {
      Value e = memref::LoadOp::create(jb, jl, weightsOut, at(j));
      memref::StoreOp::create(jb, jl, divF(jb, jl, e, rowSum), weightsOut,
                              at(j));
    });
  }

  CPUKernelConfig config;
};
} // namespace

//===----------------------------------------------------------------------===//
// moe.single_neuron_experts
//===----------------------------------------------------------------------===//

namespace {
struct SingleNeuronExpertsToCPU : OpRewritePattern<SingleNeuronExpertsOp> {
  SingleNeuronExpertsToCPU(MLIRContext *ctx, const CPUKernelConfig &config)
      : OpRewritePattern(ctx, /*benefit=*/2), config(config) {}

  LogicalResult matchAndRewrite(SingleNeuronExpertsOp op,
                                PatternRewriter &b) const override {
    Location loc = op.getLoc();
    int64_t width = staticDim(op.getInit(), 1);
    int64_t heads = staticDim(op.getIds(), 1), k = staticDim(op.getIds(), 2);
    if (ShapedType::isDynamic(width) || ShapedType::isDynamic(heads) ||
        ShapedType::isDynamic(k))
      return b.notifyMatchFailure(op, "expects static widths");
    int64_t choices = heads * k;
    int64_t vw = config.vectorWidth;
    Type f32 = b.getF32Type();

    Value x = readBuffer(b, loc, op.getInput());
    Value v = readBuffer(b, loc, op.getExpertOut());
    Value init = readBuffer(b, loc, op.getInit());
    SmallVector<ReassociationIndices> flat = {{0}, {1, 2}};
    // [T, H·k]: choice m = h·k + j, the reference's (h, j) order.
    Value ids = memref::CollapseShapeOp::create(
        b, loc, readBuffer(b, loc, op.getIds()), flat);
    Value coef = memref::CollapseShapeOp::create(
        b, loc, readBuffer(b, loc, op.getWeights()), flat);
    Value numTokens = getDimSize(b, loc, op.getInput(), 0);
    Value numExperts = getDimSize(b, loc, op.getExpertOut(), 0);

    // PEER: coef[t, m] = w[t, m] · act(u_i · x_t).
    if (Value expertIn = op.getExpertIn()) {
      Value u = readBuffer(b, loc, expertIn);
      Value weights = coef;
      coef = memref::AllocOp::create(
          b, loc, MemRefType::get({ShapedType::kDynamic, choices}, f32),
          ValueRange{numTokens});
      Activation act = *op.getActivation();
      int64_t tile = std::max<int64_t>(1, config.colTile);
      int64_t idBlock = kChoicesPerItem;
      Value numBlocks = indexConstant(b, loc, llvm::divideCeil(choices, idBlock));
      buildParallelLoop(
          b, loc, ValueRange{numTokens, numBlocks},
          [&](OpBuilder &pb, Location pl, ValueRange ivs) {
            Value t = ivs[0];
            Value m0 = arith::MulIOp::create(pb, pl, ivs[1],
                                             indexConstant(pb, pl, idBlock));
            Value m1 = arith::MinUIOp::create(
                pb, pl,
                arith::AddIOp::create(pb, pl, m0,
                                      indexConstant(pb, pl, idBlock)),
                indexConstant(pb, pl, choices));
            buildRowTiles(
                pb, pl, m0, m1, tile,
                [&](OpBuilder &rb, Location rl, Value m, int64_t count) {
                  SmallVector<Value> ms;
                  SmallVector<RowRef> uRows;
                  for (int64_t c = 0; c < count; ++c) {
                    Value mc = arith::AddIOp::create(
                        rb, rl, m, indexConstant(rb, rl, c));
                    ms.push_back(mc);
                    Value id = memref::LoadOp::create(rb, rl, ids,
                                                      ValueRange{t, mc});
                    // An invalid id reads row 0; phase 2 skips it.
                    Value row = buildIdInRange(rb, rl, id, numExperts).second;
                    uRows.push_back(RowRef{u, {row}});
                  }
                  SmallVector<Value> dots = buildDotTile(
                      rb, rl, {RowRef{x, {t}}}, uRows, width, vw);
                  for (int64_t c = 0; c < count; ++c) {
                    Value w = memref::LoadOp::create(rb, rl, weights,
                                                     ValueRange{t, ms[c]});
                    Value g = mulF(rb, rl, w,
                                   buildActivation(rb, rl, act, dots[c]));
                    memref::StoreOp::create(rb, rl, g, coef,
                                            ValueRange{t, ms[c]});
                  }
                });
          });
    }

    // out[t, chunk] = init[t, chunk] + Σ_m coef[t, m] · v[ids[t, m], chunk].
    Value out = allocBufferLike(b, loc, op.getInit());
    int64_t chunkWidth = std::max<int64_t>(1, kChunkColumns / vw) * vw;
    int64_t numChunks = llvm::divideCeil(width, chunkWidth);
    int64_t fullChunks = width / chunkWidth;
    int64_t tailWidth = width - fullChunks * chunkWidth;
    auto vecType = VectorType::get({vw}, f32);

    // One chunk of `lanes` columns from d0, in ceil(lanes / vw) registers.
    auto buildChunk = [&](OpBuilder &cb, Location cl, Value t, Value d0,
                          int64_t lanes) {
      int64_t numVecs = llvm::divideCeil(lanes, vw);
      SmallVector<Value> cols, masks;
      for (int64_t i = 0; i < numVecs; ++i) {
        cols.push_back(
            arith::AddIOp::create(cb, cl, d0, indexConstant(cb, cl, i * vw)));
        int64_t active = std::min(vw, lanes - i * vw);
        masks.push_back(active < vw ? buildPrefixMask(cb, cl, vw, active)
                                    : Value());
      }
      Value zeroV = arith::ConstantOp::create(
          cb, cl, DenseElementsAttr::get(vecType, cb.getF32FloatAttr(0.0f)));
      SmallVector<Value> accInit(numVecs, zeroV);
      auto sum = scf::ForOp::create(
          cb, cl, indexConstant(cb, cl, 0), indexConstant(cb, cl, choices),
          indexConstant(cb, cl, 1), accInit,
          [&](OpBuilder &mb, Location ml, Value m, ValueRange accs) {
            Value id = memref::LoadOp::create(mb, ml, ids, ValueRange{t, m});
            auto [valid, row] = buildIdInRange(mb, ml, id, numExperts);
            auto add = scf::IfOp::create(mb, ml, accs.getTypes(), valid,
                                         /*withElseRegion=*/true);
            {
              OpBuilder::InsertionGuard guard(mb);
              mb.setInsertionPointToStart(add.thenBlock());
              Value g =
                  memref::LoadOp::create(mb, ml, coef, ValueRange{t, m});
              Value gv = vector::BroadcastOp::create(mb, ml, vecType, g);
              SmallVector<Value> next;
              for (int64_t i = 0; i < numVecs; ++i) {
                Value vv = loadRowVector(mb, ml, RowRef{v, {row}}, cols[i], vw,
                                         masks[i]);
                next.push_back(addF(mb, ml, accs[i], mulF(mb, ml, gv, vv)));
              }
              scf::YieldOp::create(mb, ml, next);
              mb.setInsertionPointToStart(add.elseBlock());
              scf::YieldOp::create(mb, ml, accs);
            }
            scf::YieldOp::create(mb, ml, add.getResults());
          });
      for (int64_t i = 0; i < numVecs; ++i) {
        Value before = loadRowVector(cb, cl, RowRef{init, {t}}, cols[i], vw,
                                     masks[i]);
        Value result = addF(cb, cl, before, sum.getResult(i));
        if (masks[i])
          vector::MaskedStoreOp::create(cb, cl, out, ValueRange{t, cols[i]},
                                        masks[i], result);
        else
          vector::StoreOp::create(cb, cl, result, out, ValueRange{t, cols[i]});
      }
    };

    buildParallelLoop(
        b, loc, ValueRange{numTokens, indexConstant(b, loc, numChunks)},
        [&](OpBuilder &pb, Location pl, ValueRange ivs) {
          Value t = ivs[0], chunk = ivs[1];
          Value d0 = arith::MulIOp::create(pb, pl, chunk,
                                           indexConstant(pb, pl, chunkWidth));
          if (tailWidth == 0) {
            buildChunk(pb, pl, t, d0, chunkWidth);
            return;
          }
          if (fullChunks == 0) {
            buildChunk(pb, pl, t, d0, tailWidth);
            return;
          }
          Value isFull =
              arith::CmpIOp::create(pb, pl, arith::CmpIPredicate::ult, chunk,
                                    indexConstant(pb, pl, fullChunks));
          scf::IfOp::create(
              pb, pl, isFull,
              [&](OpBuilder &ib, Location il) {
                buildChunk(ib, il, t, d0, chunkWidth);
                scf::YieldOp::create(ib, il);
              },
              [&](OpBuilder &ib, Location il) {
                buildChunk(ib, il, t, d0, tailWidth);
                scf::YieldOp::create(ib, il);
              });
        });
    b.replaceOp(op, bufferToTensor(b, loc, out, op.getType()));
    return success();
  }

  CPUKernelConfig config;
};
} // namespace

void mlir::moe::populateFastProductKeyPatterns(RewritePatternSet &patterns,
                                               const CPUKernelConfig &config) {
  patterns.add<ProductKeyTopKToCPU, SingleNeuronExpertsToCPU>(
      patterns.getContext(), config);
}
