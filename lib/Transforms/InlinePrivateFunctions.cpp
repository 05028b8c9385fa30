//===- InlinePrivateFunctions.cpp - inline calls of private functions -----===//
//
// The upstream inliner with a profitability hook that accepts private callees
// only: a layer function, private behind its C entry point, is inlined there,
// while public functions stay called rather than duplicated.
//
//===----------------------------------------------------------------------===//

#include "moe/Transforms/Passes.h"

#include "mlir/Analysis/CallGraph.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Transforms/Inliner.h"

namespace mlir::moe {
#define GEN_PASS_DEF_INLINEPRIVATEFUNCTIONS
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {
struct InlinePrivateFunctionsPass
    : moe::impl::InlinePrivateFunctionsBase<InlinePrivateFunctionsPass> {
  void runOnOperation() override {
    auto isPrivateCallee = [](const Inliner::ResolvedCall &call) {
      auto callee = dyn_cast<SymbolOpInterface>(
          call.targetNode->getCallableRegion()->getParentOp());
      return callee && callee.isPrivate();
    };
    auto runPipeline = [](Pass &pass, OpPassManager &pipeline, Operation *op) {
      return cast<InlinePrivateFunctionsPass>(pass).runPipeline(pipeline, op);
    };
    // No pipeline on the callables: moe-lower-to-loops canonicalizes after.
    InlinerConfig config;
    Inliner inliner(getOperation(), getAnalysis<CallGraph>(), *this,
                    getAnalysisManager(), runPipeline, config, isPrivateCallee);
    if (failed(inliner.doInlining()))
      signalPassFailure();
  }
};
} // namespace
