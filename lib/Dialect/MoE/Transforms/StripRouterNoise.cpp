//===- StripRouterNoise.cpp - drop noisy gating for inference -------------===//

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/SetVector.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOESTRIPROUTERNOISE
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {
/// Drops the noise operands of noisy routes, then erases the producers of
/// the noise (the noise projection, its init, the seed constant) that this
/// left without uses. Nothing else is touched: a greedy rewrite would also
/// fold unrelated ops and erase every other dead op of the input.
struct MoEStripRouterNoisePass
    : moe::impl::MoEStripRouterNoiseBase<MoEStripRouterNoisePass> {
  void runOnOperation() override {
    llvm::SetVector<Operation *> maybeDead;
    getOperation()->walk([&](RouteOp route) {
      if (!route.isNoisy())
        return;
      for (Value noise :
           {Value(route.getNoiseLogits()), Value(route.getSeed())})
        if (Operation *producer = noise.getDefiningOp())
          maybeDead.insert(producer);
      route.getNoiseLogitsMutable().clear();
      route.getSeedMutable().clear();
    });

    // An op erased here cannot be reinserted: its results had no uses, so it
    // defines no operand of a later candidate.
    while (!maybeDead.empty()) {
      Operation *op = maybeDead.pop_back_val();
      if (!isOpTriviallyDead(op))
        continue;
      for (Value operand : op->getOperands())
        if (Operation *producer = operand.getDefiningOp())
          maybeDead.insert(producer);
      op->erase();
    }
  }
};
} // namespace
