//===- MoEToCPU.h - fast CPU lowering patterns of moe ops -------*- C++ -*-===//

#ifndef MOE_CONVERSION_MOETOCPU_MOETOCPU_H
#define MOE_CONVERSION_MOETOCPU_MOETOCPU_H

#include <cstdint>

namespace mlir {
class RewritePatternSet;
} // namespace mlir

namespace mlir::moe {

/// Tile sizes of the fast CPU kernels. They fix the work partition and every
/// reduction order, so a kernel's bits depend on them (and on nothing else:
/// not T, not the thread count).
struct CPUKernelConfig {
  /// f32 lanes of a dot-product accumulator (8 for AVX2, 16 for AVX-512).
  int64_t vectorWidth = 8;
  /// Rows (tokens or slots) of one register tile (at most: fewer where the
  /// tile would not fit in the vector registers).
  int64_t rowTile = 3;
  /// Vector registers of the target (16 for AVX2, 32 for AVX-512).
  int64_t vectorRegisters = 16;
  /// Weight rows of one register tile (for gated experts: w1 and w3 rows
  /// together, so half as many hidden columns).
  int64_t colTile = 4;
  /// Rows of one work item: every weight row an item reads is reused for all
  /// of them, so large blocks move each expert's weights once.
  int64_t rowBlock = 128;
  /// Output columns of one work item (hidden columns in the first expert
  /// phase; model columns in the second and in projections).
  int64_t colBlock = 16;
  /// Depth (k) elements per chunk of a dot product when the depth is larger.
  int64_t depthBlock = 1024;
  /// Tokens of one work item of token-parallel loops (combine).
  int64_t tokenBlock = 8;
  /// Expert MLPs (expert_ffn, shared_expert) as outer products on weight
  /// panels (each output one FMA chain over k in order; the default) instead
  /// of row-dot tiles (lane partial sums). Panels are packed per item from
  /// the PyTorch layout, or read as they are from weights pre-packed by
  /// moe-pack-expert-weights (the fastest, decode and prefill). Either way
  /// the bits do not depend on T.
  bool panelExperts = true;
  /// Rows of a register tile of the panel expert kernels (0: as many as the
  /// vector registers hold next to the tile's column vectors, at most the 8
  /// ways of an L1 set).
  int64_t panelRowTile = 0;
  /// Column vectors of a register tile of the panel expert kernels (shared by
  /// w1 and w3 for gated experts).
  int64_t panelColVectors = 2;
  /// Depth of a packed weight panel of the panel expert kernels: the panel
  /// stays in L1 while every row of the item runs against it.
  int64_t panelDepthBlock = 256;
  /// Ways of the L1 data cache: the most left rows a panel register tile
  /// reads at once (rows 4 KiB apart share a set).
  int64_t l1Ways = 8;

  /// The defaults of the host or of `cpu`/`features` (an LLVM CPU name and
  /// feature string; empty means the host): the vector width from the widest
  /// f32 FMA vector, and for the host the L1 ways from the cache it reports.
  static CPUKernelConfig forTarget(const char *cpu, const char *features);
};

/// Fast lowerings of the expert path (expert_ffn with its gather fused on
/// load, shared_expert, combine) and of moe.linear, to vectorised tiles in
/// scf.forall loops over buffers. Benefit 2, above the reference patterns.
void populateFastCPULoweringPatterns(RewritePatternSet &patterns,
                                     const CPUKernelConfig &config);

} // namespace mlir::moe

#endif // MOE_CONVERSION_MOETOCPU_MOETOCPU_H
