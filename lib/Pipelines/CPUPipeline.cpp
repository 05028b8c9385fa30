//===- CPUPipeline.cpp - moe layers to the LLVM dialect for the CPU -------===//
//
// Built in stages so that moe-compile and moe-opt run the same passes: the
// driver stops after any stage to print it.
//
//===----------------------------------------------------------------------===//

#include "moe/Pipelines/Pipelines.h"

#include "moe/Conversion/Passes.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Bufferization/Pipelines/Passes.h"
#include "mlir/Dialect/Bufferization/Transforms/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/Transforms/RequestCWrappers.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/MathExtras.h"

using namespace mlir;
using namespace mlir::moe;

void mlir::moe::buildMoEBufferizePipeline(OpPassManager &pm,
                                          StringRef target) {
  pm.addPass(createConvertMoEToLinalg());
  // Layers into their C entry points, where the results are materialized in
  // the caller's buffers: only there can their producers write into them.
  pm.addPass(createInlinePrivateFunctions());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  // Packing functions, and packed weights no kernel folded (dead unpacks
  // are gone by now).
  pm.addPass(createLowerPackUnpack());
  pm.addPass(createCanonicalizerPass());
  pm.addNestedPass<func::FuncOp>(createSinkIntoOutputChecks());
  // Results into the caller's buffers instead of copies: fresh buffers of the
  // fast kernels, then the tensor.empty inits of ops on tensors.
  pm.addNestedPass<func::FuncOp>(createEliminateResultAllocs());
  pm.addPass(bufferization::createEmptyTensorEliminationPass());

  bufferization::OneShotBufferizePassOptions bufferize;
  bufferize.bufferizeFunctionBoundaries = true;
  bufferize.functionBoundaryTypeConversion =
      bufferization::LayoutMapOption::IdentityLayoutMap;
  pm.addPass(bufferization::createOneShotBufferizePass(bufferize));
  // Drops the self-copies bufferization leaves behind.
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  // Every heap allocation of an entry point into one scratch buffer, taken
  // and checked before the work, so that running out of memory is a status.
  AllocateScratchUpFrontOptions scratch;
  scratch.target = target.str();
  pm.addPass(createAllocateScratchUpFront(scratch));

  bufferization::BufferDeallocationPipelineOptions dealloc;
  bufferization::buildBufferDeallocationPipeline(pm, dealloc);
  pm.addPass(createConvertBufferizationToMemRefPass());
}

void mlir::moe::buildMoELowerToLoopsPipeline(OpPassManager &pm,
                                             const CPUPipelineOptions &options) {
  buildMoEBufferizePipeline(pm, "cpu");
  pm.addNestedPass<func::FuncOp>(createConvertLinalgToLoopsPass());
  pm.addPass(createCanonicalizerPass());
  // scf.forall bodies to launches on the runtime's thread pool, before
  // convert-scf-to-cf, which would run them sequentially.
  pm.addPass(createOutlineParallelLoops());
}

void mlir::moe::buildLoopsToLLVMPipeline(OpPassManager &pm,
                                         const CPUPipelineOptions &options) {
  // Before math-to-libm, which declares libm functions that need no wrapper.
  if (options.emitCInterface)
    pm.addNestedPass<func::FuncOp>(LLVM::createLLVMRequestCWrappersPass());
  pm.addPass(memref::createExpandStridedMetadataPass());
  pm.addPass(createLowerAffinePass());
  // erf and friends have no LLVM intrinsic: call libm.
  pm.addPass(createConvertMathToLibmPass());
  // memref before cf: the OpenMP lowering of later issues needs this order.
  FinalizeMemRefToLLVMConversionPassOptions memrefToLLVM;
  memrefToLLVM.useGenericFunctions = options.runtimeAllocator;
  pm.addPass(createFinalizeMemRefToLLVMConversionPass(memrefToLLVM));
  pm.addPass(createSCFToControlFlowPass());
  pm.addPass(createConvertToLLVMPass());
  pm.addPass(createReconcileUnrealizedCastsPass());
  pm.addPass(createLowerParallelLaunches());
  pm.addPass(createCanonicalizerPass());
}

std::string
mlir::moe::checkCPUPipelineOptions(const CPUPipelineOptions &options) {
  const std::string &kernel = options.expertKernel;
  if (!kernel.empty() && kernel != "row-dot" && kernel != "panel")
    return "expert-kernel must be panel or row-dot, got '" + kernel + "'";
  if (options.tokenTile <= 0)
    return "token-tile must be positive, got " +
           std::to_string(options.tokenTile);
  if (options.maxFusedWeightBytes < 0)
    return "max-fused-weight-bytes must not be negative, got " +
           std::to_string(options.maxFusedWeightBytes);
  // 0 asks for the target's default; a negative size would be read as it.
  std::pair<const char *, int64_t> sizes[] = {
      {"vector-width", options.vectorWidth},
      {"row-tile", options.rowTile},
      {"col-tile", options.colTile},
      {"row-block", options.rowBlock},
      {"col-block", options.colBlock},
      {"token-block", options.tokenBlock},
      {"depth-block", options.depthBlock},
      {"panel-row-tile", options.panelRowTile},
      {"panel-col-vectors", options.panelColVectors},
      {"panel-depth-block", options.panelDepthBlock},
      {"l1-ways", options.l1Ways}};
  for (auto [name, value] : sizes)
    if (value < 0)
      return std::string(name) + " must not be negative (0 = the target's " +
             "default), got " + std::to_string(value);
  int64_t width = options.vectorWidth;
  if (width > 0 && !llvm::isPowerOf2_64(width))
    return "vector-width must be a power of two, got " + std::to_string(width);
  return "";
}

void mlir::moe::buildMoELowerToCPUPipeline(OpPassManager &pm,
                                           const CPUPipelineOptions &options) {
  if (options.gpuPatterns) {
    ConvertMoEToGPUOptions gpu;
    gpu.tensorCores = options.gpuTensorCores ? "emulate" : "none";
    gpu.mmaPrecision = options.gpuMmaPrecision;
    pm.addPass(createConvertMoEToGPU(gpu));
  }
  if (!options.reference && options.tileTokenOps) {
    MoETileTokenOpsOptions tokenTiles;
    tokenTiles.tokenTile = options.tokenTile;
    tokenTiles.maxFusedWeightBytes = options.maxFusedWeightBytes;
    pm.addPass(createMoETileTokenOps(tokenTiles));
  }
  if (!options.reference) {
    ConvertMoEToCPUOptions tiles;
    tiles.vectorWidth = options.vectorWidth;
    tiles.rowTile = options.rowTile;
    tiles.colTile = options.colTile;
    tiles.rowBlock = options.rowBlock;
    tiles.colBlock = options.colBlock;
    tiles.tokenBlock = options.tokenBlock;
    tiles.depthBlock = options.depthBlock;
    tiles.expertKernel = options.expertKernel;
    tiles.panelRowTile = options.panelRowTile;
    tiles.panelColVectors = options.panelColVectors;
    tiles.panelDepthBlock = options.panelDepthBlock;
    tiles.l1Ways = options.l1Ways;
    pm.addPass(createConvertMoEToCPU(tiles));
  }
  buildMoELowerToLoopsPipeline(pm, options);
  buildLoopsToLLVMPipeline(pm, options);
}

void mlir::moe::registerMoEPipelines() {
  PassPipelineRegistration<CPUPipelineOptions>(
      "moe-lower-to-cpu",
      "Lower moe layers to the LLVM dialect for the CPU (fast kernels, the "
      "reference lowering for the rest, bufferization, thread-pool launches, "
      "LLVM)",
      buildMoELowerToCPUPipeline);
  PassPipelineRegistration<CPUPipelineOptions>(
      "moe-lower-to-loops",
      "Lower moe layers to loops over buffers (the first stage of "
      "moe-lower-to-cpu)",
      buildMoELowerToLoopsPipeline);
  PassPipelineRegistration<NVVMPipelineOptions>(
      "moe-lower-to-nvvm",
      "Lower moe layers with CUDA entry points to GPU kernels (NVVM, "
      "embedded as a cubin/fatbin/PTX) and host code in the LLVM dialect "
      "that launches them through the runtime",
      buildMoELowerToNVVMPipeline);
  PassPipelineRegistration<NVVMPipelineOptions>(
      "moe-lower-to-gpu",
      "Lower moe layers with CUDA entry points to gpu.launch_func and "
      "outlined kernels (the first stage of moe-lower-to-nvvm)",
      buildMoELowerToGPUPipeline);
}
