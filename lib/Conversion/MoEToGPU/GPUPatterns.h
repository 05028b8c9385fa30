//===- GPUPatterns.h - tensor-level patterns of convert-moe-to-gpu -*- C++ -*-===//

#ifndef MOE_LIB_CONVERSION_MOETOGPU_GPUPATTERNS_H
#define MOE_LIB_CONVERSION_MOETOGPU_GPUPATTERNS_H

#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/IR/PatternMatch.h"

namespace mlir::moe {

/// How bf16-weight expert GEMMs run: SIMT (one thread per output, the
/// reference's bits), warp `mma.sync` tiles, or those tiles emulated in
/// plain code (the CPU pipeline's test of the tiling and fragment layout).
enum class TensorCoreMode { none, mma, emulate };
/// `f32`: activations as three exact bf16 terms; `bf16`: rounded once.
enum class TensorCorePrecision { f32, bf16 };

struct TensorCoreOptions {
  TensorCoreMode mode = TensorCoreMode::none;
  TensorCorePrecision precision = TensorCorePrecision::f32;
};

/// The `[S, N]` f32 result of buildTensorCoreMatmul as its warp tiles left
/// it: the lanes' accumulator registers. Consumers read elements from them
/// in their own loops (no relayout pass over memory).
struct TensorCoreProduct {
  SmallVector<Value> registers; // [work items] f32, one per register
  Value groups;                 // expert groups per row tile (index)
  Value expertOfRow, numRows;
  int64_t numCols = 0;

  /// Element (r, n), built at the builder's insertion point.
  Value read(OpBuilder &b, Location loc, Value r, Value n) const;
};

/// `Σ_k lhs[r, k] · w[e(r), n, k]` on warp-level 16×8×16 tensor-core tiles
/// (TensorCoreMatmul.cpp); `w` is a bf16 `[E, N, K]` stack, `expertOfRow`
/// non-decreasing with E for rows of no expert.
TensorCoreProduct buildTensorCoreMatmul(OpBuilder &b, Location loc, Value lhs,
                                        Value w, Value expertOfRow,
                                        int64_t numExperts,
                                        const TensorCoreOptions &options);

/// moe.expert_ffn as row-parallel gathered contractions (ExpertsToGPU.cpp),
/// bf16 ones on tensor cores as `options` says.
void populateExpertsToGPUPatterns(RewritePatternSet &patterns,
                                  const TensorCoreOptions &options);

/// With tensor cores: moe.linear with a bf16 weight of 8+ outputs on the
/// tensor-core tiles, and bf16 shared experts as one-expert moe.expert_ffn
/// ops (DenseToGPU.cpp).
void populateDenseToGPUPatterns(RewritePatternSet &patterns,
                                const TensorCoreOptions &options);

/// moe.dispatch_plan without capacity as chunked parallel counts, a scan
/// over experts and a slot-parallel gather (DispatchToGPU.cpp).
void populateDispatchToGPUPatterns(RewritePatternSet &patterns);

/// Whether DispatchToGPU.cpp lowers `plan` (no capacity): then it also
/// rewrites the moe.combine ops of its slots.
bool isParallelDispatchPlan(DispatchPlanOp plan);

/// `init[t, d] + Σ w[s]·rows[s, d]` over the slots s = order[j], j in
/// rangeOf(t) in order, skipping entries < 0: the combine's sums in the
/// reference's order when the order lists each token's slots ascending.
Value buildSlotSums(
    OpBuilder &b, Location loc, Value init, Value rows, Value slotWeights,
    Value order,
    function_ref<std::pair<Value, Value>(OpBuilder &, Location, Value)>
        rangeOf);

/// moe.combine as a counting sort of slots by token and a token-parallel
/// gather-sum in slot order (CombineToGPU.cpp).
void populateCombineToGPUPatterns(RewritePatternSet &patterns);

} // namespace mlir::moe

#endif // MOE_LIB_CONVERSION_MOETOGPU_GPUPATTERNS_H
