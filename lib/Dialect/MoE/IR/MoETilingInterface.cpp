//===- MoETilingInterface.cpp - TilingInterface of token-parallel moe ops -===//
//
// As IREE's LinalgExt ops do: a tile of a token-parallel op is the same op on
// `tensor.extract_slice`s of its token-indexed operands (rows [off, off + sz)
// along dim 0, every other dim whole), with the per-layer operands (weights,
// sub-keys, BatchNorm statistics, LayerNorm affines, the selection bias) taken whole. Each token
// is computed on its own, so no reduction is split and a tile's bits are the
// untiled op's. With `getResultTilePosition` and `generateResultTileValue`,
// upstream's `scf::tileConsumerAndFuseProducersUsingSCF` tiles a consumer and
// fuses its producers without custom loops.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoEDialect.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Arith/Utils/Utils.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/Dialect/Utils/StructuredOpsUtils.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/TilingInterface.h"

using namespace mlir;
using namespace mlir::moe;

SmallVector<OpOperand *> mlir::moe::getPerLayerOperands(Operation *op) {
  SmallVector<OpOperand *> whole;
  auto add = [&](MutableOperandRange range) {
    for (OpOperand &operand : range)
      whole.push_back(&operand);
  };
  if (auto linear = dyn_cast<LinearOp>(op)) {
    add(linear.getWeightMutable());
  } else if (auto route = dyn_cast<RouteOp>(op)) {
    add(route.getBiasMutable());
    add(route.getHashTableMutable());
  }
  else if (auto pk = dyn_cast<ProductKeyTopKOp>(op)) {
    add(pk.getKeys1Mutable());
    add(pk.getKeys2Mutable());
  } else if (auto rms = dyn_cast<RMSNormOp>(op)) {
    add(rms.getWeightMutable());
  } else if (auto bn = dyn_cast<BatchNormOp>(op)) {
    add(bn.getMeanMutable());
    add(bn.getVarianceMutable());
    add(bn.getScaleMutable());
    add(bn.getShiftMutable());
  } else if (auto ln = dyn_cast<LayerNormOp>(op)) {
    add(ln.getScaleMutable());
    add(ln.getShiftMutable());
  } else if (auto sne = dyn_cast<SingleNeuronExpertsOp>(op)) {
    add(sne.getExpertOutMutable());
    add(sne.getExpertInMutable());
  } else if (auto gather = dyn_cast<GatherOp>(op)) {
    add(gather.getInputMutable());
  }
  return whole;
}

/// Whether a tile slices `operand` (a token-indexed tensor).
static bool isTiledOperand(Operation *op, OpOperand &operand) {
  return isa<RankedTensorType>(operand.get().getType()) &&
         !llvm::is_contained(getPerLayerOperands(op), &operand);
}

/// The ops whose results are computed row by row from the same rows of
/// their token-indexed operands (moe.gather: slot by slot).
static bool isTokenParallel(Operation *op) {
  return isa<LinearOp, RMSNormOp, SoftcapOp, RouteOp, TopKOp, ProductKeyTopKOp,
             BatchNormOp, LayerNormOp, SingleNeuronExpertsOp, GatherOp>(op);
}

StringRef mlir::moe::whyNotTokenTileable(Operation *op) {
  if (!isTokenParallel(op))
    return "not a token-parallel op";
  // The noise of noisy gating is keyed by the (token, expert) position: a
  // tile would see its tokens renumbered from 0.
  if (auto route = dyn_cast<RouteOp>(op); route && route.isNoisy())
    return "noise keyed by token position";
  // moe.topk reduces along its last axis; rank 1 has no other.
  if (auto topk = dyn_cast<TopKOp>(op);
      topk && topk.getInput().getType().getRank() < 2)
    return "rank-1 top-k reduces along its only dim";
  for (Type type : op->getResultTypes())
    for (int64_t size : cast<RankedTensorType>(type).getShape().drop_front())
      if (ShapedType::isDynamic(size))
        return "a dynamic result dim other than dim 0";
  return "";
}

namespace {

/// The first operand of `op` that a tile slices.
Value firstTiledOperand(Operation *op) {
  for (OpOperand &operand : op->getOpOperands())
    if (isTiledOperand(op, operand))
      return operand.get();
  llvm_unreachable("every tileable moe op has a token-indexed operand");
}

/// Dim 0 of `value`, traced back through token-parallel ops and
/// destinations to where it is defined (the `tensor.empty` of the chain's
/// first init), so that no `tensor.dim` of a result of the chain is built:
/// tile-and-fuse may replace that result with the loop's, which comes later.
OpFoldResult tokenExtent(OpBuilder &b, Location loc, Value value) {
  while (Operation *def = value.getDefiningOp()) {
    if (auto empty = dyn_cast<tensor::EmptyOp>(def))
      return empty.getMixedSizes()[0];
    // A destination has the shape of its result.
    if (auto dps = dyn_cast<DestinationStyleOpInterface>(def)) {
      value = dps.getTiedOpOperand(cast<OpResult>(value))->get();
      continue;
    }
    if (!isTokenParallel(def))
      break;
    value = firstTiledOperand(def);
  }
  return tensor::getMixedSize(b, loc, value, 0);
}

/// The extent of the tiled dim: dim 0 of the first tiled operand.
OpFoldResult tiledExtent(OpBuilder &b, Operation *op) {
  return tokenExtent(b, op->getLoc(), firstTiledOperand(op));
}

/// Rows [offset, offset + size) of `value` along dim 0, every other dim whole.
tensor::ExtractSliceOp sliceRows(OpBuilder &b, Location loc, Value value,
                                 OpFoldResult offset, OpFoldResult size) {
  auto type = cast<RankedTensorType>(value.getType());
  SmallVector<OpFoldResult> offsets(type.getRank(), b.getIndexAttr(0));
  SmallVector<OpFoldResult> sizes = tensor::getMixedSizes(b, loc, value);
  SmallVector<OpFoldResult> strides(type.getRank(), b.getIndexAttr(1));
  offsets[0] = offset;
  sizes[0] = size;
  return tensor::ExtractSliceOp::create(b, loc, value, offsets, sizes, strides);
}

/// The result type of a tile of `size` rows.
RankedTensorType tileType(Type type, OpFoldResult size) {
  auto tensorType = cast<RankedTensorType>(type);
  SmallVector<int64_t> shape(tensorType.getShape());
  shape[0] = getConstantIntValue(size).value_or(ShapedType::kDynamic);
  return tensorType.clone(shape);
}

template <typename OpTy>
struct TokenTilingModel
    : public TilingInterface::ExternalModel<TokenTilingModel<OpTy>, OpTy> {
  SmallVector<utils::IteratorType> getLoopIteratorTypes(Operation *op) const {
    return {utils::IteratorType::parallel};
  }

  SmallVector<Range> getIterationDomain(Operation *op, OpBuilder &b) const {
    return {Range{b.getIndexAttr(0), tiledExtent(b, op), b.getIndexAttr(1)}};
  }

  FailureOr<TilingResult>
  getTiledImplementation(Operation *op, OpBuilder &b,
                         ArrayRef<OpFoldResult> offsets,
                         ArrayRef<OpFoldResult> sizes) const {
    if (offsets.size() != 1 || sizes.size() != 1 ||
        !whyNotTokenTileable(op).empty())
      return failure();
    Location loc = op->getLoc();
    TilingResult result;
    SmallVector<Value> operands;
    for (OpOperand &operand : op->getOpOperands()) {
      if (!isTiledOperand(op, operand)) {
        operands.push_back(operand.get());
        continue;
      }
      auto slice = sliceRows(b, loc, operand.get(), offsets[0], sizes[0]);
      result.generatedSlices.push_back(slice);
      operands.push_back(slice);
    }
    SmallVector<Type> resultTypes;
    for (Type type : op->getResultTypes())
      resultTypes.push_back(tileType(type, sizes[0]));
    Operation *tiled = mlir::clone(b, op, resultTypes, operands);
    result.tiledOps.push_back(tiled);
    llvm::append_range(result.tiledValues, tiled->getResults());
    return result;
  }

  LogicalResult
  getResultTilePosition(Operation *op, OpBuilder &b, unsigned resultNumber,
                        ArrayRef<OpFoldResult> offsets,
                        ArrayRef<OpFoldResult> sizes,
                        SmallVector<OpFoldResult> &resultOffsets,
                        SmallVector<OpFoldResult> &resultSizes) const {
    if (offsets.size() != 1 || sizes.size() != 1 ||
        !whyNotTokenTileable(op).empty())
      return failure();
    auto type = cast<RankedTensorType>(op->getResult(resultNumber).getType());
    resultOffsets.assign(type.getRank(), b.getIndexAttr(0));
    resultOffsets[0] = offsets[0];
    resultSizes.clear();
    resultSizes.push_back(sizes[0]);
    for (int64_t size : type.getShape().drop_front())
      resultSizes.push_back(b.getIndexAttr(size));
    return success();
  }

  LogicalResult getIterationDomainTileFromResultTile(
      Operation *op, OpBuilder &b, unsigned resultNumber,
      ArrayRef<OpFoldResult> offsets, ArrayRef<OpFoldResult> sizes,
      SmallVectorImpl<OpFoldResult> &iterDomainOffsets,
      SmallVectorImpl<OpFoldResult> &iterDomainSizes) const {
    // Only whole rows of the result are a tile of the iteration space.
    auto type = cast<RankedTensorType>(op->getResult(resultNumber).getType());
    if (offsets.size() != static_cast<size_t>(type.getRank()) ||
        sizes.size() != offsets.size())
      return failure();
    for (int64_t d = 1; d < type.getRank(); ++d)
      if (!isConstantIntValue(offsets[d], 0) ||
          !isConstantIntValue(sizes[d], type.getDimSize(d)))
        return failure();
    iterDomainOffsets.assign({offsets[0]});
    iterDomainSizes.assign({sizes[0]});
    return success();
  }

  FailureOr<TilingResult>
  generateResultTileValue(Operation *op, OpBuilder &b, unsigned resultNumber,
                          ArrayRef<OpFoldResult> offsets,
                          ArrayRef<OpFoldResult> sizes) const {
    SmallVector<OpFoldResult> tileOffsets, tileSizes;
    if (failed(getIterationDomainTileFromResultTile(
            op, b, resultNumber, offsets, sizes, tileOffsets, tileSizes)))
      return failure();
    FailureOr<TilingResult> tile =
        getTiledImplementation(op, b, tileOffsets, tileSizes);
    if (failed(tile))
      return failure();
    // The fused value is the first (the only) one.
    tile->tiledValues = {tile->tiledValues[resultNumber]};
    return tile;
  }
};

/// The result shapes of the token-parallel ops without destinations, which
/// the tiling driver needs to create the loop's destination tensors.
template <typename OpTy>
struct TokenShapeModel : public ReifyRankedShapedTypeOpInterface::ExternalModel<
                             TokenShapeModel<OpTy>, OpTy> {
  LogicalResult
  reifyResultShapes(Operation *op, OpBuilder &b,
                    ReifiedRankedShapedTypeDims &reifiedReturnShapes) const {
    OpFoldResult rows = tiledExtent(b, op);
    for (Type type : op->getResultTypes()) {
      auto tensorType = cast<RankedTensorType>(type);
      SmallVector<OpFoldResult> shape = {rows};
      for (int64_t size : tensorType.getShape().drop_front()) {
        if (ShapedType::isDynamic(size))
          return failure();
        shape.push_back(b.getIndexAttr(size));
      }
      reifiedReturnShapes.push_back(std::move(shape));
    }
    return success();
  }
};

} // namespace

void mlir::moe::attachTilingInterfaces(MLIRContext *ctx) {
  LinearOp::attachInterface<TokenTilingModel<LinearOp>>(*ctx);
  RouteOp::attachInterface<TokenTilingModel<RouteOp>>(*ctx);
  TopKOp::attachInterface<TokenTilingModel<TopKOp>>(*ctx);
  ProductKeyTopKOp::attachInterface<TokenTilingModel<ProductKeyTopKOp>>(*ctx);
  BatchNormOp::attachInterface<TokenTilingModel<BatchNormOp>>(*ctx);
  LayerNormOp::attachInterface<TokenTilingModel<LayerNormOp>>(*ctx);
  SingleNeuronExpertsOp::attachInterface<
      TokenTilingModel<SingleNeuronExpertsOp>>(*ctx);
  GatherOp::attachInterface<TokenTilingModel<GatherOp>>(*ctx);
  RouteOp::attachInterface<TokenShapeModel<RouteOp>>(*ctx);
  BatchNormOp::attachInterface<TokenShapeModel<BatchNormOp>>(*ctx);
  LayerNormOp::attachInterface<TokenShapeModel<LayerNormOp>>(*ctx);
  SoftcapOp::attachInterface<TokenTilingModel<SoftcapOp>>(*ctx);
  SoftcapOp::attachInterface<TokenShapeModel<SoftcapOp>>(*ctx);
  RMSNormOp::attachInterface<TokenTilingModel<RMSNormOp>>(*ctx);
  RMSNormOp::attachInterface<TokenShapeModel<RMSNormOp>>(*ctx);
}
