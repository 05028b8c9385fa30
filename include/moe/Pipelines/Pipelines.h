//===- Pipelines.h - registered lowering pipelines of moe layers -*- C++ -*-===//

#ifndef MOE_PIPELINES_PIPELINES_H
#define MOE_PIPELINES_PIPELINES_H

#include "mlir/Pass/PassOptions.h"
#include "llvm/ADT/StringRef.h"

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
  PassOptions::Option<bool> reference{
      *this, "reference",
      llvm::cl::desc("Lower every op with the reference lowering (scalar, "
                     "single-threaded: the oracle) instead of the fast "
                     "tiled, vectorised, multithreaded kernels"),
      llvm::cl::init(false)};
  PassOptions::Option<bool> gpuPatterns{
      *this, "gpu-patterns",
      llvm::cl::desc("Lower first with the CUDA target's tensor-level "
                     "patterns (convert-moe-to-gpu): runs the GPU's "
                     "algorithms on the CPU, to test them against the "
                     "reference"),
      llvm::cl::init(false)};
  PassOptions::Option<bool> gpuTensorCores{
      *this, "gpu-tensor-cores",
      llvm::cl::desc("With gpu-patterns: the tensor-core tiles of bf16 "
                     "expert GEMMs, emulated (the tiling and fragment "
                     "layout of the CUDA target's mma.sync kernels)"),
      llvm::cl::init(false)};
  PassOptions::Option<std::string> gpuMmaPrecision{
      *this, "gpu-mma-precision",
      llvm::cl::desc("With gpu-tensor-cores: f32 or bf16, as the CUDA "
                     "pipeline's mma-precision"),
      llvm::cl::init("f32")};
  // Routing chains per token tile (moe-tile-token-ops, fast pipeline only).
  // Tiles split tokens, never a sum: the bits do not depend on them.
  PassOptions::Option<bool> tileTokenOps{
      *this, "tile-token-ops",
      llvm::cl::desc("Run each routing chain (router matmul, score, top-k; "
                     "PEER/PKM retrieval and expert gather) in one pass over "
                     "token tiles"),
      llvm::cl::init(true)};
  PassOptions::Option<int64_t> tokenTile{
      *this, "token-tile",
      llvm::cl::desc("tokens per tile of moe-tile-token-ops"),
      llvm::cl::init(16)};
  PassOptions::Option<int64_t> maxFusedWeightBytes{
      *this, "max-fused-weight-bytes",
      llvm::cl::desc("largest weights (bytes) of a producer fused into a "
                     "token tile loop"),
      llvm::cl::init(1048576)};
  // Tile sizes of the fast kernels (0: the target's default). They fix the
  // work partition and the order of every sum.
  PassOptions::Option<int64_t> vectorWidth{
      *this, "vector-width",
      llvm::cl::desc("f32 lanes of the dot-product accumulators"),
      llvm::cl::init(0)};
  PassOptions::Option<int64_t> rowTile{
      *this, "row-tile", llvm::cl::desc("rows of a register tile"),
      llvm::cl::init(0)};
  PassOptions::Option<int64_t> colTile{
      *this, "col-tile", llvm::cl::desc("weight rows of a register tile"),
      llvm::cl::init(0)};
  PassOptions::Option<int64_t> rowBlock{
      *this, "row-block", llvm::cl::desc("rows of a work item"),
      llvm::cl::init(0)};
  PassOptions::Option<int64_t> colBlock{
      *this, "col-block", llvm::cl::desc("output columns of a work item"),
      llvm::cl::init(0)};
  PassOptions::Option<int64_t> tokenBlock{
      *this, "token-block",
      llvm::cl::desc("tokens of a work item of token-parallel loops"),
      llvm::cl::init(0)};
  PassOptions::Option<int64_t> depthBlock{
      *this, "depth-block",
      llvm::cl::desc("depth (k) elements per chunk of a long dot product"),
      llvm::cl::init(0)};
  PassOptions::Option<std::string> expertKernel{
      *this, "expert-kernel",
      llvm::cl::desc("microkernel of expert MLPs: panel (default; outer "
                     "products on weight panels) or row-dot"),
      llvm::cl::init("")};
  PassOptions::Option<int64_t> panelRowTile{
      *this, "panel-row-tile",
      llvm::cl::desc("rows of a register tile of the panel expert kernel"),
      llvm::cl::init(0)};
  PassOptions::Option<int64_t> panelColVectors{
      *this, "panel-col-vectors",
      llvm::cl::desc(
          "column vectors of a register tile of the panel expert kernel"),
      llvm::cl::init(0)};
  PassOptions::Option<int64_t> panelDepthBlock{
      *this, "panel-depth-block",
      llvm::cl::desc(
          "depth of a packed weight panel of the panel expert kernel"),
      llvm::cl::init(0)};
  PassOptions::Option<int64_t> l1Ways{
      *this, "l1-ways",
      llvm::cl::desc("ways of the L1 data cache, the most rows of a panel "
                     "register tile (0: the host's)"),
      llvm::cl::init(0)};
};

/// What is wrong with `options` (a value no kernel can take), or "" when
/// they are good. The passes check the same and fail; drivers ask first.
std::string checkCPUPipelineOptions(const CPUPipelineOptions &options);

/// moe ops (those left by the fast patterns) on tensors -> buffers: the
/// reference lowering, bufferization into the caller's buffers and one
/// checked scratch allocation per entry point (`target`: cpu or cuda).
void buildMoEBufferizePipeline(OpPassManager &pm, llvm::StringRef target);

/// moe ops on tensors -> loops over buffers (stops before the LLVM dialect).
void buildMoELowerToLoopsPipeline(OpPassManager &pm,
                                  const CPUPipelineOptions &options);

/// Buffers and loops -> the LLVM dialect.
void buildLoopsToLLVMPipeline(OpPassManager &pm,
                              const CPUPipelineOptions &options);

/// The whole CPU pipeline: `moe-lower-to-cpu` (the fast kernels, or the
/// reference lowering with `reference`).
void buildMoELowerToCPUPipeline(OpPassManager &pm,
                                const CPUPipelineOptions &options);

struct NVVMPipelineOptions : public PassPipelineOptions<NVVMPipelineOptions> {
  PassOptions::Option<std::string> chip{
      *this, "chip",
      llvm::cl::desc("GPU architecture: sm_90 (H100/H200) or sm_80 (A100)"),
      llvm::cl::init("sm_90")};
  PassOptions::Option<std::string> features{
      *this, "features",
      llvm::cl::desc("PTX features (default: +ptx80, PTX ISA 8.0)"),
      llvm::cl::init("+ptx80")};
  PassOptions::Option<unsigned> optLevel{
      *this, "opt-level", llvm::cl::desc("NVPTX optimisation level 0..3"),
      llvm::cl::init(3)};
  PassOptions::Option<std::string> format{
      *this, "format",
      llvm::cl::desc("What gpu-module-to-binary embeds: fatbin (the chip's "
                     "SASS and PTX for newer chips; default), bin (SASS "
                     "only) or isa (PTX, compiled by the driver at load)"),
      llvm::cl::init("fatbin")};
  PassOptions::Option<std::string> cudaPath{
      *this, "cuda-path",
      llvm::cl::desc("CUDA toolkit with ptxas and fatbinary (default: "
                     "$CUDA_HOME, /usr/local/cuda or PATH)"),
      llvm::cl::init("")};
  PassOptions::Option<int64_t> threadsPerBlock{
      *this, "threads-per-block",
      llvm::cl::desc("threads of a block of a parallel loop's grid (tensor "
                     "cores need a multiple of 32: a tile is one warp)"),
      llvm::cl::init(256)};
  PassOptions::Option<bool> tensorCores{
      *this, "tensor-cores",
      llvm::cl::desc("Run the expert GEMMs of bf16 weights on tensor cores "
                     "(nvvm.mma.sync m16n8k16; on sm_80 and newer with "
                     "threads-per-block a multiple of 32, else SIMT); off: "
                     "one thread per output, the reference's bits"),
      llvm::cl::init(true)};
  PassOptions::Option<std::string> mmaPrecision{
      *this, "mma-precision",
      llvm::cl::desc("Activations on tensor cores: f32 (three exact bf16 "
                     "terms, three MMAs per step; default) or bf16 (rounded "
                     "once, as bf16 frameworks do)"),
      llvm::cl::init("f32")};
  PassOptions::Option<bool> fuseTokenOps{
      *this, "fuse-token-ops",
      llvm::cl::desc("Run each routing chain (score, selection, top-k, "
                     "normalisation) as one kernel of one thread per token "
                     "(moe-tile-token-ops with token-tile=1; the router GEMM "
                     "keeps its own kernel); off: a kernel per step"),
      llvm::cl::init(true)};
};

/// What is wrong with `options`, or "" when they are good.
std::string checkNVVMPipelineOptions(const NVVMPipelineOptions &options);

/// The first stage of moe-lower-to-nvvm: moe layers with C entry points
/// -> host functions of gpu.launch_func and kernels in gpu.modules (still
/// in the gpu, scf and memref dialects).
void buildMoELowerToGPUPipeline(OpPassManager &pm,
                                const NVVMPipelineOptions &options);

/// The gpu.modules of kernels -> gpu.binary ops (NVVM, then ptxas and
/// fatbinary as `options.format` asks).
void buildKernelsToBinaryPipeline(OpPassManager &pm,
                                  const NVVMPipelineOptions &options);

/// moe layers with C entry points (`moe-create-c-entry-points{target=cuda}`)
/// -> GPU kernels embedded as binaries + host code in the LLVM dialect that
/// launches them through the runtime (`moe-lower-to-nvvm`).
void buildMoELowerToNVVMPipeline(OpPassManager &pm,
                                 const NVVMPipelineOptions &options);

void registerMoEPipelines();

} // namespace mlir::moe

#endif // MOE_PIPELINES_PIPELINES_H
