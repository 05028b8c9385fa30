//===- RowDotKernels.cpp - vectorised row-dot tiles for the CPU ----------===//

#include "RowDotKernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
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
  return arith::ConstantOp::create(b, loc, DenseElementsAttr::get(type, lanes));
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

Value cpu::loadRowVector(OpBuilder &b, Location loc, const RowRef &row, Value k,
                         int64_t vw, Value mask) {
  auto memrefType = cast<MemRefType>(row.buffer.getType());
  Type element = memrefType.getElementType();
  auto vecType = VectorType::get({vw}, element);
  SmallVector<Value> indices(row.prefix.begin(), row.prefix.end());
  indices.push_back(k);
  Value v;
  if (mask) {
    Value zero = arith::ConstantOp::create(
        b, loc, DenseElementsAttr::get(vecType, b.getZeroAttr(element)));
    v = vector::MaskedLoadOp::create(b, loc, vecType, row.buffer, indices, mask,
                                     zero);
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

Value cpu::loadRowPrefix(OpBuilder &b, Location loc, const RowRef &row,
                           Value k, int64_t vw, int64_t lanes) {
  if (lanes >= vw)
    return loadRowVector(b, loc, row, k, vw);
  Type element = cast<MemRefType>(row.buffer.getType()).getElementType();
  if (element.getIntOrFloatBitWidth() != 16)
    return loadRowVector(b, loc, row, k, vw,
                         buildPrefixMask(b, loc, vw, lanes));
  auto bitsType = VectorType::get({vw}, b.getI16Type());
  Value bits = arith::ConstantOp::create(
      b, loc, DenseElementsAttr::get(bitsType, b.getI16IntegerAttr(0)));
  for (int64_t l = 0; l < lanes; ++l) {
    SmallVector<Value> indices(row.prefix.begin(), row.prefix.end());
    indices.push_back(
        arith::AddIOp::create(b, loc, k, indexConstant(b, loc, l)));
    Value e = memref::LoadOp::create(b, loc, row.buffer, indices);
    Value eBits = arith::BitcastOp::create(b, loc, b.getI16Type(), e);
    bits = vector::InsertOp::create(b, loc, eBits, bits, ArrayRef<int64_t>{l});
  }
  Value half = arith::BitcastOp::create(
      b, loc, VectorType::get({vw}, element), bits);
  if (element.isBF16())
    return widenBF16(b, loc, half);
  return arith::ExtFOp::create(b, loc, VectorType::get({vw}, b.getF32Type()),
                               half);
}

SmallVector<Value> cpu::buildDotAccumulate(OpBuilder &b, Location loc,
                                           ArrayRef<RowRef> aRows,
                                           ArrayRef<RowRef> bRows, Value kBegin,
                                           int64_t depth, int64_t vw,
                                           ValueRange accsIn) {
  SmallVector<Value> accs(accsIn.begin(), accsIn.end());
  if (accs.empty()) {
    auto accType = VectorType::get({vw}, b.getF32Type());
    Value zero = arith::ConstantOp::create(
        b, loc, DenseElementsAttr::get(accType, b.getF32FloatAttr(0.0f)));
    accs.assign(aRows.size() * bRows.size(), zero);
  }

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
  Value mainEnd =
      arith::AddIOp::create(b, loc, kBegin, indexConstant(b, loc, mainDepth));
  if (mainDepth > 0) {
    auto loop = scf::ForOp::create(
        b, loc, kBegin, mainEnd, indexConstant(b, loc, vw), accs,
        [&](OpBuilder &lb, Location lloc, Value k, ValueRange iter) {
          scf::YieldOp::create(lb, lloc, step(lb, lloc, k, Value(), iter));
        });
    accs.assign(loop.getResults().begin(), loop.getResults().end());
  }
  if (int64_t tail = depth - mainDepth) {
    Value mask = buildPrefixMask(b, loc, vw, tail);
    accs = step(b, loc, mainEnd, mask, accs);
  }
  return accs;
}

SmallVector<Value> cpu::reduceAccumulators(OpBuilder &b, Location loc,
                                           ValueRange accs) {
  SmallVector<Value> dots;
  for (Value acc : accs)
    dots.push_back(
        vector::ReductionOp::create(b, loc, vector::CombiningKind::ADD, acc));
  return dots;
}

SmallVector<Value> cpu::buildDotTile(OpBuilder &b, Location loc,
                                     ArrayRef<RowRef> aRows,
                                     ArrayRef<RowRef> bRows, int64_t depth,
                                     int64_t vw) {
  return reduceAccumulators(b, loc,
                            buildDotAccumulate(b, loc, aRows, bRows,
                                               indexConstant(b, loc, 0), depth,
                                               vw, ValueRange{}));
}

/// `body(n, tile)` for n in [lo, lo + full) step tile, full the largest
/// multiple of tile within [lo, hi); returns (span - full, lo + full).
static std::pair<Value, Value> buildWholeTiles(
    OpBuilder &b, Location loc, Value lo, Value hi, int64_t tile,
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
  return {arith::SubIOp::create(b, loc, span, full), fullEnd};
}

void cpu::buildRowTiles(
    OpBuilder &b, Location loc, Value lo, Value hi, int64_t tile,
    function_ref<void(OpBuilder &, Location, Value, int64_t)> body) {
  Value rem, fullEnd;
  std::tie(rem, fullEnd) = buildWholeTiles(b, loc, lo, hi, tile, body);
  if (tile == 1)
    return;
  SmallVector<int64_t> cases;
  for (int64_t c = 1; c < tile; ++c)
    cases.push_back(c);
  auto sw =
      scf::IndexSwitchOp::create(b, loc, TypeRange{}, rem, cases, cases.size());
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

void cpu::buildLeftRowTiles(
    OpBuilder &b, Location loc, Value lo, Value hi, int64_t tile,
    function_ref<RowRef(OpBuilder &, Location, Value)> leftRow,
    function_ref<void(OpBuilder &, Location, ArrayRef<Value>, ArrayRef<RowRef>)>
        body) {
  buildRowTiles(b, loc, lo, hi, tile,
                [&](OpBuilder &rb, Location rloc, Value m, int64_t count) {
                  SmallVector<Value> rowIds;
                  SmallVector<RowRef> aRows;
                  for (int64_t i = 0; i < count; ++i) {
                    Value row = arith::AddIOp::create(
                        rb, rloc, m, indexConstant(rb, rloc, i));
                    rowIds.push_back(row);
                    aRows.push_back(leftRow(rb, rloc, row));
                  }
                  body(rb, rloc, rowIds, aRows);
                });
}

void cpu::buildColumnTiles(
    OpBuilder &b, Location loc, Value lo, Value hi, int64_t tile, int64_t tail,
    function_ref<void(OpBuilder &, Location, Value, int64_t)> body) {
  Value rem, fullEnd;
  std::tie(rem, fullEnd) = buildWholeTiles(b, loc, lo, hi, tile, body);
  if (tail == 0)
    return;
  Value hasTail = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne, rem,
                                        indexConstant(b, loc, 0));
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

/// The layout of the buffer of `tensor` read in place: a unit-stride slice
/// of a tensor (a token tile of moe-tile-token-ops), or what an op wrote
/// into one (the tile's init), is a subview of the source's row-major buffer
/// at an offset known at run time; anything else has the identity layout
/// (which casts to the former, should bufferization copy the slice).
static MemRefLayoutAttrInterface inPlaceLayout(Value tensor) {
  // linalg ops (the init's fill) bufferize into their init; moe ops become
  // kernels that write fresh buffers.
  while (auto result = dyn_cast<OpResult>(tensor)) {
    auto linalgOp = dyn_cast<linalg::LinalgOp>(result.getOwner());
    if (!linalgOp)
      break;
    tensor = linalgOp.getDpsInitOperand(result.getResultNumber())->get();
  }
  auto slice = tensor.getDefiningOp<tensor::ExtractSliceOp>();
  if (!slice || !llvm::all_of(slice.getMixedStrides(), [](OpFoldResult s) {
        return isConstantIntValue(s, 1);
      }))
    return {};
  ArrayRef<int64_t> source = slice.getSourceType().getShape();
  SmallVector<int64_t> strides(source.size(), 1);
  for (int64_t d = static_cast<int64_t>(source.size()) - 2; d >= 0; --d)
    strides[d] = ShapedType::isDynamic(source[d + 1]) ||
                         ShapedType::isDynamic(strides[d + 1])
                     ? ShapedType::kDynamic
                     : source[d + 1] * strides[d + 1];
  return StridedLayoutAttr::get(tensor.getContext(), ShapedType::kDynamic,
                                strides);
}

Value cpu::readBuffer(OpBuilder &b, Location loc, Value tensor) {
  auto type = cast<RankedTensorType>(tensor.getType());
  auto memrefType = MemRefType::get(type.getShape(), type.getElementType(),
                                    inPlaceLayout(tensor));
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

Value cpu::bufferToTensor(OpBuilder &b, Location loc, Value buffer, Type type) {
  return bufferization::ToTensorOp::create(b, loc, type, buffer,
                                           /*restrict=*/true,
                                           /*writable=*/true);
}

/// Items with more rows than this take long depths in chunks.
static constexpr int64_t kChunkedMinRows = 8;

void cpu::buildTiledRowDots(OpBuilder &b, Location loc,
                            const CPUKernelConfig &config, Value numItems,
                            ItemRowsFn itemRows, int64_t numCols,
                            int64_t colsPerTile, int64_t depth,
                            LeftRowFn leftRow, WeightRowsFn weightRows,
                            EpilogueFn epilogue) {
  int64_t vw = config.vectorWidth;
  // Column blocks hold whole tiles, so only the last block has a tail.
  int64_t colBlock =
      std::max<int64_t>(1, llvm::divideCeil(config.colBlock, colsPerTile)) *
      colsPerTile;
  int64_t numColBlocks = llvm::divideCeil(numCols, colBlock);
  int64_t tilesPerBlock = colBlock / colsPerTile;
  // Depth chunks keep a chunk of every row of the item in L2 and a chunk of
  // the tile's weight rows in L1. They are whole vectors, so a row's lanes
  // accumulate in the same order whether or not the depth is chunked.
  int64_t chunk = std::max<int64_t>(1, config.depthBlock / vw) * vw;
  int64_t numFullChunks = depth / chunk, lastChunk = depth % chunk;
  bool chunked = depth > chunk;
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

        // A register tile holds rowTile x |weight rows| accumulators, the
        // rowTile left vectors and, for 16-bit weights, the widened weight
        // vector and its temporary: fewer rows where that would spill.
        SmallVector<RowRef> probe =
            weightRows(pb, ploc, rows.expert, n0, colsPerTile);
        int64_t slotsPerTile = probe.size();
        bool narrow = !cast<MemRefType>(probe.front().buffer.getType())
                           .getElementType()
                           .isF32();
        int64_t rowTile = config.rowTile;
        while (rowTile > 1 &&
               rowTile * slotsPerTile + rowTile + (narrow ? 2 : 0) >
                   config.vectorRegisters)
          --rowTile;

        // Visits every (column tile, row tile) of the item's block.
        auto forEachTile =
            [&](OpBuilder &tb, Location tloc,
                function_ref<void(OpBuilder &, Location, Value n, int64_t count,
                                  ArrayRef<RowRef> wRows, Value m,
                                  ArrayRef<Value> rowIds,
                                  ArrayRef<RowRef> aRows)>
                    fn) {
              buildColumnTiles(
                  tb, tloc, n0, n1, colsPerTile, numCols % colsPerTile,
                  [&](OpBuilder &cb, Location cloc, Value n, int64_t count) {
                    SmallVector<RowRef> wRows =
                        weightRows(cb, cloc, rows.expert, n, count);
                    buildLeftRowTiles(
                        cb, cloc, rows.begin, rows.end, rowTile, leftRow,
                        [&](OpBuilder &rb, Location rloc,
                            ArrayRef<Value> rowIds, ArrayRef<RowRef> aRows) {
                          fn(rb, rloc, n, count, wRows, rowIds.front(), rowIds,
                             aRows);
                        });
                  });
            };
        auto finish = [&](OpBuilder &fb, Location floc, Value n, int64_t count,
                          size_t perRow, ArrayRef<Value> rowIds,
                          ArrayRef<Value> dots) {
          for (auto [i, row] : llvm::enumerate(rowIds))
            epilogue(fb, floc, row, n, count, dots.slice(i * perRow, perRow));
        };

        auto wholeDepth = [&](OpBuilder &wb, Location wloc) {
          forEachTile(wb, wloc,
                      [&](OpBuilder &rb, Location rloc, Value n, int64_t count,
                          ArrayRef<RowRef> wRows, Value, ArrayRef<Value> rowIds,
                          ArrayRef<RowRef> aRows) {
                        SmallVector<Value> dots =
                            buildDotTile(rb, rloc, aRows, wRows, depth, vw);
                        finish(rb, rloc, n, count, wRows.size(), rowIds, dots);
                      });
        };
        if (!chunked) {
          wholeDepth(pb, ploc);
          return;
        }
        // Chunks pay off when many rows share the weight rows; a few rows
        // (decode) stream each weight row whole instead. Both sum the same
        // lanes in the same order, so the choice never changes a bit.
        Value numRows = arith::SubIOp::create(pb, ploc, rows.end, rows.begin);
        Value fewRows =
            arith::CmpIOp::create(pb, ploc, arith::CmpIPredicate::ule, numRows,
                                  indexConstant(pb, ploc, kChunkedMinRows));
        auto choice = scf::IfOp::create(pb, ploc, fewRows,
                                        /*withElseRegion=*/true);
        {
          OpBuilder tb = choice.getThenBodyBuilder();
          wholeDepth(tb, ploc);
        }
        OpBuilder cb = choice.getElseBodyBuilder();
        OpBuilder &pbChunked = cb;

        // partial[row - begin, slot, :]: the lane accumulators of every
        // (row, weight row) of the block between depth chunks.
        auto partialType =
            MemRefType::get({config.rowBlock, tilesPerBlock * slotsPerTile, vw},
                            pbChunked.getF32Type());
        Value partial = memref::AllocaOp::create(pbChunked, ploc, partialType);
        auto slotOf = [&](OpBuilder &sb, Location sloc, Value n, size_t j) {
          Value tile = arith::DivUIOp::create(
              sb, sloc, arith::SubIOp::create(sb, sloc, n, n0),
              indexConstant(sb, sloc, colsPerTile));
          return arith::AddIOp::create(
                     sb, sloc,
                     arith::MulIOp::create(
                         sb, sloc, tile, indexConstant(sb, sloc, slotsPerTile)),
                     indexConstant(sb, sloc, j))
              .getResult();
        };
        auto accIndices = [&](OpBuilder &sb, Location sloc, Value row, Value n,
                              size_t j) {
          return SmallVector<Value>{
              arith::SubIOp::create(sb, sloc, row, rows.begin),
              slotOf(sb, sloc, n, j), indexConstant(sb, sloc, 0)};
        };
        auto vecType = VectorType::get({vw}, pbChunked.getF32Type());
        // The saved accumulators of `rowIds` x the tile's weight rows at n,
        // row-major like the tile's.
        auto loadPartial = [&](OpBuilder &lb, Location lloc, Value n,
                               ArrayRef<Value> rowIds, size_t numWeightRows) {
          SmallVector<Value> loaded;
          for (Value row : rowIds)
            for (size_t j = 0; j < numWeightRows; ++j)
              loaded.push_back(vector::LoadOp::create(
                  lb, lloc, vecType, partial, accIndices(lb, lloc, row, n, j)));
          return loaded;
        };
        // Accumulates one depth chunk [k, k + len) into partial; the first
        // chunk starts from zero.
        auto accumulateChunk = [&](OpBuilder &kb, Location kloc, Value k,
                                   int64_t len, Value isFirst) {
          forEachTile(
              kb, kloc,
              [&](OpBuilder &rb, Location rloc, Value n, int64_t,
                  ArrayRef<RowRef> wRows, Value, ArrayRef<Value> rowIds,
                  ArrayRef<RowRef> aRows) {
                SmallVector<Type> types(rowIds.size() * wRows.size(), vecType);
                auto init = scf::IfOp::create(rb, rloc, types, isFirst,
                                              /*withElseRegion=*/true);
                {
                  OpBuilder tb = init.getThenBodyBuilder();
                  Value zero = arith::ConstantOp::create(
                      tb, rloc,
                      DenseElementsAttr::get(vecType,
                                             tb.getF32FloatAttr(0.0f)));
                  scf::YieldOp::create(tb, rloc,
                                       SmallVector<Value>(types.size(), zero));
                }
                {
                  OpBuilder eb = init.getElseBodyBuilder();
                  scf::YieldOp::create(
                      eb, rloc, loadPartial(eb, rloc, n, rowIds, wRows.size()));
                }
                SmallVector<Value> accs = buildDotAccumulate(
                    rb, rloc, aRows, wRows, k, len, vw, init.getResults());
                size_t a = 0;
                for (Value row : rowIds)
                  for (size_t j = 0; j < wRows.size(); ++j)
                    vector::StoreOp::create(rb, rloc, accs[a++], partial,
                                            accIndices(rb, rloc, row, n, j));
              });
        };
        Value zeroIdx = indexConstant(pbChunked, ploc, 0);
        scf::ForOp::create(
            pbChunked, ploc, zeroIdx,
            indexConstant(pbChunked, ploc, numFullChunks),
            indexConstant(pbChunked, ploc, 1), ValueRange{},
            [&](OpBuilder &kb, Location kloc, Value c, ValueRange) {
              Value k = arith::MulIOp::create(kb, kloc, c,
                                              indexConstant(kb, kloc, chunk));
              Value isFirst = arith::CmpIOp::create(
                  kb, kloc, arith::CmpIPredicate::eq, c, zeroIdx);
              accumulateChunk(kb, kloc, k, chunk, isFirst);
              scf::YieldOp::create(kb, kloc);
            });
        if (lastChunk)
          accumulateChunk(pbChunked, ploc,
                          indexConstant(pbChunked, ploc, numFullChunks * chunk),
                          lastChunk,
                          arith::ConstantIntOp::create(pbChunked, ploc, 0, 1));
        // The lanes of each accumulator summed in order, then the epilogue.
        forEachTile(pbChunked, ploc,
                    [&](OpBuilder &rb, Location rloc, Value n, int64_t count,
                        ArrayRef<RowRef> wRows, Value, ArrayRef<Value> rowIds,
                        ArrayRef<RowRef>) {
                      SmallVector<Value> accs =
                          loadPartial(rb, rloc, n, rowIds, wRows.size());
                      finish(rb, rloc, n, count, wRows.size(), rowIds,
                             reduceAccumulators(rb, rloc, accs));
                    });
      });
}
