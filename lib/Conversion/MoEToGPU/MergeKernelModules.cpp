//===- MergeKernelModules.cpp - one gpu.module of kernels per module ------===//
//
// gpu-kernel-outlining gives every kernel its own gpu.module; one module
// holding them all is one image to compile, embed and load, and one PTX
// file to read.
//
//===----------------------------------------------------------------------===//

#include "moe/Conversion/Passes.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/SymbolTable.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEMERGEKERNELMODULES
#include "moe/Conversion/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {
struct MoEMergeKernelModulesPass
    : moe::impl::MoEMergeKernelModulesBase<MoEMergeKernelModulesPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<gpu::GPUModuleOp> modules(module.getOps<gpu::GPUModuleOp>());
    if (modules.empty())
      return;
    OpBuilder b(modules.front());
    auto merged = gpu::GPUModuleOp::create(b, module.getLoc(), moduleName);
    SymbolTable symbols(module);
    symbols.insert(merged); // renames on collision
    SymbolTable kernels(merged);
    // Kernel function -> its new reference, for the launches.
    llvm::DenseMap<Attribute, SymbolRefAttr> renamed;
    for (gpu::GPUModuleOp old : modules) {
      if (old.getTargetsAttr() || old->hasAttr("offloadingHandler")) {
        old.emitError("has a target or offloading handler already: merge "
                      "kernel modules before attaching targets");
        return signalPassFailure();
      }
      for (Operation &op : llvm::make_early_inc_range(old.getBody()->getOperations())) {
        auto symbol = dyn_cast<SymbolOpInterface>(op);
        if (!symbol)
          continue;
        auto oldRef = SymbolRefAttr::get(
            old.getNameAttr(), {FlatSymbolRefAttr::get(symbol.getNameAttr())});
        op.moveBefore(merged.getBody(), merged.getBody()->end());
        // Outlined kernels are all named after their function: name each
        // after its old module, which is unique.
        if (isa<gpu::GPUFuncOp>(op))
          symbol.setName(old.getName());
        kernels.insert(&op);
        renamed[oldRef] = SymbolRefAttr::get(
            merged.getNameAttr(),
            {FlatSymbolRefAttr::get(symbol.getNameAttr())});
      }
      old.erase();
    }
    module.walk([&](gpu::LaunchFuncOp launch) {
      auto it = renamed.find(launch.getKernel());
      if (it != renamed.end())
        launch.setKernelAttr(it->second);
    });
  }
};
} // namespace
