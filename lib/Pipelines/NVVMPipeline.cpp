//===- NVVMPipeline.cpp - moe layers to GPU kernels and their host code ---===//
//
// The CUDA target: the layer bufferized as for the CPU (device buffers, one
// scratch allocation on the call's stream), its loops mapped to launches,
// the kernels lowered to NVVM and compiled by ptxas into an embedded
// binary, and the host code to the LLVM dialect.
//
//===----------------------------------------------------------------------===//

#include "moe/Pipelines/Pipelines.h"

#include "moe/Conversion/Passes.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Conversion/GPUToNVVM/GPUToNVVMPass.h"
#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Dialect/SCF/Transforms/Passes.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"

#include <cstdlib>

using namespace mlir;
using namespace mlir::moe;

std::string
mlir::moe::checkNVVMPipelineOptions(const NVVMPipelineOptions &options) {
  StringRef chip = options.chip;
  int64_t number = 0;
  if (!chip.consume_front("sm_") || chip.consumeInteger(10, number) ||
      number < 70 || !(chip.empty() || chip == "a"))
    return "chip must be an NVIDIA architecture sm_70 or newer (sm_80, "
           "sm_90, sm_90a), got '" +
           options.chip + "'";
  StringRef format = options.format;
  if (format != "fatbin" && format != "bin" && format != "isa")
    return "format must be fatbin, bin or isa, got '" + options.format + "'";
  if (options.optLevel > 3)
    return "opt-level must be in 0..3, got " +
           std::to_string(options.optLevel);
  if (options.threadsPerBlock < 1 || options.threadsPerBlock > 1024)
    return "threads-per-block must be in [1, 1024], got " +
           std::to_string(options.threadsPerBlock);
  if (options.mmaPrecision != "f32" && options.mmaPrecision != "bf16")
    return "mma-precision must be f32 or bf16, got '" +
           options.mmaPrecision + "'";
  return "";
}

void mlir::moe::buildMoELowerToGPUPipeline(OpPassManager &pm,
                                           const NVVMPipelineOptions &options) {
  // bf16 mma.sync is sm_80's, and a tile is one warp of a block: older
  // chips and blocks that are not whole warps keep the SIMT GEMMs.
  StringRef chip = options.chip;
  int64_t chipNumber = 0;
  bool hasBF16MMA = chip.consume_front("sm_") &&
                    !chip.consumeInteger(10, chipNumber) && chipNumber >= 80;
  bool wholeWarps = options.threadsPerBlock % 32 == 0;
  ConvertMoEToGPUOptions gpu;
  gpu.tensorCores =
      options.tensorCores && hasBF16MMA && wholeWarps ? "mma" : "none";
  gpu.mmaPrecision = options.mmaPrecision;
  pm.addPass(createConvertMoEToGPU(gpu));
  // A routing chain (score, selection, top-k, normalisation) in one loop
  // over tokens: one kernel of one thread per token instead of a kernel per
  // step. Producers with weights (the router GEMM) keep their own kernels,
  // which spread a token's outputs over threads, and so do PEER/PKM's
  // retrieval and single-neuron experts: too much work for one thread.
  if (options.fuseTokenOps) {
    MoETileTokenOpsOptions tokenTiles;
    tokenTiles.tokenTile = 1;
    tokenTiles.maxFusedWeightBytes = 0;
    tokenTiles.routingOnly = true;
    pm.addPass(createMoETileTokenOps(tokenTiles));
  }
  buildMoEBufferizePipeline(pm, "cuda");
  // Parallel dimensions stay parallel loops: they become the grids.
  pm.addNestedPass<func::FuncOp>(createConvertLinalgToParallelLoopsPass());
  pm.addPass(createForallToParallelLoopPass());
  pm.addPass(createCanonicalizerPass());
  MoEMapToGPUOptions map;
  map.threadsPerBlock = options.threadsPerBlock;
  pm.addPass(createMoEMapToGPU(map));
  pm.addPass(createGpuKernelOutliningPass());
  pm.addPass(createMoEMergeKernelModules());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
}

/// The toolkit whose ptxas, fatbinary and libdevice compile the kernels:
/// the one asked for, else $CUDA_HOME or $CUDA_PATH, else /usr/local/cuda,
/// else the one holding the ptxas on PATH ("" lets MLIR search).
static std::string findCUDAToolkit(StringRef requested) {
  if (!requested.empty())
    return requested.str();
  for (const char *variable : {"CUDA_HOME", "CUDA_PATH"})
    if (const char *path = std::getenv(variable); path && *path)
      return path;
  if (llvm::sys::fs::exists("/usr/local/cuda/bin/ptxas"))
    return "/usr/local/cuda";
  if (llvm::ErrorOr<std::string> ptxas = llvm::sys::findProgramByName("ptxas"))
    return llvm::sys::path::parent_path(llvm::sys::path::parent_path(*ptxas))
        .str();
  return "";
}

void mlir::moe::buildKernelsToBinaryPipeline(
    OpPassManager &pm, const NVVMPipelineOptions &options) {
  GpuNVVMAttachTargetOptions target;
  target.chip = options.chip;
  target.features = options.features;
  target.optLevel = options.optLevel;
  pm.addPass(createGpuNVVMAttachTarget(target));

  // The kernels: to NVVM (math through libdevice, linked by the target).
  OpPassManager &kernels = pm.nest<gpu::GPUModuleOp>();
  kernels.addPass(memref::createExpandStridedMetadataPass());
  kernels.addPass(createLowerAffinePass());
  kernels.addPass(createSCFToControlFlowPass());
  kernels.addPass(createConvertMoEWarpMMAToNVVM());
  ConvertGpuOpsToNVVMOpsOptions nvvm;
  nvvm.indexBitwidth = 64;
  kernels.addPass(createConvertGpuOpsToNVVMOps(nvvm));
  kernels.addPass(createCanonicalizerPass());
  kernels.addPass(createCSEPass());
  kernels.addPass(createReconcileUnrealizedCastsPass());

  GpuModuleToBinaryPassOptions binary;
  binary.compilationTarget = options.format;
  binary.toolkitPath = findCUDAToolkit(options.cudaPath);
  pm.addPass(createGpuModuleToBinaryPass(binary));
}

void mlir::moe::buildMoELowerToNVVMPipeline(
    OpPassManager &pm, const NVVMPipelineOptions &options) {
  buildMoELowerToGPUPipeline(pm, options);
  buildKernelsToBinaryPipeline(pm, options);
  pm.addPass(createMoELowerGPULaunches());

  // The host: no math, no allocation left; loops of sizes and launches.
  CPUPipelineOptions host;
  buildLoopsToLLVMPipeline(pm, host);
}
