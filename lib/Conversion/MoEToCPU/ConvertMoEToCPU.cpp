//===- ConvertMoEToCPU.cpp - the fast CPU lowering pass ------------------===//

#include "moe/Conversion/MoEToCPU/MoEToCPU.h"
#include "moe/Conversion/Passes.h"

#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/TargetParser/Host.h"

namespace mlir::moe {
#define GEN_PASS_DEF_CONVERTMOETOCPU
#include "moe/Conversion/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

/// The associativity of the host's level-1 data cache as Linux reports it,
/// or 0 when it does not.
static int64_t hostL1DataWays() {
  for (int index = 0; index < 8; ++index) {
    std::string dir =
        "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index);
    auto read = [&](const char *name) -> std::string {
      auto file = llvm::MemoryBuffer::getFile(dir + "/" + name,
                                              /*IsText=*/true);
      return file ? (*file)->getBuffer().trim().str() : std::string();
    };
    if (read("level") != "1" || read("type") != "Data")
      continue;
    int64_t ways = 0;
    return StringRef(read("ways_of_associativity")).getAsInteger(10, ways)
               ? 0
               : ways;
  }
  return 0;
}

CPUKernelConfig CPUKernelConfig::forTarget(const char *cpu,
                                           const char *features) {
  CPUKernelConfig config;
  StringRef cpuName = cpu ? cpu : "";
  StringRef featureString = features ? features : "";
  bool avx512 = false;
  if (cpuName.empty() || cpuName == "native") {
    llvm::StringMap<bool> host = llvm::sys::getHostCPUFeatures();
    avx512 = host.lookup("avx512f");
    if (int64_t ways = hostL1DataWays(); ways > 0)
      config.l1Ways = ways;
  }
  if (featureString.contains("+avx512f"))
    avx512 = true;
  if (featureString.contains("-avx512f"))
    avx512 = false;
  // 16 f32 lanes fill a zmm register; everything else gets 8 (ymm), which
  // SSE-only targets split in two without changing the order of any sum.
  config.vectorWidth = avx512 ? 16 : 8;
  config.vectorRegisters = avx512 ? 32 : 16;
  return config;
}

namespace {
struct ConvertMoEToCPUPass
    : moe::impl::ConvertMoEToCPUBase<ConvertMoEToCPUPass> {
  using Base::Base;

  void runOnOperation() override {
    CPUKernelConfig config = CPUKernelConfig::forTarget("native", "");
    auto override = [](int64_t option, int64_t &field) {
      if (option > 0)
        field = option;
    };
    override(vectorWidth, config.vectorWidth);
    override(rowTile, config.rowTile);
    override(colTile, config.colTile);
    override(rowBlock, config.rowBlock);
    override(colBlock, config.colBlock);
    override(tokenBlock, config.tokenBlock);
    override(depthBlock, config.depthBlock);
    override(panelRowTile, config.panelRowTile);
    override(panelColVectors, config.panelColVectors);
    override(panelDepthBlock, config.panelDepthBlock);
    override(l1Ways, config.l1Ways);
    if (expertKernel == "row-dot") {
      config.panelExperts = false;
    } else if (!expertKernel.empty() && expertKernel != "panel") {
      getOperation().emitError()
          << "expert-kernel must be panel or row-dot, got '" << expertKernel
          << "'";
      return signalPassFailure();
    }
    if (!llvm::isPowerOf2_64(config.vectorWidth)) {
      getOperation().emitError()
          << "vector-width must be a power of two, got " << config.vectorWidth;
      return signalPassFailure();
    }
    // 16 lanes are an AVX-512 target, which has 32 vector registers.
    config.vectorRegisters = config.vectorWidth >= 16 ? 32 : 16;
    RewritePatternSet patterns(&getContext());
    populateFastCPULoweringPatterns(patterns, config);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};
} // namespace
