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
  PassOptions::Option<bool> reference{
      *this, "reference",
      llvm::cl::desc("Lower every op with the reference lowering (scalar, "
                     "single-threaded: the oracle) instead of the fast "
                     "tiled, vectorised, multithreaded kernels"),
      llvm::cl::init(false)};
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

void registerMoEPipelines();

} // namespace mlir::moe

#endif // MOE_PIPELINES_PIPELINES_H
