//===- PanelKernels.cpp - outer-product tiles on packed weight panels -----===//

#include "PanelKernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <algorithm>

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::cpu;

/// Transposes the square matrix whose rows are `rows` (vw vectors of vw f32
/// lanes) in registers by swapping the off-diagonal blocks of each size in
/// turn: log2(vw) rounds of vw two-source shuffles, which x86 matches to
/// vperm2f128/unpck/shufps. (Upstream's x86vector 8x8 sequence blends
/// through inline assembly that targets without AVX cannot allocate.) Pure
/// data movement: no bit changes.
void cpu::transposeInRegisters(OpBuilder &b, Location loc,
                               MutableArrayRef<Value> rows) {
  int64_t n = rows.size();
  for (int64_t d = n / 2; d >= 1; d /= 2) {
    SmallVector<int64_t> low, high;
    for (int64_t j = 0; j < n; ++j) {
      bool upper = j & d;
      low.push_back(upper ? n + j - d : j);
      high.push_back(upper ? n + j : j + d);
    }
    for (int64_t i = 0; i < n; ++i) {
      if (i & d)
        continue;
      Value a = rows[i], c = rows[i + d];
      rows[i] = vector::ShuffleOp::create(b, loc, a, c, low);
      rows[i + d] = vector::ShuffleOp::create(b, loc, a, c, high);
    }
  }
}

Value cpu::mapLanes(OpBuilder &b, Location loc, Value v,
                    function_ref<Value(OpBuilder &, Location, Value)> fn) {
  auto type = cast<VectorType>(v.getType());
  Value result = v;
  for (int64_t l = 0; l < type.getNumElements(); ++l) {
    Value lane = vector::ExtractOp::create(b, loc, v, l);
    result = vector::InsertOp::create(b, loc, fn(b, loc, lane), result, l);
  }
  return result;
}

/// Lanes l with n + l < numCols, as `iota < broadcast(numCols - n)` (arith
/// on vectors, which every lowering to LLVM handles).
static Value buildColumnMask(OpBuilder &b, Location loc, Value n,
                             int64_t numCols, int64_t vw) {
  auto i64Vec = VectorType::get({vw}, b.getI64Type());
  SmallVector<int64_t> lanes;
  for (int64_t l = 0; l < vw; ++l)
    lanes.push_back(l);
  Value iota = arith::ConstantOp::create(
      b, loc, DenseElementsAttr::get(i64Vec, ArrayRef<int64_t>(lanes)));
  Value left = arith::IndexCastOp::create(
      b, loc, b.getI64Type(),
      arith::SubIOp::create(b, loc, indexConstant(b, loc, numCols), n));
  Value limit = vector::BroadcastOp::create(b, loc, i64Vec, left);
  return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, iota,
                               limit);
}

int64_t cpu::packedPanelColumns(const CPUKernelConfig &config,
                                int64_t numGroups) {
  return std::max<int64_t>(1, config.panelColVectors / numGroups) *
         config.vectorWidth;
}

namespace {
/// The static shape of a panel tiling (see buildTiledPanelProducts).
struct PanelShape {
  int64_t vw;            ///< f32 lanes
  int64_t groups;        ///< weight groups (w1 [, w3])
  int64_t vecsPerGroup;  ///< column vectors of one group in a register tile
  int64_t tileVecs;      ///< vectors of a register tile (all groups)
  int64_t tileCols;      ///< columns of a register tile (of each group)
  int64_t blockCols;     ///< columns of a work item (of each group)
  int64_t rowTile;       ///< rows of a register tile
  int64_t directRows;    ///< most rows an item runs without a panel
  int64_t chunk;         ///< depth of a packed panel
  int64_t numCols, depth;

  PanelShape(const CPUKernelConfig &config, int64_t numCols,
             int64_t numGroups, int64_t depth)
      : vw(config.vectorWidth), groups(numGroups), numCols(numCols),
        depth(depth) {
    tileCols = packedPanelColumns(config, numGroups);
    vecsPerGroup = tileCols / vw;
    tileVecs = groups * vecsPerGroup;
    blockCols =
        std::max<int64_t>(1, llvm::divideCeil(config.colBlock, tileCols)) *
        tileCols;
    // tileVecs accumulators per row, the tile's panel vectors and one
    // broadcast must fit in the vector registers. Left rows whose stride is
    // a multiple of 4 KiB (d_model and many hidden sizes) share an L1 set at
    // every depth, so a tile of more rows than the L1 has ways evicts its
    // own broadcast operands (Mixtral prefill ran 1.4x slower at 14 rows
    // than at 7 with AVX-512).
    int64_t fits = (config.vectorRegisters - tileVecs - 1) / tileVecs;
    rowTile = config.panelRowTile > 0
                  ? config.panelRowTile
                  : std::clamp<int64_t>(fits, 1,
                                        std::max<int64_t>(1, config.l1Ways));
    chunk = std::max<int64_t>(1, config.panelDepthBlock / vw) * vw;
    // Without a panel a tile also holds vw transposed weight vectors.
    directRows = std::max<int64_t>(
        1, (config.vectorRegisters - vw - 1) / tileVecs);
  }
  /// Whether register tiles can reach past the last column.
  bool padded() const { return numCols % tileCols != 0; }
  int64_t numChunks() const { return llvm::divideCeil(depth, chunk); }
};
} // namespace

/// The weight rows of register-tile vector j (columns n + v * vw + l of
/// group j / vecsPerGroup, v = j % vecsPerGroup) at depths [k, k + lanes),
/// transposed: result[t] holds depth k + t of the vector's columns. Columns
/// past the last read as zeros.
static SmallVector<Value> loadTransposed(OpBuilder &b, Location loc,
                                         const PanelShape &s, Value expert,
                                         Value n, int64_t j, Value k,
                                         int64_t lanes, PanelRowFn weightRow) {
  int64_t vw = s.vw;
  int64_t group = j / s.vecsPerGroup, v = j % s.vecsPerGroup;
  auto vecType = VectorType::get({vw}, b.getF32Type());
  SmallVector<Value> rows;
  for (int64_t l = 0; l < vw; ++l) {
    Value col =
        arith::AddIOp::create(b, loc, n, indexConstant(b, loc, v * vw + l));
    auto load = [&](OpBuilder &lb, Location lloc) {
      RowRef row = weightRow(lb, lloc, expert, group, col);
      return loadRowPrefix(lb, lloc, row, k, vw, lanes);
    };
    if (!s.padded()) {
      rows.push_back(load(b, loc));
      continue;
    }
    Value inside =
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, col,
                              indexConstant(b, loc, s.numCols));
    auto guarded = scf::IfOp::create(
        b, loc, inside,
        [&](OpBuilder &tb, Location tloc) {
          scf::YieldOp::create(tb, tloc, load(tb, tloc));
        },
        [&](OpBuilder &eb, Location eloc) {
          scf::YieldOp::create(
              eb, eloc,
              arith::ConstantOp::create(
                  eb, eloc,
                  DenseElementsAttr::get(vecType, eb.getF32FloatAttr(0.0f)))
                  .getResult());
        });
    rows.push_back(guarded.getResult(0));
  }
  transposeInRegisters(b, loc, rows);
  return rows;
}

/// Steps `step(kb, lanes)` over depths [0, len) in vectors: whole vectors in
/// a loop (threading `iters`), then the depth tail of `s.depth` when `len`
/// ends inside a vector (only the last chunk can).
static SmallVector<Value> buildDepthSteps(
    OpBuilder &b, Location loc, const PanelShape &s, Value len,
    ValueRange iters,
    function_ref<SmallVector<Value>(OpBuilder &, Location, Value, int64_t,
                                    ValueRange)>
        step) {
  Value vwV = indexConstant(b, loc, s.vw);
  Value whole = arith::MulIOp::create(
      b, loc, arith::DivUIOp::create(b, loc, len, vwV), vwV);
  auto loop = scf::ForOp::create(
      b, loc, indexConstant(b, loc, 0), whole, vwV, iters,
      [&](OpBuilder &lb, Location lloc, Value kb, ValueRange in) {
        scf::YieldOp::create(lb, lloc, step(lb, lloc, kb, s.vw, in));
      });
  SmallVector<Value> out(loop.getResults());
  int64_t tail = s.depth % s.vw;
  if (!tail)
    return out;
  Value hasTail =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, whole, len);
  auto ifOp = scf::IfOp::create(
      b, loc, hasTail,
      [&](OpBuilder &tb, Location tloc) {
        scf::YieldOp::create(tb, tloc, step(tb, tloc, whole, tail, out));
      },
      [&](OpBuilder &eb, Location eloc) {
        scf::YieldOp::create(eb, eloc, out);
      });
  return SmallVector<Value>(ifOp.getResults());
}

/// Packs panel[k, j * vw + l] = weight row (column n + lane l of vector j) at
/// depth k0 + k, for k in [0, len).
static void buildPack(OpBuilder &b, Location loc, const PanelShape &s,
                      Value panel, Value expert, Value n, Value k0, Value len,
                      PanelRowFn weightRow) {
  buildDepthSteps(
      b, loc, s, len, ValueRange{},
      [&](OpBuilder &sb, Location sloc, Value kb, int64_t lanes, ValueRange) {
        Value k = arith::AddIOp::create(sb, sloc, k0, kb);
        for (int64_t j = 0; j < s.tileVecs; ++j) {
          SmallVector<Value> depths =
              loadTransposed(sb, sloc, s, expert, n, j, k, lanes, weightRow);
          for (int64_t t = 0; t < lanes; ++t)
            vector::StoreOp::create(
                sb, sloc, depths[t], panel,
                ValueRange{
                    arith::AddIOp::create(sb, sloc, kb,
                                          indexConstant(sb, sloc, t)),
                    indexConstant(sb, sloc, j * s.vw)});
        }
        return SmallVector<Value>();
      });
}

/// `acc = fma(broadcast(a[k]), w, acc)`: one step of every output's chain.
static Value buildBroadcastFMA(OpBuilder &b, Location loc, const RowRef &a,
                               Value k, Value w, Value acc) {
  SmallVector<Value> indices(a.prefix.begin(), a.prefix.end());
  indices.push_back(k);
  Value scalar = memref::LoadOp::create(b, loc, a.buffer, indices);
  Value splat = vector::BroadcastOp::create(b, loc, w.getType(), scalar);
  return vector::FMAOp::create(b, loc, splat, w, acc);
}

/// The whole depth for a few rows without a panel: each step's weight
/// vectors are transposed in registers and used at once (decode streams the
/// weights once, with nothing stored). The same FMA chains as the panel
/// path, so the same bits.
static SmallVector<Value> buildDirectAccumulate(OpBuilder &b, Location loc,
                                                const PanelShape &s,
                                                Value expert, Value n,
                                                ArrayRef<RowRef> aRows,
                                                ValueRange accsIn,
                                                PanelRowFn weightRow) {
  // One column vector at a time: vw weight rows stream together, the
  // fewest the transposes allow.
  SmallVector<Value> accs(accsIn.begin(), accsIn.end());
  for (int64_t j = 0; j < s.tileVecs; ++j) {
    SmallVector<Value> mine;
    for (size_t i = 0; i < aRows.size(); ++i)
      mine.push_back(accs[i * s.tileVecs + j]);
    mine = buildDepthSteps(
        b, loc, s, indexConstant(b, loc, s.depth), mine,
        [&](OpBuilder &sb, Location sloc, Value kb, int64_t lanes,
            ValueRange in) {
          SmallVector<Value> out(in.begin(), in.end());
          SmallVector<Value> depths =
              loadTransposed(sb, sloc, s, expert, n, j, kb, lanes, weightRow);
          for (int64_t t = 0; t < lanes; ++t) {
            Value k =
                arith::AddIOp::create(sb, sloc, kb, indexConstant(sb, sloc, t));
            for (auto [i, a] : llvm::enumerate(aRows))
              out[i] = buildBroadcastFMA(sb, sloc, a, k, depths[t], out[i]);
          }
          return out;
        });
    for (size_t i = 0; i < aRows.size(); ++i)
      accs[i * s.tileVecs + j] = mine[i];
  }
  return accs;
}

/// Vector `j` (f32) of a register tile's panel at depth `k0 + k`.
using PanelVectorFn =
    function_ref<Value(OpBuilder &, Location, Value k0, Value k, int64_t j)>;

/// acc[i][j] = fma(broadcast(a_i[k0 + k]), panel(k0 + k, j), acc[i][j])
/// for k = 0 .. len - 1 in order.
static SmallVector<Value> buildPanelAccumulate(OpBuilder &b, Location loc,
                                               const PanelShape &s,
                                               PanelVectorFn panelVector,
                                               ArrayRef<RowRef> aRows,
                                               Value k0, Value len,
                                               ValueRange accsIn) {
  auto loop = scf::ForOp::create(
      b, loc, indexConstant(b, loc, 0), len, indexConstant(b, loc, 1), accsIn,
      [&](OpBuilder &lb, Location lloc, Value k, ValueRange iter) {
        SmallVector<Value> bs;
        for (int64_t j = 0; j < s.tileVecs; ++j)
          bs.push_back(panelVector(lb, lloc, k0, k, j));
        Value ka = arith::AddIOp::create(lb, lloc, k0, k);
        SmallVector<Value> out(iter.begin(), iter.end());
        for (auto [i, a] : llvm::enumerate(aRows))
          for (int64_t j = 0; j < s.tileVecs; ++j) {
            Value &acc = out[i * s.tileVecs + j];
            acc = buildBroadcastFMA(lb, lloc, a, ka, bs[j], acc);
          }
        scf::YieldOp::create(lb, lloc, out);
      });
  return SmallVector<Value>(loop.getResults());
}

void cpu::buildTiledPanelProducts(OpBuilder &b, Location loc,
                                  const CPUKernelConfig &config,
                                  Value numItems, ItemRowsFn itemRows,
                                  int64_t numCols, int64_t numGroups,
                                  int64_t depth, LeftRowFn leftRow,
                                  PanelRowFn weightRow,
                                  PanelEpilogueFn epilogue,
                                  PackedPanelFn packed) {
  PanelShape s(config, numCols, numGroups, depth);
  int64_t vw = s.vw;
  int64_t numBlocks = llvm::divideCeil(numCols, s.blockCols);
  int64_t numChunks = s.numChunks();
  bool chunked = numChunks > 1;
  auto vecType = VectorType::get({vw}, b.getF32Type());

  buildParallelLoop(
      b, loc, ValueRange{numItems, indexConstant(b, loc, numBlocks)},
      [&](OpBuilder &pb, Location ploc, ValueRange ivs) {
        RowRange rows = itemRows(pb, ploc, ivs[0]);
        Value blockBegin = arith::MulIOp::create(
            pb, ploc, ivs[1], indexConstant(pb, ploc, s.blockCols));
        Value blockEnd = arith::MinUIOp::create(
            pb, ploc,
            arith::AddIOp::create(pb, ploc, blockBegin,
                                  indexConstant(pb, ploc, s.blockCols)),
            indexConstant(pb, ploc, numCols));
        Value zeroVec = arith::ConstantOp::create(
            pb, ploc, DenseElementsAttr::get(vecType, pb.getF32FloatAttr(0.0f)));

        // Calls `body(n)` for the first column n of every register tile of
        // the block.
        auto forEachTile = [&](OpBuilder &fb, Location floc,
                               function_ref<void(OpBuilder &, Location, Value)>
                                   body) {
          scf::ForOp::create(
              fb, floc, blockBegin, blockEnd,
              indexConstant(fb, floc, s.tileCols), ValueRange{},
              [&](OpBuilder &lb, Location lloc, Value n, ValueRange) {
                body(lb, lloc, n);
                scf::YieldOp::create(lb, lloc);
              });
        };
        // Row tiles of at most `tile` rows over the item; `body` gets their
        // ids and left rows.
        auto forEachRowTile =
            [&](OpBuilder &fb, Location floc, int64_t tile,
                function_ref<void(OpBuilder &, Location, ArrayRef<Value>,
                                  ArrayRef<RowRef>)>
                    body) {
              buildLeftRowTiles(fb, floc, rows.begin, rows.end, tile, leftRow,
                                body);
            };
        // The epilogue of a register tile's finished accumulators.
        auto finish = [&](OpBuilder &fb, Location floc, Value n,
                          ArrayRef<Value> rowIds, ArrayRef<Value> accs) {
          for (auto [i, row] : llvm::enumerate(rowIds))
            for (int64_t v = 0; v < s.vecsPerGroup; ++v) {
              Value nv = arith::AddIOp::create(fb, floc, n,
                                               indexConstant(fb, floc, v * vw));
              Value mask;
              if (s.padded())
                mask = buildColumnMask(fb, floc, nv, numCols, vw);
              SmallVector<Value> vectors;
              for (int64_t g = 0; g < s.groups; ++g)
                vectors.push_back(
                    accs[i * s.tileVecs + g * s.vecsPerGroup + v]);
              epilogue(fb, floc, row, nv, mask, vectors);
            }
        };

        // Packed weights: every item takes the chunked path below, reading
        // its panels straight from the weights (each tile one contiguous
        // stream, which is also what decode wants).
        OpBuilder kb = pb;
        Value panel;
        if (!packed) {
          // Few rows (decode): the weights stream once through registers.
          Value numRows =
              arith::SubIOp::create(pb, ploc, rows.end, rows.begin);
          Value few = arith::CmpIOp::create(
              pb, ploc, arith::CmpIPredicate::ule, numRows,
              indexConstant(pb, ploc, s.directRows));
          auto choice =
              scf::IfOp::create(pb, ploc, few, /*withElseRegion=*/true);
          OpBuilder db = choice.getThenBodyBuilder();
          forEachTile(db, ploc, [&](OpBuilder &tb, Location tloc, Value n) {
            forEachRowTile(
                tb, tloc, s.directRows,
                [&](OpBuilder &rb, Location rloc, ArrayRef<Value> rowIds,
                    ArrayRef<RowRef> aRows) {
                  SmallVector<Value> init(rowIds.size() * s.tileVecs, zeroVec);
                  finish(rb, rloc, n, rowIds,
                         buildDirectAccumulate(rb, rloc, s, rows.expert, n,
                                               aRows, init, weightRow));
                });
          });
          // Many rows: pack a panel per depth chunk, run every row tile on
          // it.
          kb = choice.getElseBodyBuilder();
          panel = memref::AllocaOp::create(
              kb, ploc,
              MemRefType::get({s.chunk, s.tileVecs * vw}, kb.getF32Type()));
        }
        // The accumulators of every row of the item between depth chunks.
        Value partial;
        if (chunked)
          partial = memref::AllocaOp::create(
              kb, ploc,
              MemRefType::get({config.rowBlock, s.tileVecs * vw},
                              kb.getF32Type()));
        auto partialIndices = [&](OpBuilder &ib, Location iloc, Value row,
                                  int64_t j) {
          return SmallVector<Value>{
              arith::SubIOp::create(ib, iloc, row, rows.begin),
              indexConstant(ib, iloc, j * vw)};
        };
        auto chunkBody = [&](OpBuilder &cb, Location cloc, Value n, Value c) {
          Value k0 = arith::MulIOp::create(cb, cloc, c,
                                           indexConstant(cb, cloc, s.chunk));
          Value len = arith::MinUIOp::create(
              cb, cloc, indexConstant(cb, cloc, s.chunk),
              arith::SubIOp::create(cb, cloc, indexConstant(cb, cloc, depth),
                                    k0));
          Value isFirst = arith::CmpIOp::create(
              cb, cloc, arith::CmpIPredicate::eq, c, indexConstant(cb, cloc, 0));
          Value isLast = arith::CmpIOp::create(
              cb, cloc, arith::CmpIPredicate::eq, c,
              indexConstant(cb, cloc, numChunks - 1));
          Value tile;
          if (packed)
            tile = arith::DivUIOp::create(cb, cloc, n,
                                          indexConstant(cb, cloc, s.tileCols));
          else
            buildPack(cb, cloc, s, panel, rows.expert, n, k0, len, weightRow);
          auto panelVector = [&](OpBuilder &vb, Location vloc, Value kc,
                                 Value k, int64_t j) -> Value {
            if (!packed)
              return vector::LoadOp::create(
                  vb, vloc, vecType, panel,
                  ValueRange{k, indexConstant(vb, vloc, j * vw)});
            RowRef row = packed(vb, vloc, rows.expert, j / s.vecsPerGroup,
                                tile, arith::AddIOp::create(vb, vloc, kc, k));
            return loadRowVector(
                vb, vloc, row,
                indexConstant(vb, vloc, (j % s.vecsPerGroup) * vw), vw);
          };
          forEachRowTile(
              cb, cloc, s.rowTile,
              [&](OpBuilder &rb, Location rloc, ArrayRef<Value> rowIds,
                  ArrayRef<RowRef> aRows) {
                size_t numAccs = rowIds.size() * s.tileVecs;
                SmallVector<Value> init(numAccs, zeroVec);
                if (chunked) {
                  SmallVector<Type> types(numAccs, vecType);
                  auto load = scf::IfOp::create(rb, rloc, types, isFirst,
                                                /*withElseRegion=*/true);
                  OpBuilder zb = load.getThenBodyBuilder();
                  scf::YieldOp::create(zb, rloc, init);
                  OpBuilder eb = load.getElseBodyBuilder();
                  SmallVector<Value> saved;
                  for (Value row : rowIds)
                    for (int64_t j = 0; j < s.tileVecs; ++j)
                      saved.push_back(vector::LoadOp::create(
                          eb, rloc, vecType, partial,
                          partialIndices(eb, rloc, row, j)));
                  scf::YieldOp::create(eb, rloc, saved);
                  init.assign(load.getResults().begin(),
                              load.getResults().end());
                }
                SmallVector<Value> accs = buildPanelAccumulate(
                    rb, rloc, s, panelVector, aRows, k0, len, init);
                if (!chunked) {
                  finish(rb, rloc, n, rowIds, accs);
                  return;
                }
                scf::IfOp::create(
                    rb, rloc, isLast,
                    [&](OpBuilder &lb, Location lloc) {
                      finish(lb, lloc, n, rowIds, accs);
                      scf::YieldOp::create(lb, lloc);
                    },
                    [&](OpBuilder &sb, Location sloc) {
                      size_t a = 0;
                      for (Value row : rowIds)
                        for (int64_t j = 0; j < s.tileVecs; ++j)
                          vector::StoreOp::create(
                              sb, sloc, accs[a++], partial,
                              partialIndices(sb, sloc, row, j));
                      scf::YieldOp::create(sb, sloc);
                    });
              });
        };
        forEachTile(kb, ploc, [&](OpBuilder &tb, Location tloc, Value n) {
          if (!chunked) {
            chunkBody(tb, tloc, n, indexConstant(tb, tloc, 0));
            return;
          }
          scf::ForOp::create(
              tb, tloc, indexConstant(tb, tloc, 0),
              indexConstant(tb, tloc, numChunks), indexConstant(tb, tloc, 1),
              ValueRange{},
              [&](OpBuilder &lb, Location lloc, Value c, ValueRange) {
                chunkBody(lb, lloc, n, c);
                scf::YieldOp::create(lb, lloc);
              });
        });
      });
}
