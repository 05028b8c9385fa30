//===- Pipelines.h - registered lowering pipelines of moe layers -*- C++ -*-===//

#ifndef MOE_PIPELINES_PIPELINES_H
#define MOE_PIPELINES_PIPELINES_H

#include "mlir/Pass/PassOptions.h"

namespace mlir {
class OpPassManager;
} // namespace mlir

namespace mlir::moe {

struct CPUPipelineOptions : public PassPipelineOptions<CPUPipelineOptions> {
  PassOptions::Option<bool> emitCInterface{
      *this, "emit-c-interface",
      llvm::cl::desc("Give every public function a _mlir_ciface_ wrapper "
                     "taking memref descriptors by pointer"),
      llvm::cl::init(false)};
  PassOptions::Option<bool> runtimeAllocator{
      *this, "runtime-allocator",
      llvm::cl::desc("Allocate scratch buffers through the MoE-MLIR runtime "
                     "(_mlir_memref_to_llvm_* hooks) instead of malloc/free"),
      llvm::cl::init(false)};
};

/// moe ops on tensors -> loops over buffers (stops before the LLVM dialect).
void buildMoELowerToLoopsPipeline(OpPassManager &pm,
                                  const CPUPipelineOptions &options);

/// Buffers and loops -> the LLVM dialect.
void buildLoopsToLLVMPipeline(OpPassManager &pm,
                              const CPUPipelineOptions &options);

/// The whole CPU pipeline: `moe-lower-to-cpu`.
void buildMoELowerToCPUPipeline(OpPassManager &pm,
                                const CPUPipelineOptions &options);

void registerMoEPipelines();

} // namespace mlir::moe

#endif // MOE_PIPELINES_PIPELINES_H
