//===- ConvertMoEToGPU.cpp - tensor-level GPU lowerings of moe ops --------===//

#include "GPUPatterns.h"
#include "moe/Conversion/Passes.h"

#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::moe {
#define GEN_PASS_DEF_CONVERTMOETOGPU
#include "moe/Conversion/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {
struct ConvertMoEToGPUPass
    : moe::impl::ConvertMoEToGPUBase<ConvertMoEToGPUPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateExpertsToGPUPatterns(patterns);
    populateCombineToGPUPatterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};
} // namespace
