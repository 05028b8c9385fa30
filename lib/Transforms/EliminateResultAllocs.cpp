//===- EliminateResultAllocs.cpp - kernels write into their destinations --===//
//
// Fast kernels allocate their result buffers and hand them to tensor IR with
// bufferization.to_tensor, which empty-tensor elimination cannot retarget.
// When such a result is only materialized into a caller's buffer, the
// allocation can be that buffer, and bufferization then has nothing to copy.
//
//===----------------------------------------------------------------------===//

#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/Dominance.h"

namespace mlir::moe {
#define GEN_PASS_DEF_ELIMINATERESULTALLOCS
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// The allocation whose contents `materialize` copies into its destination,
/// when the destination can take the allocation's place.
memref::AllocOp
findReplaceableAlloc(bufferization::MaterializeInDestinationOp materialize,
                     DominanceInfo &dominance) {
  Value dest = materialize.getDest();
  // restrict writable: the caller's buffer is ours to write, and no other
  // tensor aliases it; one use: nothing else reads or writes it.
  if (!isa<MemRefType>(dest.getType()) || !materialize.getRestrict() ||
      !materialize.getWritable() || !dest.hasOneUse())
    return nullptr;
  auto toTensor =
      materialize.getSource().getDefiningOp<bufferization::ToTensorOp>();
  // A second use of the tensor could write into it in place (it is
  // writable) after the kernel's result has been stored.
  if (!toTensor || !toTensor.getRestrict() || !toTensor->hasOneUse())
    return nullptr;
  auto alloc = toTensor.getBuffer().getDefiningOp<memref::AllocOp>();
  if (!alloc || alloc.getType() != dest.getType() ||
      !dominance.properlyDominates(dest, alloc))
    return nullptr;
  // The kernel must be done with the buffer when it wraps it as a tensor.
  Block *block = toTensor->getBlock();
  for (Operation *user : alloc->getUsers()) {
    if (user == toTensor)
      continue;
    Operation *ancestor = block->findAncestorOpInBlock(*user);
    if (!ancestor || !ancestor->isBeforeInBlock(toTensor))
      return nullptr;
  }
  return alloc;
}

struct EliminateResultAllocsPass
    : moe::impl::EliminateResultAllocsBase<EliminateResultAllocsPass> {
  void runOnOperation() override {
    DominanceInfo dominance(getOperation());
    SmallVector<bufferization::MaterializeInDestinationOp> materializations;
    getOperation().walk([&](bufferization::MaterializeInDestinationOp op) {
      materializations.push_back(op);
    });
    for (auto materialize : materializations) {
      memref::AllocOp alloc = findReplaceableAlloc(materialize, dominance);
      if (!alloc)
        continue;
      auto toTensor =
          materialize.getSource().getDefiningOp<bufferization::ToTensorOp>();
      alloc.getResult().replaceAllUsesWith(materialize.getDest());
      materialize.erase();
      toTensor.erase();
      alloc.erase();
    }
  }
};
} // namespace
