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
  using Base::Base;

  void runOnOperation() override {
    TensorCoreOptions tensorCoreOptions;
    if (tensorCores == "mma")
      tensorCoreOptions.mode = TensorCoreMode::mma;
    else if (tensorCores == "emulate")
      tensorCoreOptions.mode = TensorCoreMode::emulate;
    else if (tensorCores != "none") {
      getOperation().emitError()
          << "tensor-cores must be none, mma or emulate, got '" << tensorCores
          << "'";
      return signalPassFailure();
    }
    if (mmaPrecision == "bf16")
      tensorCoreOptions.precision = TensorCorePrecision::bf16;
    else if (mmaPrecision != "f32") {
      getOperation().emitError()
          << "mma-precision must be f32 or bf16, got '" << mmaPrecision << "'";
      return signalPassFailure();
    }
    RewritePatternSet patterns(&getContext());
    populateExpertsToGPUPatterns(patterns, tensorCoreOptions);
    populateDispatchToGPUPatterns(patterns);
    populateDenseToGPUPatterns(patterns, tensorCoreOptions);
    populateCombineToGPUPatterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};
} // namespace
