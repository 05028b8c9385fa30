//===- TileTokenOps.cpp - routing chains fused per token tile -------------===//

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/SCF/Transforms/TileUsingInterface.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Dominance.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Interfaces/TilingInterface.h"
#include "mlir/Transforms/CSE.h"
#include "llvm/ADT/SetVector.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOETILETOKENOPS
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// The ops a routing chain ends in: what the pass tiles.
bool isChainEnd(Operation *op, bool routingOnly) {
  if (routingOnly)
    return isa<RouteOp, TopKOp>(op);
  return isa<RouteOp, TopKOp, ProductKeyTopKOp, SingleNeuronExpertsOp>(op);
}

/// Bytes of the operands a tile of `op` reads whole (its weights), or
/// nullopt when one of them has a dynamic shape.
std::optional<int64_t> perLayerOperandBytes(Operation *op) {
  int64_t bytes = 0;
  for (OpOperand *operand : getPerLayerOperands(op)) {
    auto type = cast<RankedTensorType>(operand->get().getType());
    if (!type.hasStaticShape())
      return std::nullopt;
    bytes += type.getNumElements() *
             llvm::divideCeil(type.getElementTypeBitWidth(), 8);
  }
  return bytes;
}

/// Marks, during tiling, the producers whose results are also used outside
/// the chain, and their copies in the loop (index into the originals).
constexpr StringLiteral kYieldAttr = "moe.tile_token_ops.yield";

/// Erases what tiling left unused in the loop body (slices and dims of the
/// originals) and merges the copies of a producer that was fused once per
/// result it feeds (the retrieval's ids and weights).
void cleanUpBody(RewriterBase &rewriter, scf::ForallOp loop) {
  auto eraseDead = [&] {
    for (Operation &op :
         llvm::make_early_inc_range(llvm::reverse(*loop.getBody())))
      if (isOpTriviallyDead(&op))
        rewriter.eraseOp(&op);
  };
  eraseDead();
  DominanceInfo dominance;
  eliminateCommonSubExpressions(rewriter, dominance, loop);
  eraseDead();
}

/// Adds to `loop` one shared output per result of each op of `originals`,
/// into which the loop's copy of that op (marked kYieldAttr) writes its
/// tile, and replaces the originals' uses with them.
scf::ForallOp yieldFromLoop(RewriterBase &rewriter, scf::ForallOp loop,
                            ArrayRef<Operation *> originals) {
  SmallVector<Operation *> copies(originals.size());
  loop.getBody()->walk([&](Operation *op) {
    if (auto index = op->getAttrOfType<IntegerAttr>(kYieldAttr)) {
      copies[index.getInt()] = op;
      op->removeAttr(kYieldAttr);
    }
  });
  SmallVector<Value> inits(loop.getOutputs());
  SmallVector<Value> replaced, yieldedTiles;
  rewriter.setInsertionPoint(loop);
  for (auto [original, copy] : llvm::zip_equal(originals, copies)) {
    SmallVector<Value> destinations;
    if (!copy || failed(tensor::getOrCreateDestinations(
                     rewriter, original->getLoc(), original, destinations)))
      continue;
    llvm::append_range(inits, destinations);
    llvm::append_range(replaced, original->getResults());
    llvm::append_range(yieldedTiles, copy->getResults());
  }
  if (replaced.empty())
    return loop;

  auto newLoop = scf::ForallOp::create(
      rewriter, loop.getLoc(), loop.getMixedLowerBound(),
      loop.getMixedUpperBound(), loop.getMixedStep(), inits, loop.getMapping(),
      [](OpBuilder &, Location, ValueRange) {});
  Block *body = newLoop.getBody();
  rewriter.mergeBlocks(
      loop.getBody(), body,
      body->getArguments().take_front(loop.getBody()->getNumArguments()));
  // The tile's rows, as the consumer's own results are inserted.
  auto terminator = cast<scf::InParallelOp>(body->getTerminator());
  auto first =
      cast<tensor::ParallelInsertSliceOp>(*terminator.getYieldingOps().begin());
  OpFoldResult offset = first.getMixedOffsets()[0];
  OpFoldResult size = first.getMixedSizes()[0];
  rewriter.setInsertionPointToEnd(terminator.getBody());
  for (auto [tile, shared] : llvm::zip_equal(
           yieldedTiles,
           newLoop.getRegionIterArgs().take_back(yieldedTiles.size()))) {
    auto type = cast<RankedTensorType>(tile.getType());
    SmallVector<OpFoldResult> offsets(type.getRank(), rewriter.getIndexAttr(0));
    SmallVector<OpFoldResult> sizes = {size};
    SmallVector<OpFoldResult> strides(type.getRank(), rewriter.getIndexAttr(1));
    offsets[0] = offset;
    for (int64_t dim : type.getShape().drop_front())
      sizes.push_back(rewriter.getIndexAttr(dim));
    tensor::ParallelInsertSliceOp::create(rewriter, loop.getLoc(), tile, shared,
                                          offsets, sizes, strides);
  }
  rewriter.replaceOp(loop,
                     newLoop.getResults().take_front(loop.getNumResults()));
  for (auto [original, result] : llvm::zip_equal(
           replaced, newLoop.getResults().take_back(replaced.size())))
    rewriter.replaceAllUsesWith(original, result);
  return newLoop;
}

struct MoETileTokenOpsPass
    : public moe::impl::MoETileTokenOpsBase<MoETileTokenOpsPass> {
  using Base::Base;
  void runOnOperation() override;

  /// Whether `producer` runs inside the tile loop of its consumer.
  bool isFusable(Operation *producer) const {
    // Inits: a fill, or a per-layer vector broadcast over the tokens (the
    // router's logit bias), computed tile by tile like a fill.
    if (isa<linalg::FillOp, linalg::BroadcastOp>(producer))
      return true;
    if (!whyNotTokenTileable(producer).empty())
      return false;
    std::optional<int64_t> bytes = perLayerOperandBytes(producer);
    return bytes && *bytes <= maxFusedWeightBytes;
  }
};

/// Records the ops a rewrite erases, so that chain ends fused into an
/// earlier tile loop are not visited.
struct ErasedOps : public RewriterBase::Listener {
  void notifyOperationErased(Operation *op) override { erased.insert(op); }
  llvm::DenseSet<Operation *> erased;
};

void MoETileTokenOpsPass::runOnOperation() {
  if (tokenTile <= 0) {
    getOperation()->emitError()
        << "token-tile must be positive, got " << tokenTile;
    return signalPassFailure();
  }
  SmallVector<Operation *> chainEnds;
  getOperation()->walk([&](Operation *op) {
    if (isChainEnd(op, routingOnly) && whyNotTokenTileable(op).empty() &&
        !op->getParentOfType<scf::ForallOp>())
      chainEnds.push_back(op);
  });

  ErasedOps erasedOps;
  IRRewriter rewriter(&getContext(), &erasedOps);
  // The last op of a chain first: its tile loop takes the ops before it.
  for (Operation *end : llvm::reverse(chainEnds)) {
    if (erasedOps.erased.contains(end))
      continue;

    // The chain: the end and every fusable producer reachable through
    // fusable ops. A fused producer with a user outside it is computed in
    // the loop and its full result yielded to that user.
    llvm::SetVector<Operation *> chain;
    chain.insert(end);
    for (size_t i = 0; i < chain.size(); ++i)
      for (Value operand : chain[i]->getOperands())
        if (Operation *def = operand.getDefiningOp();
            def && def->getBlock() == end->getBlock() && isFusable(def))
          chain.insert(def);
    // Decided before tiling, which adds users (the tiled clones, the loop's
    // destinations). Upstream's yieldProducerReplacement would yield each
    // result of a two-result producer from its own copy; instead the copies
    // are merged and the survivor's results yielded once (yieldFromLoop).
    SmallVector<Operation *> yielded;
    for (Operation *op : chain.getArrayRef().drop_front())
      if (llvm::any_of(op->getUsers(), [&](Operation *user) {
            return !chain.contains(user);
          })) {
        op->setAttr(kYieldAttr, rewriter.getI64IntegerAttr(yielded.size()));
        yielded.push_back(op);
      }

    scf::SCFTilingOptions tiling;
    tiling.setTileSizes({rewriter.getIndexAttr(tokenTile)});
    tiling.setLoopType(scf::SCFTilingOptions::LoopType::ForallOp);
    scf::SCFTileAndFuseOptions options;
    options.setTilingOptions(tiling);
    options.setFusionControlFn(
        [&](tensor::ExtractSliceOp, OpResult producer, bool)
            -> std::optional<scf::SCFTileAndFuseOptions::ControlFnResult> {
          if (!chain.contains(producer.getOwner()))
            return std::nullopt;
          return scf::SCFTileAndFuseOptions::ControlFnResult{};
        });

    rewriter.setInsertionPoint(end);
    FailureOr<scf::SCFTileAndFuseResult> tiled =
        scf::tileConsumerAndFuseProducersUsingSCF(
            rewriter, cast<TilingInterface>(end), options);
    if (failed(tiled) || tiled->loops.size() != 1) {
      end->emitOpError("could not be tiled along tokens");
      return signalPassFailure();
    }
    for (OpResult result : end->getResults())
      if (Value replacement = tiled->replacements.lookup(result))
        rewriter.replaceAllUsesWith(result, replacement);
    auto loop = cast<scf::ForallOp>(tiled->loops.front().getOperation());
    cleanUpBody(rewriter, loop);
    for (Operation *original : yielded)
      original->removeAttr(kYieldAttr);
    loop = yieldFromLoop(rewriter, loop, yielded);
    // The originals, now without users, in reverse order of definition.
    SmallVector<Operation *> originals = {end};
    llvm::append_range(originals, tiled->fusedProducers);
    llvm::sort(originals, [](Operation *a, Operation *b) {
      return b->isBeforeInBlock(a);
    });
    for (Operation *op : originals)
      if (op->use_empty() && isPure(op))
        rewriter.eraseOp(op);
  }
}

} // namespace
