//===- SinkIntoOutputChecks.cpp - optional outputs' work under checks -----===//
//
// A C entry point writes an optional output only under an scf.if that checks
// the caller's pointer. Once the layer is inlined, the work that only such an
// output needs can move under that check and be skipped when the caller
// passes NULL.
//
//===----------------------------------------------------------------------===//

#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Dominance.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Transforms/ControlFlowSinkUtils.h"

namespace mlir::moe {
#define GEN_PASS_DEF_SINKINTOOUTPUTCHECKS
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {
struct SinkIntoOutputChecksPass
    : moe::impl::SinkIntoOutputChecksBase<SinkIntoOutputChecksPass> {
  void runOnOperation() override {
    func::FuncOp fn = getOperation();
    SmallVector<Region *> regions;
    for (Block &block : fn.getBody())
      for (auto ifOp : block.getOps<scf::IfOp>())
        getSinglyExecutedRegionsToSink(
            cast<RegionBranchOpInterface>(ifOp.getOperation()), regions);
    DominanceInfo dominance(fn);
    controlFlowSink(
        regions, dominance,
        [](Operation *op, Region *) { return isMemoryEffectFree(op); },
        [](Operation *op, Region *region) {
          // The start of the entry block dominates every use in the region.
          op->moveBefore(&region->front(), region->front().begin());
        });
  }
};
} // namespace
