//===- TensorCoreMatmul.cpp - gathered expert GEMMs on tensor cores -------===//
//
// `Σ_k lhs[r, k] · w[e(r), n, k]` for bf16 weights as warp-level
// `mma.sync.m16n8k16` tiles: one warp (32 consecutive work items of a 1-d
// parallel domain, so any block size that is a multiple of 32 keeps a tile
// in one warp) computes 16 rows × 32 columns, four 8-column MMA tiles that
// share the A fragments. Its rows may belong to several experts (segments
// are not padded): the warp runs once per distinct expert of its rows (or,
// for a few row tiles, one warp per distinct expert), with the other rows'
// A fragments zero, and each row keeps the accumulator of its own expert,
// so a row's result does not depend on its neighbours. The results stay in
// the lanes' registers (TensorCoreProduct) for the consumers to read.
//
// Activations are f32. Precision `f32` splits each into three bf16 terms by
// truncation (hi + mid + lo == x exactly, so every product is exact and only
// the order of the f32 sums differs from the reference's); `bf16` rounds
// them to bf16 once, as bf16 frameworks do, for a third of the MMAs.
//
// Fragments (lane = 4·g + t, PTX ISA "mma.m16n8k16" for .bf16): a0 =
// A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..];
// b0 = B[k=2t..2t+1][n=g], b1 = B[k=2t+8..][n=g] (B "col" is a row of the
// [N, K] weight); c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][2t..]. Each 32-bit
// register holds the lower k in its low half.
//
// Mode `mma` emits `moe.warp_mma` (nvvm.mma.sync in the kernels); mode
// `emulate` replaces the instruction by a loop that reads each operand
// element from the fragment registers of the lane holding it, computed by
// the same fragment code with that lane's id: the CPU pipeline runs the
// kernel's tiling, masking, splitting and fragment layout against the
// reference.
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

using namespace mlir;
using namespace mlir::moe;

using utils::IteratorType;

namespace {

constexpr int64_t kTileRows = 16, kTileCols = 8, kTileDepth = 16,
                  kWarpSize = 32;
/// 8-column MMA tiles per warp: the A fragments (loaded and split once per
/// depth step) serve this many MMAs.
constexpr int64_t kColTilesPerWarp = 4;
/// Up to this many row tiles (decode: few rows, most of another expert), a
/// row tile's distinct experts go to separate warps instead of one warp's
/// loop: 16 times the warps streaming weights. The sums are the same.
constexpr int64_t kDecodeRowTiles = 4;

/// What a warp tile reads: the operands, their sizes, and the tile's place.
struct TileOperands {
  Value lhs, w, expertOfRow;
  Value numRows; // S (index)
  int64_t numCols, depth;
  Value tileRow0, tileCol0; // first row and column of the tile
  TensorCoreOptions options;
};

/// A bf16 value's 16 bits, zero-extended to i32.
Value bf16Bits(ScalarEmitter &em, Value bf16) {
  Value bits = arith::BitcastOp::create(em.b, em.loc, em.b.getI16Type(), bf16);
  return arith::ExtUIOp::create(em.b, em.loc, em.b.getI32Type(), bits);
}

/// Two bf16 values in one 32-bit register, `low` in the low half.
Value packPair(ScalarEmitter &em, Value low, Value high) {
  Value shifted =
      arith::ShLIOp::create(em.b, em.loc, bf16Bits(em, high), em.i32(16));
  return arith::OrIOp::create(em.b, em.loc, bf16Bits(em, low), shifted);
}

/// `x` as bf16 terms whose sum is x: [hi, mid, lo] by truncation (exact;
/// ±Inf and NaN stay in hi with zero below), or [round(x)].
SmallVector<Value> splitActivation(ScalarEmitter &em, Value x,
                                   bool threeTerms) {
  OpBuilder &b = em.b;
  Type bf16 = b.getBF16Type();
  if (!threeTerms)
    return {arith::TruncFOp::create(b, em.loc, bf16, x)};
  auto truncateTo8Bits = [&](Value v) {
    Value bits = arith::BitcastOp::create(b, em.loc, b.getI32Type(), v);
    Value high = arith::AndIOp::create(
        b, em.loc, bits, em.i32(static_cast<int32_t>(0xFFFF0000u)));
    Value truncated = arith::BitcastOp::create(b, em.loc, b.getF32Type(), high);
    // A NaN whose payload is in the low bits would become ±Inf.
    Value nan =
        arith::CmpFOp::create(b, em.loc, arith::CmpFPredicate::UNO, v, v);
    return em.select(nan, v, truncated);
  };
  auto remainder = [&](Value v, Value part) {
    Value same =
        arith::CmpFOp::create(b, em.loc, arith::CmpFPredicate::OEQ, v, part);
    return em.select(same, em.f32(0.0),
                     arith::SubFOp::create(b, em.loc, v, part).getResult());
  };
  Value hi = truncateTo8Bits(x);
  Value r1 = remainder(x, hi);
  Value mid = truncateTo8Bits(r1);
  Value lo = remainder(r1, mid);
  SmallVector<Value> terms;
  for (Value part : {hi, mid, lo})
    terms.push_back(arith::TruncFOp::create(b, em.loc, bf16, part));
  return terms;
}

/// The A fragment registers of `lane` for depth step `k0` and expert `e`:
/// per activation term its a0..a3. Rows of another expert and elements past
/// the edges are zero; loads stay in bounds (clamped).
using AFragments = SmallVector<std::array<Value, 4>>; // one per term

AFragments loadA(ScalarEmitter &em, const TileOperands &t, Value lane, Value e,
                 Value k0) {
  OpBuilder &b = em.b;
  Location loc = em.loc;
  Value g = em.div(lane, 4), q = em.rem(lane, 4);
  Value lastRow = arith::SubIOp::create(b, loc, t.numRows, em.idx(1));
  Value lastDepth = em.idx(t.depth - 1);
  Value fZero = em.f32(0.0);

  // Activation element (row, k), zero unless the row is this expert's.
  auto rowIsMine = [&](Value row) {
    Value inside = em.ult(row, t.numRows);
    Value at = em.minU(row, lastRow);
    Value expert =
        tensor::ExtractOp::create(b, loc, t.expertOfRow, ValueRange{at});
    return std::pair{em.both(inside, em.eq(expert, e)), at};
  };
  auto activation = [&](Value mine, Value row, Value k) {
    Value ok = em.both(mine, em.ult(k, em.idx(t.depth)));
    Value v = tensor::ExtractOp::create(b, loc, t.lhs,
                                        ValueRange{row, em.minU(k, lastDepth)});
    return em.select(ok, v, fZero);
  };
  Value twoQ = em.mul(q, em.idx(2));
  SmallVector<Value> ks = {
      em.add(k0, twoQ), em.add(k0, em.add(twoQ, em.idx(1))),
      em.add(k0, em.add(twoQ, em.idx(8))), em.add(k0, em.add(twoQ, em.idx(9)))};
  Value row0 = em.add(t.tileRow0, g);
  Value row1 = em.add(row0, em.idx(8));
  auto [mine0, at0] = rowIsMine(row0);
  auto [mine1, at1] = rowIsMine(row1);
  // a0: (row0, k 0-1), a1: (row1, k 0-1), a2: (row0, k 8-9), a3: (row1, k 8-9).
  std::array<std::pair<Value, Value>, 4> rows = {
      std::pair{mine0, at0}, std::pair{mine1, at1}, std::pair{mine0, at0},
      std::pair{mine1, at1}};
  bool threeTerms = t.options.precision == TensorCorePrecision::f32;
  AFragments a(threeTerms ? 3 : 1);
  for (int reg = 0; reg < 4; ++reg) {
    int kPair = reg / 2; // k 0-1 or 8-9
    auto [mine, row] = rows[reg];
    SmallVector<Value> low =
        splitActivation(em, activation(mine, row, ks[2 * kPair]), threeTerms);
    SmallVector<Value> high = splitActivation(
        em, activation(mine, row, ks[2 * kPair + 1]), threeTerms);
    for (size_t term = 0; term < low.size(); ++term)
      a[term][reg] = packPair(em, low[term], high[term]);
  }
  return a;
}

/// The B fragment registers b0, b1 of `lane` for the 8 columns from `col0`:
/// weight elements (n = col0 + g, k) of expert e, zero past the edges.
std::array<Value, 2> loadB(ScalarEmitter &em, const TileOperands &t, Value lane,
                           Value e, Value k0, Value col0) {
  OpBuilder &b = em.b;
  Location loc = em.loc;
  Value g = em.div(lane, 4), q = em.rem(lane, 4);
  Value lastDepth = em.idx(t.depth - 1);
  Value twoQ = em.mul(q, em.idx(2));
  Value col = em.add(col0, g);
  Value colInside = em.ult(col, em.idx(t.numCols));
  Value colAt = em.minU(col, em.idx(t.numCols - 1));
  Value bf16Zero = arith::ConstantFloatOp::create(
      b, loc, b.getBF16Type(), APFloat::getZero(APFloat::BFloat()));
  auto weight = [&](int64_t offset) {
    Value k = em.add(k0, em.add(twoQ, em.idx(offset)));
    Value ok = em.both(colInside, em.ult(k, em.idx(t.depth)));
    Value v = tensor::ExtractOp::create(
        b, loc, t.w, ValueRange{e, colAt, em.minU(k, lastDepth)});
    return em.select(ok, v, bf16Zero);
  };
  return {packPair(em, weight(0), weight(1)),
          packPair(em, weight(8), weight(9))};
}

/// The half `k % 2` of a packed register, as f32.
Value unpackHalf(ScalarEmitter &em, Value reg, Value k) {
  OpBuilder &b = em.b;
  Value odd = arith::TruncIOp::create(
      b, em.loc, b.getI32Type(),
      arith::IndexCastOp::create(b, em.loc, b.getI64Type(), em.rem(k, 2)));
  Value shift = arith::MulIOp::create(b, em.loc, odd, em.i32(16));
  Value bits = arith::ShRUIOp::create(b, em.loc, reg, shift);
  Value half = arith::TruncIOp::create(b, em.loc, b.getI16Type(), bits);
  Value value = arith::BitcastOp::create(b, em.loc, b.getBF16Type(), half);
  return arith::ExtFOp::create(b, em.loc, b.getF32Type(), value);
}

/// `acc + A·B` for one 16×8×16 step, one activation term and the 8 columns
/// from `col0`, as the 4 accumulator registers of `lane` (whose fragments
/// are `a` and `bRegs`).
SmallVector<Value> multiplyAccumulate(ScalarEmitter &em, const TileOperands &t,
                                      Value lane, Value e, Value k0, Value col0,
                                      size_t term,
                                      const std::array<Value, 4> &a,
                                      const std::array<Value, 2> &bRegs,
                                      ValueRange acc) {
  OpBuilder &b = em.b;
  Location loc = em.loc;
  if (t.options.mode == TensorCoreMode::mma) {
    Type f32 = b.getF32Type();
    auto mma =
        WarpMMAOp::create(b, loc, f32, f32, f32, f32, a[0], a[1], a[2], a[3],
                          bRegs[0], bRegs[1], acc[0], acc[1], acc[2], acc[3]);
    return SmallVector<Value>(mma->getResults());
  }

  // Emulation: c_i += Σ_k A[m_i][k] · B[k][n_i], each element read from
  // the register of the lane the layout puts it in.
  Value g = em.div(lane, 4), q = em.rem(lane, 4);
  SmallVector<Value> result;
  for (int64_t i = 0; i < 4; ++i) {
    Value m = em.add(g, em.idx(8 * (i / 2)));
    Value n = em.add(em.mul(q, em.idx(2)), em.idx(i % 2));
    auto loop = scf::ForOp::create(
        b, loc, em.idx(0), em.idx(kTileDepth), em.idx(1), ValueRange{acc[i]},
        [&](OpBuilder &nb, Location nloc, Value k, ValueRange args) {
          ScalarEmitter in{nb, nloc};
          Value kInPair = in.div(in.rem(k, 8), 2); // (k % 8) / 2
          Value kHalf = in.div(k, 8);              // 0 for k < 8
          // A[m][k]: lane 4·(m % 8) + (k % 8)/2, register m/8 + 2·(k/8).
          Value laneA = in.add(in.mul(in.rem(m, 8), in.idx(4)), kInPair);
          Value regA = in.add(in.div(m, 8), in.mul(kHalf, in.idx(2)));
          const std::array<Value, 4> theirA = loadA(in, t, laneA, e, k0)[term];
          Value aValue = unpackHalf(
              in, in.pick({theirA[0], theirA[1], theirA[2], theirA[3]}, regA),
              k);
          // B[k][n]: lane 4·n + (k % 8)/2, register k/8.
          Value laneB = in.add(in.mul(n, in.idx(4)), kInPair);
          std::array<Value, 2> theirB = loadB(in, t, laneB, e, k0, col0);
          Value bValue =
              unpackHalf(in, in.pick({theirB[0], theirB[1]}, kHalf), k);
          Value sum = arith::AddFOp::create(
              nb, nloc, args[0],
              arith::MulFOp::create(nb, nloc, aValue, bValue));
          scf::YieldOp::create(nb, nloc, ValueRange{sum});
        });
    result.push_back(loop.getResult(0));
  }
  return result;
}

/// The next expert after `e` among the tile's rows (E if none): the rows'
/// experts are non-decreasing, so the smallest one above e.
Value nextExpertOfTile(ScalarEmitter &em, const TileOperands &t, Value e,
                       int64_t numExperts) {
  Value next = em.idx(numExperts);
  Value lastRow = arith::SubIOp::create(em.b, em.loc, t.numRows, em.idx(1));
  for (int64_t r = 0; r < kTileRows; ++r) {
    Value row = em.minU(em.add(t.tileRow0, em.idx(r)), lastRow);
    Value expert =
        tensor::ExtractOp::create(em.b, em.loc, t.expertOfRow, ValueRange{row});
    Value above = em.cmp(arith::CmpIPredicate::ugt, expert, e);
    next = em.select(above, em.minU(expert, next), next);
  }
  return next;
}

} // namespace

TensorCoreProduct
mlir::moe::buildTensorCoreMatmul(OpBuilder &b, Location loc, Value lhs, Value w,
                                 Value expertOfRow, int64_t numExperts,
                                 const TensorCoreOptions &options) {
  MLIRContext *ctx = b.getContext();
  auto wType = cast<RankedTensorType>(w.getType());
  int64_t numCols = wType.getDimSize(1), depth = wType.getDimSize(2);
  constexpr int64_t warpCols = kTileCols * kColTilesPerWarp;
  constexpr int64_t numRegs = 4 * kColTilesPerWarp;
  int64_t colTiles = llvm::divideCeil(numCols, warpCols);
  int64_t depthSteps = llvm::divideCeil(depth, kTileDepth);
  ScalarEmitter em{b, loc};
  Value numRows = getDimSize(b, loc, lhs, 0);
  Value rowTiles = em.div(em.add(numRows, em.idx(kTileRows - 1)), kTileRows);
  // Expert groups per row tile: 16 (one per distinct expert a tile can
  // hold) for a few row tiles, else 1 (a warp loops over the experts).
  Value groups = em.select(em.ule(rowTiles, em.idx(kDecodeRowTiles)),
                           em.idx(kTileRows), em.idx(1));
  Value items = em.mul(em.mul(rowTiles, groups), em.idx(colTiles * kWarpSize));
  Type f32 = b.getF32Type();

  // Work item id = ((rowTile · groups + group) · colTiles + colTile) · 32 +
  // lane, a warp tile of 16 rows × warpCols columns (with groups, only the
  // rows of the tile's group-th distinct expert); its results are the
  // lane's accumulator registers, 4 per 8-column MMA tile (register 4·j + i
  // of tile j).
  SmallVector<Value> inits;
  for (int64_t i = 0; i < numRegs; ++i)
    inits.push_back(
        tensor::EmptyOp::create(b, loc, ArrayRef<OpFoldResult>{items}, f32));
  auto identity = AffineMap::getMultiDimIdentityMap(1, ctx);
  auto fragments = linalg::GenericOp::create(
      b, loc, TypeRange(ValueRange(inits)), ValueRange{}, inits,
      SmallVector<AffineMap>(numRegs, identity),
      ArrayRef<IteratorType>{IteratorType::parallel},
      [&](OpBuilder &nb, Location nloc, ValueRange) {
        ScalarEmitter in{nb, nloc};
        Value id = linalg::IndexOp::create(nb, nloc, 0);
        Value lane = in.rem(id, kWarpSize);
        Value warp = in.div(id, kWarpSize);
        Value colTile = in.rem(warp, colTiles);
        Value rowGroup = in.div(warp, colTiles);
        Value group = arith::RemUIOp::create(nb, nloc, rowGroup, groups);
        Value rowTile = arith::DivUIOp::create(nb, nloc, rowGroup, groups);
        TileOperands t{lhs,
                       w,
                       expertOfRow,
                       numRows,
                       numCols,
                       depth,
                       in.mul(rowTile, in.idx(kTileRows)),
                       in.mul(colTile, in.idx(warpCols)),
                       options};
        SmallVector<Value> acc(numRegs, in.f32(0.0));
        Value first = tensor::ExtractOp::create(nb, nloc, expertOfRow,
                                                ValueRange{t.tileRow0});
        // With groups: the group-th distinct expert, and that one only.
        first = buildLoop(nb, nloc, in.idx(0), group, {first},
                          [&](OpBuilder &lb, Value, ValueRange e) {
                            ScalarEmitter l{lb, nloc};
                            return SmallVector<Value>{
                                nextExpertOfTile(l, t, e[0], numExperts)};
                          })
                    .front();
        Value oneExpert = in.ult(in.idx(1), groups);
        // While the expert is one (< E): the tile's rows of expert e.
        SmallVector<Type> carried(2 + numRegs, f32);
        carried[0] = carried[1] = nb.getIndexType();
        SmallVector<Value> start = {first, in.idx(0)};
        start.append(acc);
        auto loop = scf::WhileOp::create(
            nb, nloc, carried, start,
            [&](OpBuilder &cb, Location cloc, ValueRange args) {
              ScalarEmitter c{cb, cloc};
              Value more = c.both(
                  c.ult(args[0], c.idx(numExperts)),
                  arith::OrIOp::create(
                      cb, cloc,
                      arith::XOrIOp::create(cb, cloc, oneExpert,
                                            arith::ConstantIntOp::create(
                                                cb, cloc, cb.getI1Type(), 1)),
                      c.eq(args[1], c.idx(0))));
              scf::ConditionOp::create(cb, cloc, more, args);
            },
            [&](OpBuilder &bb, Location bloc, ValueRange args) {
              ScalarEmitter body{bb, bloc};
              Value e = args[0];
              SmallVector<Value> zeros(numRegs, body.f32(0.0));
              auto steps = scf::ForOp::create(
                  bb, bloc, body.idx(0), body.idx(depthSteps), body.idx(1),
                  zeros,
                  [&](OpBuilder &kb, Location kloc, Value step,
                      ValueRange sums) {
                    ScalarEmitter k{kb, kloc};
                    Value k0 = k.mul(step, k.idx(kTileDepth));
                    AFragments a = loadA(k, t, lane, e, k0);
                    SmallVector<Value> col0s;
                    SmallVector<std::array<Value, 2>> bRegs;
                    for (int64_t j = 0; j < kColTilesPerWarp; ++j) {
                      col0s.push_back(k.add(t.tileCol0, k.idx(j * kTileCols)));
                      bRegs.push_back(loadB(k, t, lane, e, k0, col0s.back()));
                    }
                    // The lo, mid and hi terms in turn into each tile.
                    SmallVector<Value> d(sums);
                    for (size_t term = a.size(); term-- > 0;)
                      for (int64_t j = 0; j < kColTilesPerWarp; ++j) {
                        SmallVector<Value> tileAcc = multiplyAccumulate(
                            k, t, lane, e, k0, col0s[j], term, a[term],
                            bRegs[j], ValueRange(d).slice(4 * j, 4));
                        std::copy(tileAcc.begin(), tileAcc.end(),
                                  d.begin() + 4 * j);
                      }
                    scf::YieldOp::create(kb, kloc, d);
                  });
              // Each accumulator register keeps the sums of its row's expert
              // (register i of every tile: row g + 8·(i / 2)).
              Value g = body.div(lane, 4);
              Value lastRow =
                  arith::SubIOp::create(bb, bloc, numRows, body.idx(1));
              std::array<Value, 2> rowIsMine;
              for (int64_t half = 0; half < 2; ++half) {
                Value row =
                    body.add(t.tileRow0, body.add(g, body.idx(8 * half)));
                Value expert = tensor::ExtractOp::create(
                    bb, bloc, expertOfRow, ValueRange{body.minU(row, lastRow)});
                rowIsMine[half] =
                    body.both(body.ult(row, numRows), body.eq(expert, e));
              }
              SmallVector<Value> next;
              next.push_back(nextExpertOfTile(body, t, e, numExperts));
              next.push_back(body.add(args[1], body.idx(1)));
              for (int64_t r = 0; r < numRegs; ++r)
                next.push_back(body.select(rowIsMine[(r % 4) / 2],
                                           steps.getResult(r), args[2 + r]));
              scf::YieldOp::create(bb, bloc, next);
            });
        linalg::YieldOp::create(nb, nloc, loop.getResults().drop_front(2));
      });

  TensorCoreProduct product;
  product.registers.assign(fragments.getResults().begin(),
                           fragments.getResults().end());
  product.groups = groups;
  product.expertOfRow = expertOfRow;
  product.numRows = numRows;
  product.numCols = numCols;
  return product;
}

// Element (r, n) is register 4·j + 2·((r%16)/8) + n%2, j = (n % warpCols) /
// 8, of lane 4·(r%8) + (n%8)/2 in warp tile (r/16, n/warpCols); one load,
// chosen by a switch on the register.
Value TensorCoreProduct::read(OpBuilder &nb, Location nloc, Value r,
                              Value n) const {
  constexpr int64_t warpCols = kTileCols * kColTilesPerWarp;
  constexpr int64_t numRegs = 4 * kColTilesPerWarp;
  int64_t colTiles = llvm::divideCeil(numCols, warpCols);
  Type f32 = nb.getF32Type();
  ScalarEmitter in{nb, nloc};
  // With groups, the row's is the group of its expert's rank
  // among the tile's distinct experts (rows are expert-sorted:
  // the expert changes between rows before it).
  Value rowTile = in.div(r, kTileRows);
  Value tileRow0 = in.mul(rowTile, in.idx(kTileRows));
  Value grouped = in.ult(in.idx(1), groups);
  Value rankFrom = in.add(tileRow0, in.idx(1));
  Value rank =
      buildLoop(nb, nloc, rankFrom,
                in.select(grouped, in.add(r, in.idx(1)), rankFrom), {in.idx(0)},
                [&](OpBuilder &lb, Value row, ValueRange n) {
                  ScalarEmitter l{lb, nloc};
                  Value here = tensor::ExtractOp::create(lb, nloc, expertOfRow,
                                                         ValueRange{row});
                  Value before = tensor::ExtractOp::create(
                      lb, nloc, expertOfRow, ValueRange{l.sub(row, l.idx(1))});
                  Value change =
                      l.select(l.cmp(arith::CmpIPredicate::ne, here, before),
                               l.idx(1), l.idx(0));
                  return SmallVector<Value>{l.add(n[0], change)};
                })
          .front();
  Value group = in.select(grouped, rank, in.idx(0));
  Value tile =
      in.add(in.mul(in.add(in.mul(rowTile, groups), group), in.idx(colTiles)),
             in.div(n, warpCols));
  Value lane =
      in.add(in.mul(in.rem(r, 8), in.idx(4)), in.div(in.rem(n, kTileCols), 2));
  Value id = in.add(in.mul(tile, in.idx(kWarpSize)), lane);
  Value j = in.div(in.rem(n, warpCols), kTileCols);
  Value reg = in.add(
      in.mul(j, in.idx(4)),
      in.add(in.mul(in.div(in.rem(r, kTileRows), 8), in.idx(2)), in.rem(n, 2)));
  SmallVector<int64_t> cases;
  for (int64_t c = 1; c < numRegs; ++c)
    cases.push_back(c);
  auto pick = scf::IndexSwitchOp::create(nb, nloc, TypeRange{f32}, reg, cases,
                                         cases.size());
  auto fill = [&](Region &region, Value result) {
    OpBuilder::InsertionGuard guard(nb);
    nb.setInsertionPointToStart(&region.emplaceBlock());
    Value v = tensor::ExtractOp::create(nb, nloc, result, ValueRange{id});
    scf::YieldOp::create(nb, nloc, v);
  };
  fill(pick.getDefaultRegion(), registers[0]);
  for (int64_t c = 1; c < numRegs; ++c)
    fill(pick.getCaseRegions()[c - 1], registers[c]);
  return pick.getResult(0);
}
