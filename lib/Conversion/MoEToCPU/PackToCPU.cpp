//===- PackToCPU.cpp - fast CPU lowering of weight packing ----------------===//
//
// The packing functions of moe-pack-expert-weights move every expert weight
// once: [(E,) N, K] -> [(E,) ceil(N / P), K, P]. Upstream's generic lowering
// (pad, reshape, transpose, all scalar and on one thread) takes seconds per
// GB; here each (expert, column tile) is a parallel work item that loads
// vw-deep pieces of vw weight rows as vectors and transposes them in
// registers, for any element type (16-bit weights stay 16-bit).
//
//===----------------------------------------------------------------------===//

#include "FastPatterns.h"
#include "PanelKernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Utils/IndexingUtils.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::cpu;

namespace {
struct PanelPackToCPU : FastCPUPattern<linalg::PackOp> {
  using FastCPUPattern::FastCPUPattern;

  LogicalResult matchAndRewrite(linalg::PackOp op,
                                PatternRewriter &b) const override {
    auto sourceType = cast<RankedTensorType>(op.getSourceType());
    int64_t rank = sourceType.getRank();
    ArrayRef<int64_t> perm = op.getOuterDimsPerm();
    ArrayRef<int64_t> tiles = op.getStaticInnerTiles();
    if ((rank != 2 && rank != 3) || !sourceType.hasStaticShape() ||
        (!perm.empty() && !isIdentityPermutation(perm)) ||
        op.getInnerDimsPos() != ArrayRef<int64_t>{rank - 2} ||
        tiles.size() != 1 || ShapedType::isDynamic(tiles[0]))
      return b.notifyMatchFailure(op, "not a panel layout of static weights");
    int64_t vw = config.vectorWidth, tileCols = tiles[0];
    if (tileCols % vw != 0)
      return b.notifyMatchFailure(op, "tile not a multiple of the vector");
    // Padding columns are zeros (the packing functions say so); a pack
    // without a padding value has none.
    if (Value pad = op.getPaddingValue()) {
      auto constant = pad.getDefiningOp<arith::ConstantOp>();
      auto value = constant ? dyn_cast<FloatAttr>(constant.getValue())
                            : FloatAttr();
      if (!value || !value.getValue().isPosZero())
        return b.notifyMatchFailure(op, "padding is not +0.0");
    }

    Location loc = op.getLoc();
    Type element = sourceType.getElementType();
    // Elements move as integers of their width: x86 has no bf16 registers,
    // and LLVM would convert bf16 values that flow through branches with
    // library calls the kernels do not link (__truncsfbf2).
    Type bits = b.getIntegerType(element.getIntOrFloatBitWidth());
    int64_t numCols = sourceType.getDimSize(rank - 2);
    int64_t depth = sourceType.getDimSize(rank - 1);
    int64_t numTiles = llvm::divideCeil(numCols, tileCols);
    bool padded = numCols % tileCols != 0;
    Value source = readBuffer(b, loc, op.getSource());
    Value packed = allocBufferLike(b, loc, op.getDest());
    auto vecType = VectorType::get({vw}, element);
    auto bitsVecType = VectorType::get({vw}, bits);
    auto toBits = [](OpBuilder &cb, Location cloc, Type type, Value v) {
      return arith::BitcastOp::create(cb, cloc, type, v).getResult();
    };

    SmallVector<Value> bounds = {indexConstant(b, loc, numTiles)};
    if (rank == 3)
      bounds.insert(bounds.begin(),
                    indexConstant(b, loc, sourceType.getDimSize(0)));
    buildParallelLoop(b, loc, bounds, [&](OpBuilder &pb, Location ploc,
                                          ValueRange ivs) {
      SmallVector<Value> outer(ivs.drop_back());
      Value tile = ivs.back();
      Value firstCol = arith::MulIOp::create(
          pb, ploc, tile, indexConstant(pb, ploc, tileCols));
      auto sourceIndices = [&](OpBuilder &ib, Location iloc, Value col,
                               Value k) {
        SmallVector<Value> indices(outer);
        indices.append({col, k});
        return indices;
      };
      auto packedIndices = [&](Value k, Value lane) {
        SmallVector<Value> indices(outer);
        indices.append({tile, k, lane});
        return indices;
      };
      // `load()` where column `col` exists, else `zero`.
      auto guarded = [&](OpBuilder &gb, Location gloc, Value col, Value zero,
                         function_ref<Value(OpBuilder &, Location)> load) {
        if (!padded)
          return load(gb, gloc);
        Value inside = arith::CmpIOp::create(
            gb, gloc, arith::CmpIPredicate::ult, col,
            indexConstant(gb, gloc, numCols));
        return scf::IfOp::create(
                   gb, gloc, inside,
                   [&](OpBuilder &tb, Location tloc) {
                     scf::YieldOp::create(tb, tloc, load(tb, tloc));
                   },
                   [&](OpBuilder &eb, Location eloc) {
                     scf::YieldOp::create(eb, eloc, zero);
                   })
            .getResult(0);
      };

      // Whole vectors of depth: vw x vw blocks transposed in registers.
      int64_t wholeDepth = depth / vw * vw;
      Value zeroVec = arith::ConstantOp::create(
          pb, ploc, DenseElementsAttr::get(bitsVecType, pb.getZeroAttr(bits)));
      scf::ForOp::create(
          pb, ploc, indexConstant(pb, ploc, 0),
          indexConstant(pb, ploc, wholeDepth), indexConstant(pb, ploc, vw),
          ValueRange{},
          [&](OpBuilder &lb, Location lloc, Value k, ValueRange) {
            for (int64_t g = 0; g < tileCols / vw; ++g) {
              SmallVector<Value> rows;
              for (int64_t l = 0; l < vw; ++l) {
                Value col = arith::AddIOp::create(
                    lb, lloc, firstCol, indexConstant(lb, lloc, g * vw + l));
                rows.push_back(guarded(
                    lb, lloc, col, zeroVec, [&](OpBuilder &rb, Location rloc) -> Value {
                      Value v = vector::LoadOp::create(
                          rb, rloc, vecType, source,
                          sourceIndices(rb, rloc, col, k));
                      return toBits(rb, rloc, bitsVecType, v);
                    }));
              }
              transposeInRegisters(lb, lloc, rows);
              for (int64_t t = 0; t < vw; ++t)
                vector::StoreOp::create(
                    lb, lloc, toBits(lb, lloc, vecType, rows[t]), packed,
                    packedIndices(
                        arith::AddIOp::create(lb, lloc, k,
                                              indexConstant(lb, lloc, t)),
                        indexConstant(lb, lloc, g * vw)));
            }
            scf::YieldOp::create(lb, lloc);
          });
      // The depth tail: each packed row assembled lane by lane as integers
      // and stored as one vector (a scalar 16-bit float store would be
      // converted through f32).
      if (wholeDepth == depth)
        return;
      Value zero = arith::ConstantOp::create(pb, ploc, pb.getZeroAttr(bits));
      auto rowBitsType = VectorType::get({tileCols}, bits);
      Value zeroRow = arith::ConstantOp::create(
          pb, ploc, DenseElementsAttr::get(rowBitsType, pb.getZeroAttr(bits)));
      scf::ForOp::create(
          pb, ploc, indexConstant(pb, ploc, wholeDepth),
          indexConstant(pb, ploc, depth), indexConstant(pb, ploc, 1),
          ValueRange{},
          [&](OpBuilder &lb, Location lloc, Value k, ValueRange) {
            Value row = zeroRow;
            for (int64_t l = 0; l < tileCols; ++l) {
              Value col = arith::AddIOp::create(lb, lloc, firstCol,
                                                indexConstant(lb, lloc, l));
              Value v = guarded(
                  lb, lloc, col, zero, [&](OpBuilder &rb, Location rloc) -> Value {
                    Value e = memref::LoadOp::create(
                        rb, rloc, source, sourceIndices(rb, rloc, col, k));
                    return toBits(rb, rloc, bits, e);
                  });
              row = vector::InsertOp::create(lb, lloc, v, row,
                                             ArrayRef<int64_t>{l});
            }
            vector::StoreOp::create(
                lb, lloc,
                toBits(lb, lloc, VectorType::get({tileCols}, element), row),
                packed, packedIndices(k, indexConstant(lb, lloc, 0)));
            scf::YieldOp::create(lb, lloc);
          });
    });
    b.replaceOp(op, bufferToTensor(b, loc, packed, op.getDestType()));
    return success();
  }
};
} // namespace

void mlir::moe::populateFastPackPatterns(RewritePatternSet &patterns,
                                         const CPUKernelConfig &config) {
  patterns.add<PanelPackToCPU>(patterns.getContext(), config);
}
