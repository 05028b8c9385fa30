//===- ProductKeyToCPU.cpp - fast CPU lowering of PEER/PKM retrieval -----===//
//
// moe.product_key_topk, O((n + k'^2)·d_k) per token and head, never O(N):
//   1. both sub-key tables (a pair per head where each head has its own)
//      are packed once per call into f32 panels of vw
//      sub-keys (transposed, bf16/f16 widened), an scf.forall over panels;
//   2. an scf.forall over (token block, head): register tiles of rowTile
//      tokens x 3 vectors of sub-keys compute the sub-key scores by FMA
//      along d_k (each score summed in the same order whatever the tile);
//      per token and half, a branch-free lower bound of the k'-th score
//      (lane-wise top-m) lets the scan in sub-key order skip whole vectors,
//      the rest go into a sorted list of k' = min(top_k, n) entries (ties
//      keep the lower index); the k'×k' candidate sums go into the sorted
//      top-k of the result under the full ranking rule (ties to the lower
//      expert id i·n + j, NaN last), rows and columns of the candidate grid
//      cut off once their sums fall below the list; then the softmax or
//      sigmoid of the head's k scores, computed as the reference does.
//
// moe.single_neuron_experts: PEER first computes coef[t, m] =
// w · act(u_i · x_t) for the token's H·k retrieved experts (an scf.forall
// over (token, block of choices), dots vectorised over D), then an
// scf.forall over (token, chunk of model columns) adds coef · v_i over the
// choices m = (h, j) in order into the chunk of the output row, a few
// choices per pass so that their rows stream at once (and rows a few choices
// ahead are prefetched), and finally init. PKM takes coef = w.
// Out-of-range ids contribute nothing.
//
// Every token's results come from the same code in the same order whatever
// T, the batch around it or the thread count.
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

/// Vectors of sub-keys in one register tile of the sub-key scores.
static constexpr int64_t kKeyVectors = 3;
/// Choices (h, j) of one token per work item of the PEER coefficient phase.
static constexpr int64_t kChoicesPerItem = 16;
/// Model columns per work item of the accumulation phase: each expert row
/// is streamed in runs of 1 KiB (f32), the partial sums stay in L1.
static constexpr int64_t kChunkColumns = 256;
/// How many choices ahead the accumulation phase prefetches expert rows.
static constexpr int64_t kPrefetchChoices = 8;
/// Choices added per pass over a chunk of the accumulation phase.
static constexpr int64_t kChoicesPerPass = 4;

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

/// Inserts (v, id) into the list `vals[prefix, ·]`, `ids[prefix, ·]`, sorted
/// best first, whose free slot is `start` (the list's length, or its last
/// index when the last entry is to fall off): the entries before `start`
/// that the new element ranks ahead of move down one place. Reads only
/// entries the list holds.
static void buildShiftInsert(OpBuilder &b, Location loc, Value vals, Value ids,
                             ValueRange prefix, Value start, Value v, Value id,
                             AheadFn ahead) {
  Type i1 = b.getI1Type(), index = b.getIndexType();
  Value zero = indexConstant(b, loc, 0), one = indexConstant(b, loc, 1);
  auto loop = scf::WhileOp::create(
      b, loc, TypeRange{index}, ValueRange{start},
      [&](OpBuilder &wb, Location wl, ValueRange args) {
        Value j = args[0];
        Value positive =
            arith::CmpIOp::create(wb, wl, arith::CmpIPredicate::ugt, j, zero);
        auto move = scf::IfOp::create(wb, wl, TypeRange{i1}, positive,
                                      /*withElseRegion=*/true);
        {
          OpBuilder::InsertionGuard guard(wb);
          wb.setInsertionPointToStart(move.thenBlock());
          Value prev = arith::SubIOp::create(wb, wl, j, one);
          Value ev =
              memref::LoadOp::create(wb, wl, vals, withIndex(prefix, prev));
          Value eid =
              memref::LoadOp::create(wb, wl, ids, withIndex(prefix, prev));
          scf::YieldOp::create(wb, wl, ahead(wb, wl, v, id, ev, eid));
          wb.setInsertionPointToStart(move.elseBlock());
          scf::YieldOp::create(
              wb, wl, ValueRange{arith::ConstantIntOp::create(wb, wl, 0, 1)});
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
  memref::StoreOp::create(b, loc, v, vals, withIndex(prefix, j));
  memref::StoreOp::create(b, loc, id, ids, withIndex(prefix, j));
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


/// a · b_c for the rows b_c, over `depth` columns: lane accumulators by FMA
/// (lane l takes columns l, l + vw, ...), the last partial vector read with
/// loadRowPrefix, then each accumulator's lanes summed in order. The bits of
/// a dot depend on the depth and vw only, not on how many rows share the
/// loop.
static SmallVector<Value> buildRowDots(OpBuilder &b, Location loc,
                                       const RowRef &a, ArrayRef<RowRef> rows,
                                       int64_t depth, int64_t vw) {
  auto vecType = VectorType::get({vw}, b.getF32Type());
  Value zero = arith::ConstantOp::create(
      b, loc, DenseElementsAttr::get(vecType, b.getF32FloatAttr(0.0f)));
  SmallVector<Value> accs(rows.size(), zero);
  auto step = [&](OpBuilder &sb, Location sl, Value k, int64_t lanes,
                  ValueRange in) {
    Value av = loadRowPrefix(sb, sl, a, k, vw, lanes);
    SmallVector<Value> out;
    for (auto [row, acc] : llvm::zip(rows, in))
      out.push_back(vector::FMAOp::create(
          sb, sl, av, loadRowPrefix(sb, sl, row, k, vw, lanes), acc));
    return out;
  };
  int64_t main = depth / vw * vw;
  if (main > 0) {
    auto loop = scf::ForOp::create(
        b, loc, indexConstant(b, loc, 0), indexConstant(b, loc, main),
        indexConstant(b, loc, vw), accs,
        [&](OpBuilder &lb, Location ll, Value k, ValueRange iter) {
          scf::YieldOp::create(lb, ll, step(lb, ll, k, vw, iter));
        });
    accs.assign(loop.getResults().begin(), loop.getResults().end());
  }
  if (depth > main)
    accs = step(b, loc, indexConstant(b, loc, main), depth - main, accs);
  SmallVector<Value> dots;
  for (Value acc : accs)
    dots.push_back(
        vector::ReductionOp::create(b, loc, vector::CombiningKind::ADD, acc));
  return dots;
}

/// The vw x vw transpose of `rows` (vw a power of two): log2(vw) rounds of
/// two-operand shuffles, each swapping the off-diagonal blocks of size k.
static SmallVector<Value> transposeSquare(OpBuilder &b, Location loc,
                                          SmallVector<Value> rows) {
  int64_t vw = rows.size();
  for (int64_t k = 1; k < vw; k *= 2) {
    SmallVector<int64_t> lo(vw), hi(vw);
    for (int64_t j = 0; j < vw; ++j) {
      lo[j] = (j & k) ? vw + j - k : j;
      hi[j] = (j & k) ? vw + j : j + k;
    }
    for (int64_t i = 0; i < vw; ++i) {
      if (i & k)
        continue;
      Value a = rows[i], c = rows[i | k];
      rows[i] = vector::ShuffleOp::create(b, loc, a, c, lo);
      rows[i | k] = vector::ShuffleOp::create(b, loc, a, c, hi);
    }
  }
  return rows;
}

/// packed[2·g + s, j / vw, d, j % vw] = keys_s[g·n + j, d] as f32 (0 for
/// n <= j), for each of the `groups` tables of n sub-keys stacked in keys_s
/// (one shared table, or one per head): an scf.forall over (group and
/// table, block of vw sub-keys), vw x vw blocks moved through registers.
static void buildPackKeys(OpBuilder &b, Location loc, ArrayRef<Value> keys,
                          Value packed, int64_t n, int64_t half, int64_t vw,
                          int64_t groups) {
  Type f32 = b.getF32Type();
  auto vecType = VectorType::get({vw}, f32);
  int64_t numKeyVecs = llvm::divideCeil(n, vw);
  bool powerOfTwo = llvm::isPowerOf2_64(vw);
  buildParallelLoop(
      b, loc,
      ValueRange{indexConstant(b, loc, 2 * groups),
                 indexConstant(b, loc, numKeyVecs)},
      [&](OpBuilder &pb, Location pl, ValueRange ivs) {
        Value s = ivs[0];
        Value two = indexConstant(pb, pl, 2);
        Value first = arith::CmpIOp::create(
            pb, pl, arith::CmpIPredicate::eq,
            arith::RemUIOp::create(pb, pl, s, two), indexConstant(pb, pl, 0));
        Value table =
            arith::SelectOp::create(pb, pl, first, keys[0], keys[1]);
        Value rowBase = arith::MulIOp::create(
            pb, pl, arith::DivUIOp::create(pb, pl, s, two),
            indexConstant(pb, pl, n));
        Value j0 = arith::MulIOp::create(pb, pl, ivs[1],
                                         indexConstant(pb, pl, vw));
        SmallVector<Value> js;
        SmallVector<Value> inRange;
        for (int64_t r = 0; r < vw; ++r) {
          Value j = arith::AddIOp::create(pb, pl, j0, indexConstant(pb, pl, r));
          inRange.push_back(arith::CmpIOp::create(
              pb, pl, arith::CmpIPredicate::ult, j, indexConstant(pb, pl, n)));
          js.push_back(arith::AddIOp::create(pb, pl, rowBase, j));
        }
        Value zeroV = arith::ConstantOp::create(
            pb, pl, DenseElementsAttr::get(vecType, pb.getF32FloatAttr(0.0f)));
        // Columns [d0, d0 + lanes) of the block.
        auto block = [&](OpBuilder &kb, Location kl, Value d0, int64_t lanes) {
          if (!powerOfTwo) {
            for (int64_t r = 0; r < vw; ++r)
              for (int64_t l = 0; l < lanes; ++l) {
                Value d = arith::AddIOp::create(kb, kl, d0,
                                                indexConstant(kb, kl, l));
                Value row =
                    arith::SelectOp::create(kb, kl, inRange[r], js[r], rowBase);
                Value v = extendToF32(
                    kb, kl, memref::LoadOp::create(kb, kl, table,
                                                   ValueRange{row, d}));
                v = arith::SelectOp::create(kb, kl, inRange[r], v,
                                            createF32Constant(kb, kl, 0.0));
                memref::StoreOp::create(
                    kb, kl, v, packed,
                    ValueRange{s, ivs[1], d, indexConstant(kb, kl, r)});
              }
            return;
          }
          SmallVector<Value> rows;
          for (int64_t r = 0; r < vw; ++r) {
            auto load = scf::IfOp::create(kb, kl, TypeRange{vecType},
                                          inRange[r], true);
            OpBuilder::InsertionGuard guard(kb);
            kb.setInsertionPointToStart(load.thenBlock());
            scf::YieldOp::create(
                kb, kl,
                loadRowPrefix(kb, kl, RowRef{table, {js[r]}}, d0, vw, lanes));
            kb.setInsertionPointToStart(load.elseBlock());
            scf::YieldOp::create(kb, kl, zeroV);
            rows.push_back(load.getResult(0));
          }
          SmallVector<Value> cols = transposeSquare(kb, kl, rows);
          for (int64_t l = 0; l < lanes; ++l) {
            Value d =
                arith::AddIOp::create(kb, kl, d0, indexConstant(kb, kl, l));
            vector::StoreOp::create(
                kb, kl, cols[l], packed,
                ValueRange{s, ivs[1], d, indexConstant(kb, kl, 0)});
          }
        };
        int64_t main = half / vw * vw;
        if (main > 0)
          scf::ForOp::create(
              pb, pl, indexConstant(pb, pl, 0), indexConstant(pb, pl, main),
              indexConstant(pb, pl, vw), ValueRange{},
              [&](OpBuilder &lb, Location ll, Value d0, ValueRange) {
                block(lb, ll, d0, vw);
                scf::YieldOp::create(lb, ll);
              });
        if (half > main)
          block(pb, pl, indexConstant(pb, pl, main), half - main);
      });
}

/// The outermost enclosing scf.forall of `op` whose body defines none of
/// `values` (where work on them alone runs once for all its iterations), or
/// `op` itself when there is none.
static Operation *outermostInvariantLoop(Operation *op, ValueRange values) {
  Operation *point = op;
  for (auto loop = op->getParentOfType<scf::ForallOp>(); loop;
       loop = loop->getParentOfType<scf::ForallOp>()) {
    if (llvm::any_of(values, [&](Value v) {
          return loop->isAncestor(v.getParentRegion()->getParentOp());
        }))
      break;
    point = loop;
  }
  return point;
}

//===----------------------------------------------------------------------===//
// moe.product_key_topk
//===----------------------------------------------------------------------===//

namespace {
struct ProductKeyTopKToCPU : FastCPUPattern<ProductKeyTopKOp> {
  using FastCPUPattern::FastCPUPattern;

  LogicalResult matchAndRewrite(ProductKeyTopKOp op,
                                PatternRewriter &b) const override {
    Location loc = op.getLoc();
    // Shared sub-keys [n, d_k/2], or a table per head [heads, n, d_k/2].
    int64_t keysRank = cast<ShapedType>(op.getKeys1().getType()).getRank();
    bool perHead = keysRank == 3;
    int64_t n = staticDim(op.getKeys1(), keysRank - 2),
            half = staticDim(op.getKeys1(), keysRank - 1);
    int64_t heads = op.getHeads(), k = op.getTopK();
    int64_t groups = perHead ? heads : 1;
    if (ShapedType::isDynamic(n) || ShapedType::isDynamic(half) ||
        ShapedType::isDynamic(staticDim(op.getQuery(), 1)))
      return b.notifyMatchFailure(op, "expects static key and query widths");
    int64_t kp = std::min(k, n), keyDim = 2 * half;
    int64_t vw = config.vectorWidth;
    int64_t rowTile = std::max<int64_t>(1, config.rowTile);
    // Register tile of the scores: rowTile tokens x kKeyVectors vectors of
    // sub-keys (9 accumulators with the defaults: no spills on AVX2).
    int64_t keyTile = kKeyVectors;
    int64_t tokenBlock = std::max<int64_t>(1, config.tokenBlock);
    Type f32 = b.getF32Type(), i32 = b.getI32Type();

    Value query = readBuffer(b, loc, op.getQuery());
    Value weightsOut = allocBufferLike(b, loc, op.getWeightsInit());
    Value idsOut = allocBufferLike(b, loc, op.getIdsInit());
    Value numTokens = getDimSize(b, loc, op.getQuery(), 0);
    Value numBlocks = arith::CeilDivUIOp::create(
        b, loc, numTokens, indexConstant(b, loc, tokenBlock));

    // Both sub-key tables packed once per call as f32 panels
    // [2, n/vw, d_k/2, vw] (vw sub-keys transposed, widened, zero-padded):
    // the scores of vw consecutive sub-keys are then one vector FMA per
    // depth step, reading the panel in order.
    // In a token tile loop (moe-tile-token-ops), the tables are packed once
    // before the outermost loop they do not depend on, not once per tile.
    int64_t numKeyVecs = llvm::divideCeil(n, vw), nPad = numKeyVecs * vw;
    Value packed;
    {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPoint(
          outermostInvariantLoop(op, {op.getKeys1(), op.getKeys2()}));
      std::array<Value, 2> keys = {readBuffer(b, loc, op.getKeys1()),
                                   readBuffer(b, loc, op.getKeys2())};
      if (perHead)
        for (Value &table : keys)
          table = memref::CollapseShapeOp::create(
              b, loc, table, ArrayRef<ReassociationIndices>{{0, 1}, {2}});
      packed = memref::AllocOp::create(
          b, loc, MemRefType::get({2 * groups, numKeyVecs, half, vw}, f32));
      buildPackKeys(b, loc, keys, packed, n, half, vw, groups);
    }

    buildParallelLoop(
        b, loc, ValueRange{numBlocks, indexConstant(b, loc, heads)},
        [&](OpBuilder &pb, Location pl, ValueRange ivs) {
          Value h = ivs[1];
          // Per work item scratch (the body becomes its own function): the
          // sub-key scores of a row tile and each row's two top-k' lists.
          Value scores = memref::AllocaOp::create(
              pb, pl, MemRefType::get({2, rowTile, nPad}, f32));
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
                SmallVector<Value> rows;
                for (int64_t r = 0; r < count; ++r)
                  rows.push_back(arith::AddIOp::create(
                      rb, rl, m, indexConstant(rb, rl, r)));
                // Sub-key scores of the tile's tokens, both halves: register
                // tiles of count tokens x keyTile vectors of sub-keys, each
                // score summed over the depth in order by FMA.
                for (int64_t s = 0; s < 2; ++s) {
                  Value col = arith::AddIOp::create(
                      rb, rl, headBase, indexConstant(rb, rl, s * half));
                  Value sV = indexConstant(rb, rl, s);
                  // The packed table of this head's half s.
                  Value table = sV;
                  if (perHead)
                    table = arith::AddIOp::create(
                        rb, rl,
                        arith::MulIOp::create(rb, rl, h,
                                              indexConstant(rb, rl, 2)),
                        sV);
                  buildColumnTiles(
                      rb, rl, indexConstant(rb, rl, 0),
                      indexConstant(rb, rl, numKeyVecs), keyTile,
                      numKeyVecs % keyTile,
                      [&](OpBuilder &cb, Location cl, Value jv0,
                          int64_t vecs) {
                        SmallVector<Value> jvs, js;
                        for (int64_t c = 0; c < vecs; ++c) {
                          jvs.push_back(arith::AddIOp::create(
                              cb, cl, jv0, indexConstant(cb, cl, c)));
                          js.push_back(arith::MulIOp::create(
                              cb, cl, jvs.back(), indexConstant(cb, cl, vw)));
                        }
                        auto vecType = VectorType::get({vw}, f32);
                        Value zeroV = arith::ConstantOp::create(
                            cb, cl,
                            DenseElementsAttr::get(vecType,
                                                   cb.getF32FloatAttr(0.0f)));
                        SmallVector<Value> accInit(count * vecs, zeroV);
                        auto depth = scf::ForOp::create(
                            cb, cl, indexConstant(cb, cl, 0),
                            indexConstant(cb, cl, half),
                            indexConstant(cb, cl, 1), accInit,
                            [&](OpBuilder &db, Location dl, Value d,
                                ValueRange accs) {
                              Value qc = arith::AddIOp::create(db, dl, col, d);
                              SmallVector<Value> qs, ks;
                              for (int64_t r = 0; r < count; ++r) {
                                Value q = memref::LoadOp::create(
                                    db, dl, query, ValueRange{rows[r], qc});
                                qs.push_back(vector::BroadcastOp::create(
                                    db, dl, vecType, q));
                              }
                              for (int64_t c = 0; c < vecs; ++c)
                                ks.push_back(vector::LoadOp::create(
                                    db, dl, vecType, packed,
                                    ValueRange{table, jvs[c], d,
                                               indexConstant(db, dl, 0)}));
                              SmallVector<Value> next;
                              for (int64_t r = 0; r < count; ++r)
                                for (int64_t c = 0; c < vecs; ++c)
                                  next.push_back(vector::FMAOp::create(
                                      db, dl, qs[r], ks[c],
                                      accs[r * vecs + c]));
                              scf::YieldOp::create(db, dl, next);
                            });
                        for (int64_t r = 0; r < count; ++r)
                          for (int64_t c = 0; c < vecs; ++c)
                            vector::StoreOp::create(
                                cb, cl, depth.getResult(r * vecs + c), scores,
                                ValueRange{sV, indexConstant(cb, cl, r),
                                           js[c]});
                      });
                }
                buildFor(rb, rl, indexConstant(rb, rl, 0),
                         indexConstant(rb, rl, count),
                         [&](OpBuilder &tb, Location tl, Value r) {
                           Value t = arith::AddIOp::create(tb, tl, m, r);
                           buildSelection(tb, tl, scores, listVals, listIds,
                                          r, t, h, n, kp, k, vw, weightsOut,
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
                             int64_t vw, Value weightsOut, Value idsOut,
                             ScoreFunction score) {
    Type i32 = b.getI32Type(), f32 = b.getF32Type(), i1 = b.getI1Type();
    Type index = b.getIndexType();
    Value zero = indexConstant(b, loc, 0), one = indexConstant(b, loc, 1);
    Value falseV = arith::ConstantIntOp::create(b, loc, 0, 1);
    Value trueV = arith::ConstantIntOp::create(b, loc, 1, 1);
    Value kpV = indexConstant(b, loc, kp), kV = indexConstant(b, loc, k);

    // Stage 1: the top-k' of each half. A lower bound tau of the k'-th
    // largest score comes first, branch-free: the lane-wise top-m
    // (m·vw >= k') of the score vectors are m·vw distinct sub-keys, so at
    // least k' scores are >= their minimum. Then the sub-keys are scanned in
    // index order, whole vectors below tau skipped with one compare; the
    // others go into the sorted list (unconditionally while it has fewer
    // than k' entries, then when they rank ahead of its last entry; a later
    // sub-key never wins a tie). A score below tau, or NaN while tau is a
    // number, cannot be among the top k'. When tau is not a number above
    // -inf (NaN or -inf scores, or fewer than m·vw sub-keys), nothing is
    // skipped.
    auto vecType = VectorType::get({vw}, f32);
    int64_t lanesM = llvm::divideCeil(kp, vw);
    int64_t numFull = n / vw, tailLanes = n % vw;
    Value negInf = createF32Constant(b, loc, -INFINITY);
    Value negInfV = vector::BroadcastOp::create(b, loc, vecType, negInf);
    Value nanF = createF32Constant(b, loc, NAN);
    buildFor(
        b, loc, zero, indexConstant(b, loc, 2),
        [&](OpBuilder &sb, Location sl, Value s) {
          auto loadScores = [&](OpBuilder &lb, Location ll, Value j,
                                int64_t lanes) {
            Value vec = vector::LoadOp::create(lb, ll, vecType, scores,
                                               ValueRange{s, r, j});
            if (lanes < vw)
              vec = arith::SelectOp::create(
                  lb, ll, buildPrefixMask(lb, ll, vw, lanes), vec, negInfV);
            return vec;
          };
          // Lane-wise top-m: a compare-exchange chain per vector.
          auto network = [&](OpBuilder &nb, Location nl, Value x,
                             ValueRange tops) {
            Value nan = arith::CmpFOp::create(nb, nl, arith::CmpFPredicate::UNO,
                                              x, x);
            x = arith::SelectOp::create(nb, nl, nan, negInfV, x);
            SmallVector<Value> next;
            for (Value top : tops) {
              next.push_back(arith::MaximumFOp::create(nb, nl, top, x));
              x = arith::MinimumFOp::create(nb, nl, top, x);
            }
            return next;
          };
          SmallVector<Value> tops(lanesM, negInfV);
          if (numFull > 0) {
            auto loop = scf::ForOp::create(
                sb, sl, zero, indexConstant(sb, sl, numFull * vw),
                indexConstant(sb, sl, vw), tops,
                [&](OpBuilder &lb, Location ll, Value j, ValueRange st) {
                  scf::YieldOp::create(
                      lb, ll, network(lb, ll, loadScores(lb, ll, j, vw), st));
                });
            tops.assign(loop.getResults().begin(), loop.getResults().end());
          }
          if (tailLanes)
            tops = network(
                sb, sl,
                loadScores(sb, sl, indexConstant(sb, sl, numFull * vw),
                           tailLanes),
                tops);
          Value tau = negInf;
          for (Value top : tops) {
            Value lowest = vector::ReductionOp::create(
                sb, sl, vector::CombiningKind::MINIMUMF, top);
            tau = tau == negInf ? lowest
                                : arith::MinimumFOp::create(sb, sl, tau, lowest)
                                      .getResult();
          }
          Value usable = arith::CmpFOp::create(
              sb, sl, arith::CmpFPredicate::OGT, tau, negInf);
          tau = arith::SelectOp::create(sb, sl, usable, tau, nanF);
          Value tauIsNumber = usable;
          Value tauV = vector::BroadcastOp::create(sb, sl, vecType, tau);

          // The scan; state (entries in the list, its last value when full).
          Value lastIdx = indexConstant(sb, sl, kp - 1);
          auto lanesScan = [&](OpBuilder &ob, Location ol, Value j0,
                               int64_t lanes, ValueRange state) {
            auto loop = scf::ForOp::create(
                ob, ol, indexConstant(ob, ol, 0), indexConstant(ob, ol, lanes),
                one, state,
                [&](OpBuilder &jb, Location jl, Value l, ValueRange st) {
                  Value j = arith::AddIOp::create(jb, jl, j0, l);
                  Value v = memref::LoadOp::create(jb, jl, scores,
                                                   ValueRange{s, r, j});
                  Value id = arith::IndexCastOp::create(jb, jl, i32, j);
                  Value below = arith::CmpFOp::create(
                      jb, jl, arith::CmpFPredicate::OLT, v, tau);
                  Value nan = arith::CmpFOp::create(
                      jb, jl, arith::CmpFPredicate::UNO, v, v);
                  Value skip = arith::OrIOp::create(
                      jb, jl, below,
                      arith::AndIOp::create(jb, jl, nan, tauIsNumber));
                  Value full = arith::CmpIOp::create(
                      jb, jl, arith::CmpIPredicate::uge, st[0], kpV);
                  Value ahead = buildScanAhead(jb, jl, v, id, st[1], Value());
                  Value notFull = arith::XOrIOp::create(jb, jl, full, trueV);
                  Value fits = arith::OrIOp::create(jb, jl, notFull, ahead);
                  Value take = arith::AndIOp::create(
                      jb, jl, arith::XOrIOp::create(jb, jl, skip, trueV), fits);
                  auto ins = scf::IfOp::create(jb, jl, TypeRange{index, f32},
                                               take, true);
                  {
                    OpBuilder::InsertionGuard guard(jb);
                    jb.setInsertionPointToStart(ins.thenBlock());
                    Value start =
                        arith::MinUIOp::create(jb, jl, st[0], lastIdx);
                    buildShiftInsert(jb, jl, listVals, listIds,
                                     ValueRange{s, r}, start, v, id,
                                     buildScanAhead);
                    Value count = arith::MinUIOp::create(
                        jb, jl, arith::AddIOp::create(jb, jl, st[0], one), kpV);
                    Value nowFull = arith::CmpIOp::create(
                        jb, jl, arith::CmpIPredicate::uge, count, kpV);
                    auto last = scf::IfOp::create(jb, jl, TypeRange{f32},
                                                  nowFull, true);
                    jb.setInsertionPointToStart(last.thenBlock());
                    scf::YieldOp::create(
                        jb, jl,
                        ValueRange{memref::LoadOp::create(
                            jb, jl, listVals, ValueRange{s, r, lastIdx})});
                    jb.setInsertionPointToStart(last.elseBlock());
                    scf::YieldOp::create(jb, jl, st[1]);
                    jb.setInsertionPointAfter(last);
                    scf::YieldOp::create(jb, jl,
                                         ValueRange{count, last.getResult(0)});
                    jb.setInsertionPointToStart(ins.elseBlock());
                    scf::YieldOp::create(jb, jl, st);
                  }
                  scf::YieldOp::create(jb, jl, ins.getResults());
                });
            return SmallVector<Value>(loop.getResults());
          };
          // A vector of scores from j0 with `lanes` sub-keys: scanned only
          // if one of them is not skipped.
          auto blockScan = [&](OpBuilder &ob, Location ol, Value j0,
                               int64_t lanes, ValueRange state) {
            Value vec = vector::LoadOp::create(ob, ol, vecType, scores,
                                               ValueRange{s, r, j0});
            Value below = arith::CmpFOp::create(
                ob, ol, arith::CmpFPredicate::OLT, vec, tauV);
            Value nan = arith::CmpFOp::create(ob, ol, arith::CmpFPredicate::UNO,
                                              vec, vec);
            Value tauNumberV = vector::BroadcastOp::create(
                ob, ol, VectorType::get({vw}, i1), tauIsNumber);
            Value skip = arith::OrIOp::create(
                ob, ol, below, arith::AndIOp::create(ob, ol, nan, tauNumberV));
            Value keep = arith::XOrIOp::create(
                ob, ol, skip,
                vector::BroadcastOp::create(ob, ol,
                                            VectorType::get({vw}, i1), trueV));
            if (lanes < vw)
              keep = arith::AndIOp::create(ob, ol, keep,
                                           buildPrefixMask(ob, ol, vw, lanes));
            Value any = vector::ReductionOp::create(
                ob, ol, vector::CombiningKind::OR, keep);
            auto some = scf::IfOp::create(ob, ol, TypeRange{index, f32}, any,
                                          true);
            OpBuilder::InsertionGuard guard(ob);
            ob.setInsertionPointToStart(some.thenBlock());
            scf::YieldOp::create(ob, ol, lanesScan(ob, ol, j0, lanes, state));
            ob.setInsertionPointToStart(some.elseBlock());
            scf::YieldOp::create(ob, ol, state);
            return SmallVector<Value>(some.getResults());
          };
          SmallVector<Value> state = {zero, createF32Constant(sb, sl, 0.0)};
          if (numFull > 0) {
            auto loop = scf::ForOp::create(
                sb, sl, zero, indexConstant(sb, sl, numFull * vw),
                indexConstant(sb, sl, vw), state,
                [&](OpBuilder &lb, Location ll, Value j, ValueRange st) {
                  scf::YieldOp::create(lb, ll, blockScan(lb, ll, j, vw, st));
                });
            state.assign(loop.getResults().begin(), loop.getResults().end());
          }
          if (tailLanes)
            blockScan(sb, sl, indexConstant(sb, sl, numFull * vw), tailLanes,
                      state);
        });

    // Stage 2: the top-k of the k'×k' sums v1[a] + v2[c] (ids i·n + j) into
    // weightsOut/idsOut[t, h]. Both lists are sorted, so the sums along a row
    // never grow: once the list is full, a sum below its last entry ends the
    // row, and a row whose first sum is below it ends the search.
    Value zeroS = indexConstant(b, loc, 0), oneS = indexConstant(b, loc, 1);
    Value nI = arith::ConstantIntOp::create(b, loc, i32, n);
    Value lastK = indexConstant(b, loc, k - 1);
    auto outAt = [&](Value j) { return SmallVector<Value>{t, h, j}; };
    // Whether the list is full and `sum` is below its last entry.
    auto belowFull = [&](OpBuilder &fb, Location fl, Value count, Value sum) {
      Value full = arith::CmpIOp::create(fb, fl, arith::CmpIPredicate::uge,
                                         count, kV);
      auto check = scf::IfOp::create(fb, fl, TypeRange{i1}, full, true);
      OpBuilder::InsertionGuard guard(fb);
      fb.setInsertionPointToStart(check.thenBlock());
      Value last = memref::LoadOp::create(fb, fl, weightsOut, outAt(lastK));
      scf::YieldOp::create(
          fb, fl,
          ValueRange{arith::CmpFOp::create(fb, fl, arith::CmpFPredicate::OLT,
                                           sum, last)});
      fb.setInsertionPointToStart(check.elseBlock());
      scf::YieldOp::create(fb, fl, falseV);
      return check.getResult(0);
    };
    Value v2First =
        memref::LoadOp::create(b, loc, listVals, ValueRange{oneS, r, zero});
    scf::ForOp::create(
        b, loc, zero, kpV, one, ValueRange{zero, falseV},
        [&](OpBuilder &ab, Location al, Value a, ValueRange rowState) {
          Value count = rowState[0], done = rowState[1];
          auto row = scf::IfOp::create(ab, al, TypeRange{index, i1}, done,
                                       true);
          {
            OpBuilder::InsertionGuard guard(ab);
            ab.setInsertionPointToStart(row.thenBlock());
            scf::YieldOp::create(ab, al, rowState);
            ab.setInsertionPointToStart(row.elseBlock());
            Value va = memref::LoadOp::create(ab, al, listVals,
                                              ValueRange{zeroS, r, a});
            Value ia = memref::LoadOp::create(ab, al, listIds,
                                              ValueRange{zeroS, r, a});
            Value base = arith::MulIOp::create(ab, al, ia, nI);
            Value rowEnds =
                belowFull(ab, al, count, addF(ab, al, va, v2First));
            auto scan = scf::IfOp::create(ab, al, TypeRange{index, i1},
                                          rowEnds, true);
            ab.setInsertionPointToStart(scan.thenBlock());
            scf::YieldOp::create(ab, al, ValueRange{count, trueV});
            ab.setInsertionPointToStart(scan.elseBlock());
            auto inner = scf::ForOp::create(
                ab, al, zero, kpV, one, ValueRange{count, falseV},
                [&](OpBuilder &cb, Location cl, Value c, ValueRange st) {
                  auto step = scf::IfOp::create(cb, cl, TypeRange{index, i1},
                                                st[1], true);
                  OpBuilder::InsertionGuard g2(cb);
                  cb.setInsertionPointToStart(step.thenBlock());
                  scf::YieldOp::create(cb, cl, st);
                  cb.setInsertionPointToStart(step.elseBlock());
                  Value vc = memref::LoadOp::create(cb, cl, listVals,
                                                    ValueRange{oneS, r, c});
                  Value ic = memref::LoadOp::create(cb, cl, listIds,
                                                    ValueRange{oneS, r, c});
                  Value sum = addF(cb, cl, va, vc);
                  Value id = arith::AddIOp::create(cb, cl, base, ic);
                  Value full = arith::CmpIOp::create(
                      cb, cl, arith::CmpIPredicate::uge, st[0], kV);
                  auto ins = scf::IfOp::create(cb, cl, TypeRange{index, i1},
                                               full, true);
                  cb.setInsertionPointToStart(ins.thenBlock());
                  {
                    Value lastV = memref::LoadOp::create(cb, cl, weightsOut,
                                                         outAt(lastK));
                    Value lastId =
                        memref::LoadOp::create(cb, cl, idsOut, outAt(lastK));
                    Value ahead =
                        buildRanksAhead(cb, cl, sum, id, lastV, lastId);
                    scf::IfOp::create(
                        cb, cl, ahead, [&](OpBuilder &ib, Location il) {
                          buildShiftInsert(ib, il, weightsOut, idsOut,
                                           ValueRange{t, h}, lastK, sum, id,
                                           buildIdAhead);
                          scf::YieldOp::create(ib, il);
                        });
                    Value below = arith::CmpFOp::create(
                        cb, cl, arith::CmpFPredicate::OLT, sum, lastV);
                    scf::YieldOp::create(cb, cl, ValueRange{st[0], below});
                  }
                  cb.setInsertionPointToStart(ins.elseBlock());
                  buildShiftInsert(cb, cl, weightsOut, idsOut, ValueRange{t, h},
                                   st[0], sum, id, buildIdAhead);
                  scf::YieldOp::create(
                      cb, cl,
                      ValueRange{arith::AddIOp::create(cb, cl, st[0], one),
                                 falseV});
                  cb.setInsertionPointAfter(ins);
                  scf::YieldOp::create(cb, cl, ins.getResults());
                  cb.setInsertionPointAfter(step);
                  scf::YieldOp::create(cb, cl, step.getResults());
                });
            scf::YieldOp::create(
                ab, al, ValueRange{inner.getResult(0), falseV});
            ab.setInsertionPointAfter(scan);
            scf::YieldOp::create(ab, al, scan.getResults());
          }
          scf::YieldOp::create(ab, al, row.getResults());
        });

    // The weights, as the reference's row softmax / sigmoid computes them.
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
};
} // namespace

//===----------------------------------------------------------------------===//
// moe.single_neuron_experts
//===----------------------------------------------------------------------===//

namespace {
struct SingleNeuronExpertsToCPU : FastCPUPattern<SingleNeuronExpertsOp> {
  using FastCPUPattern::FastCPUPattern;

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
      Value numBlocks =
          indexConstant(b, loc, llvm::divideCeil(choices, idBlock));
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
                  SmallVector<Value> dots =
                      buildRowDots(rb, rl, RowRef{x, {t}}, uRows, width, vw);
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

    Value zeroV = arith::ConstantOp::create(
        b, loc, DenseElementsAttr::get(vecType, b.getF32FloatAttr(0.0f)));
    // fn(d, mask) for the vectors of the `lanes` columns from d0 (the last
    // one masked when lanes is not a multiple of vw).
    auto forEachVector =
        [&](OpBuilder &fb, Location fl, Value d0, int64_t lanes,
            function_ref<void(OpBuilder &, Location, Value, Value, int64_t)>
                fn) {
          int64_t main = lanes / vw * vw;
          if (main > 0)
            scf::ForOp::create(
                fb, fl, d0,
                arith::AddIOp::create(fb, fl, d0, indexConstant(fb, fl, main)),
                indexConstant(fb, fl, vw), ValueRange{},
                [&](OpBuilder &lb, Location ll, Value d, ValueRange) {
                  fn(lb, ll, d, Value(), vw);
                  scf::YieldOp::create(lb, ll);
                });
          if (int64_t tail = lanes - main)
            fn(fb, fl,
               arith::AddIOp::create(fb, fl, d0, indexConstant(fb, fl, main)),
               buildPrefixMask(fb, fl, vw, tail), tail);
        };
    // The (safe) expert row of choice min(m + distance, last) of token t.
    auto prefetchRow = [&](OpBuilder &pb, Location pl, Value t, Value m,
                           int64_t distance) {
      Value ahead = arith::MinUIOp::create(
          pb, pl,
          arith::AddIOp::create(pb, pl, m, indexConstant(pb, pl, distance)),
          indexConstant(pb, pl, choices - 1));
      Value id = memref::LoadOp::create(pb, pl, ids, ValueRange{t, ahead});
      return buildIdInRange(pb, pl, id, numExperts).second;
    };
    auto store = [&](OpBuilder &sb, Location sl, Value value, Value t, Value d,
                     Value mask) {
      if (mask)
        vector::MaskedStoreOp::create(sb, sl, out, ValueRange{t, d}, mask,
                                      value);
      else
        vector::StoreOp::create(sb, sl, value, out, ValueRange{t, d});
    };

    // One chunk of `lanes` columns from d0: the sum over the choices in
    // order, accumulated in the chunk of the output row (L1), each expert
    // row streamed once; then init + sum.
    auto buildChunk = [&](OpBuilder &cb, Location cl, Value t, Value d0,
                          int64_t lanes) {
      forEachVector(cb, cl, d0, lanes,
                    [&](OpBuilder &vb, Location vl, Value d, Value mask,
                        int64_t active) {
                      store(vb, vl, zeroV, t, d, mask);
                    });
      buildRowTiles(
          cb, cl, indexConstant(cb, cl, 0), indexConstant(cb, cl, choices),
          kChoicesPerPass,
          [&](OpBuilder &mb, Location ml, Value m, int64_t count) {
            SmallVector<Value> valid, rows, gains, ahead;
            for (int64_t c = 0; c < count; ++c) {
              Value mc =
                  arith::AddIOp::create(mb, ml, m, indexConstant(mb, ml, c));
              Value id = memref::LoadOp::create(mb, ml, ids, ValueRange{t, mc});
              auto [isValid, row] = buildIdInRange(mb, ml, id, numExperts);
              valid.push_back(isValid);
              rows.push_back(row);
              Value g = memref::LoadOp::create(mb, ml, coef, ValueRange{t, mc});
              gains.push_back(vector::BroadcastOp::create(mb, ml, vecType, g));
              ahead.push_back(prefetchRow(mb, ml, t, mc, kPrefetchChoices));
            }
            forEachVector(
                mb, ml, d0, lanes,
                [&](OpBuilder &vb, Location vl, Value d, Value mask,
                    int64_t active) {
                  // The rows a few choices ahead: random rows defeat the
                  // hardware prefetcher.
                  for (Value r : ahead)
                    memref::PrefetchOp::create(vb, vl, v, ValueRange{r, d},
                                               /*isWrite=*/false,
                                               /*localityHint=*/3,
                                               /*isDataCache=*/true);
                  // The pass's choices in order, each added to the sum as
                  // on its own (an invalid id adds nothing): the same bits
                  // as one choice per pass, with one load and store of the
                  // partial sums per pass and its rows in flight at once.
                  Value acc =
                      loadRowVector(vb, vl, RowRef{out, {t}}, d, vw, mask);
                  for (int64_t c = 0; c < count; ++c) {
                    Value vv = loadRowPrefix(vb, vl, RowRef{v, {rows[c]}}, d,
                                             vw, active);
                    Value sum = addF(vb, vl, acc, mulF(vb, vl, gains[c], vv));
                    acc = arith::SelectOp::create(vb, vl, valid[c], sum, acc);
                  }
                  store(vb, vl, acc, t, d, mask);
                });
          });
      forEachVector(cb, cl, d0, lanes,
                    [&](OpBuilder &vb, Location vl, Value d, Value mask,
                        int64_t active) {
                      Value before =
                          loadRowVector(vb, vl, RowRef{init, {t}}, d, vw, mask);
                      Value sum =
                          loadRowVector(vb, vl, RowRef{out, {t}}, d, vw, mask);
                      store(vb, vl, addF(vb, vl, before, sum), t, d, mask);
                    });
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
};
} // namespace

void mlir::moe::populateFastProductKeyPatterns(RewritePatternSet &patterns,
                                               const CPUKernelConfig &config) {
  patterns.add<ProductKeyTopKToCPU, SingleNeuronExpertsToCPU>(
      patterns.getContext(), config);
}
