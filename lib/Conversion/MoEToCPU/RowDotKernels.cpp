//===- RowDotKernels.cpp - vectorised row-dot tiles for the CPU ----------===//

#include "RowDotKernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::cpu;

Value cpu::indexConstant(OpBuilder &b, Location loc, int64_t value) {
  return arith::ConstantIndexOp::create(b, loc, value);
}

Value cpu::buildPrefixMask(OpBuilder &b, Location loc, int64_t vw,
                          int64_t count) {
  SmallVector<bool> lanes(vw, false);
  for (int64_t i = 0; i < count; ++i)
    lanes[i] = true;
  auto type = VectorType::get({vw}, b.getI1Type());
  return arith::ConstantOp::create(b, loc,
                                   DenseElementsAttr::get(type, lanes));
}

/// bf16 -> f32 is exact: the bf16 bits are the high half of the f32 bits.
/// Widening through integers keeps it two vector instructions on CPUs
/// without native bf16 conversions.
static Value widenBF16(OpBuilder &b, Location loc, Value v) {
  auto type = cast<VectorType>(v.getType());
  auto i16 = VectorType::get(type.getShape(), b.getI16Type());
  auto i32 = VectorType::get(type.getShape(), b.getI32Type());
  auto f32 = VectorType::get(type.getShape(), b.getF32Type());
  Value bits = arith::BitcastOp::create(b, loc, i16, v);
  Value wide = arith::ExtUIOp::create(b, loc, i32, bits);
  Value sixteen = arith::ConstantOp::create(
      b, loc, DenseElementsAttr::get(i32, b.getI32IntegerAttr(16)));
  Value shifted = arith::ShLIOp::create(b, loc, wide, sixteen);
  return arith::BitcastOp::create(b, loc, f32, shifted);
}

Value cpu::loadRowVector(OpBuilder &b, Location loc, const RowRef &row,
                         Value k, int64_t vw, Value mask) {
  auto memrefType = cast<MemRefType>(row.buffer.getType());
  Type element = memrefType.getElementType();
  auto vecType = VectorType::get({vw}, element);
  SmallVector<Value> indices(row.prefix.begin(), row.prefix.end());
  indices.push_back(k);
  Value v;
  if (mask) {
    Value zero = arith::ConstantOp::create(
        b, loc, DenseElementsAttr::get(vecType, b.getZeroAttr(element)));
    v = vector::MaskedLoadOp::create(b, loc, vecType, row.buffer, indices,
                                     mask, zero);
  } else {
    v = vector::LoadOp::create(b, loc, vecType, row.buffer, indices);
  }
  if (element.isF32())
    return v;
  if (element.isBF16())
    return widenBF16(b, loc, v);
  return arith::ExtFOp::create(b, loc, VectorType::get({vw}, b.getF32Type()),
                               v);
}

SmallVector<Value> cpu::buildDotTile(OpBuilder &b, Location loc,
                                     ArrayRef<RowRef> aRows,
                                     ArrayRef<RowRef> bRows, int64_t depth,
                                     int64_t vw) {
  auto accType = VectorType::get({vw}, b.getF32Type());
  Value zero = arith::ConstantOp::create(
      b, loc, DenseElementsAttr::get(accType, b.getF32FloatAttr(0.0f)));
  size_t numAcc = aRows.size() * bRows.size();
  SmallVector<Value> accs(numAcc, zero);

  // One vw-wide step at k: every a row loaded once, every b row once.
  auto step = [&](OpBuilder &sb, Location sloc, Value k, Value mask,
                  ValueRange in) {
    SmallVector<Value> as;
    for (const RowRef &a : aRows)
      as.push_back(loadRowVector(sb, sloc, a, k, vw, mask));
    SmallVector<Value> out(in.begin(), in.end());
    for (auto [j, bRow] : llvm::enumerate(bRows)) {
      Value w = loadRowVector(sb, sloc, bRow, k, vw, mask);
      for (size_t i = 0; i < aRows.size(); ++i) {
        Value &acc = out[i * bRows.size() + j];
        acc = vector::FMAOp::create(sb, sloc, as[i], w, acc);
      }
    }
    return out;
  };

  int64_t mainDepth = depth / vw * vw;
  if (mainDepth > 0) {
    auto loop = scf::ForOp::create(
        b, loc, indexConstant(b, loc, 0), indexConstant(b, loc, mainDepth),
        indexConstant(b, loc, vw), accs,
        [&](OpBuilder &lb, Location lloc, Value k, ValueRange iter) {
          scf::YieldOp::create(lb, lloc, step(lb, lloc, k, Value(), iter));
        });
    accs.assign(loop.getResults().begin(), loop.getResults().end());
  }
  if (int64_t tail = depth - mainDepth) {
    Value mask = buildPrefixMask(b, loc, vw, tail);
    accs = step(b, loc, indexConstant(b, loc, mainDepth), mask, accs);
  }

  SmallVector<Value> dots;
  for (Value acc : accs)
    dots.push_back(
        vector::ReductionOp::create(b, loc, vector::CombiningKind::ADD, acc));
  return dots;
}

void cpu::buildRowTiles(
    OpBuilder &b, Location loc, Value lo, Value hi, int64_t tile,
    function_ref<void(OpBuilder &, Location, Value, int64_t)> body) {
  Value tileV = indexConstant(b, loc, tile);
  Value span = arith::SubIOp::create(b, loc, hi, lo);
  Value full = arith::MulIOp::create(
      b, loc, arith::DivUIOp::create(b, loc, span, tileV), tileV);
  Value fullEnd = arith::AddIOp::create(b, loc, lo, full);
  scf::ForOp::create(b, loc, lo, fullEnd, tileV, ValueRange{},
                     [&](OpBuilder &lb, Location lloc, Value m, ValueRange) {
                       body(lb, lloc, m, tile);
                       scf::YieldOp::create(lb, lloc);
                     });
  if (tile == 1)
    return;
  Value rem = arith::SubIOp::create(b, loc, span, full);
  SmallVector<int64_t> cases;
  for (int64_t c = 1; c < tile; ++c)
    cases.push_back(c);
  auto sw = scf::IndexSwitchOp::create(b, loc, TypeRange{}, rem, cases,
                                       cases.size());
  for (auto [i, c] : llvm::enumerate(cases)) {
    Block &block = sw.getCaseRegions()[i].emplaceBlock();
    OpBuilder cb = OpBuilder::atBlockEnd(&block);
    body(cb, loc, fullEnd, c);
    scf::YieldOp::create(cb, loc);
  }
  Block &defaultBlock = sw.getDefaultRegion().emplaceBlock();
  OpBuilder db = OpBuilder::atBlockEnd(&defaultBlock);
  scf::YieldOp::create(db, loc);
}

void cpu::buildColumnTiles(
    OpBuilder &b, Location loc, Value lo, Value hi, int64_t tile, int64_t tail,
    function_ref<void(OpBuilder &, Location, Value, int64_t)> body) {
  Value tileV = indexConstant(b, loc, tile);
  Value span = arith::SubIOp::create(b, loc, hi, lo);
  Value full = arith::MulIOp::create(
      b, loc, arith::DivUIOp::create(b, loc, span, tileV), tileV);
  Value fullEnd = arith::AddIOp::create(b, loc, lo, full);
  scf::ForOp::create(b, loc, lo, fullEnd, tileV, ValueRange{},
                     [&](OpBuilder &lb, Location lloc, Value n, ValueRange) {
                       body(lb, lloc, n, tile);
                       scf::YieldOp::create(lb, lloc);
                     });
  if (tail == 0)
    return;
  Value hasTail = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult,
                                        fullEnd, hi);
  scf::IfOp::create(b, loc, hasTail, [&](OpBuilder &tb, Location tloc) {
    body(tb, tloc, fullEnd, tail);
    scf::YieldOp::create(tb, tloc);
  });
}

void cpu::buildParallelLoop(
    OpBuilder &b, Location loc, ValueRange upperBounds,
    function_ref<void(OpBuilder &, Location, ValueRange)> body) {
  // Constant bounds print (and fold) as static sizes.
  SmallVector<OpFoldResult> ubs = getAsOpFoldResult(upperBounds);
  scf::ForallOp::create(b, loc, ubs, ValueRange{}, std::nullopt,
                        [&](OpBuilder &fb, Location floc, ValueRange ivs) {
                          body(fb, floc, ivs);
                          scf::InParallelOp::create(fb, floc);
                        });
}

Value cpu::readBuffer(OpBuilder &b, Location loc, Value tensor) {
  auto type = cast<RankedTensorType>(tensor.getType());
  auto memrefType = MemRefType::get(type.getShape(), type.getElementType());
  return bufferization::ToBufferOp::create(b, loc, memrefType, tensor,
                                           /*read_only=*/true);
}

Value cpu::allocBufferLike(OpBuilder &b, Location loc, Value like) {
  auto type = cast<RankedTensorType>(like.getType());
  SmallVector<Value> dynSizes;
  for (int64_t d = 0; d < type.getRank(); ++d)
    if (type.isDynamicDim(d))
      dynSizes.push_back(tensor::DimOp::create(b, loc, like, d));
  return memref::AllocOp::create(
      b, loc, MemRefType::get(type.getShape(), type.getElementType()),
      dynSizes);
}

Value cpu::bufferToTensor(OpBuilder &b, Location loc, Value buffer,
                          Type type) {
  return bufferization::ToTensorOp::create(b, loc, type, buffer,
                                           /*restrict=*/true,
                                           /*writable=*/true);
}

void cpu::buildTiledRowDots(OpBuilder &b, Location loc,
                            const CPUKernelConfig &config, Value numItems,
                            ItemRowsFn itemRows, int64_t numCols,
                            int64_t colsPerTile, int64_t depth,
                            LeftRowFn leftRow, WeightRowsFn weightRows,
                            EpilogueFn epilogue) {
  // Column blocks hold whole tiles, so only the last block has a tail.
  int64_t colBlock =
      std::max<int64_t>(1, llvm::divideCeil(config.colBlock, colsPerTile)) *
      colsPerTile;
  int64_t numColBlocks = llvm::divideCeil(numCols, colBlock);
  Value numBlocks = indexConstant(b, loc, numColBlocks);
  buildParallelLoop(
      b, loc, ValueRange{numItems, numBlocks},
      [&](OpBuilder &pb, Location ploc, ValueRange ivs) {
        RowRange rows = itemRows(pb, ploc, ivs[0]);
        Value n0 = arith::MulIOp::create(pb, ploc, ivs[1],
                                         indexConstant(pb, ploc, colBlock));
        Value n1 = arith::MinUIOp::create(
            pb, ploc,
            arith::AddIOp::create(pb, ploc, n0,
                                  indexConstant(pb, ploc, colBlock)),
            indexConstant(pb, ploc, numCols));
        buildColumnTiles(
            pb, ploc, n0, n1, colsPerTile, numCols % colsPerTile,
            [&](OpBuilder &cb, Location cloc, Value n, int64_t count) {
              SmallVector<RowRef> wRows =
                  weightRows(cb, cloc, rows.expert, n, count);
              buildRowTiles(
                  cb, cloc, rows.begin, rows.end, config.rowTile,
                  [&](OpBuilder &rb, Location rloc, Value m, int64_t mCount) {
                    SmallVector<Value> rowIds;
                    SmallVector<RowRef> aRows;
                    for (int64_t i = 0; i < mCount; ++i) {
                      Value row = arith::AddIOp::create(
                          rb, rloc, m, indexConstant(rb, rloc, i));
                      rowIds.push_back(row);
                      aRows.push_back(leftRow(rb, rloc, row));
                    }
                    SmallVector<Value> dots = buildDotTile(
                        rb, rloc, aRows, wRows, depth, config.vectorWidth);
                    size_t perRow = wRows.size();
                    for (int64_t i = 0; i < mCount; ++i)
                      epilogue(rb, rloc, rowIds[i], n, count,
                               ArrayRef<Value>(dots).slice(i * perRow, perRow));
                  });
            });
      });
}
