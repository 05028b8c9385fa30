//===- GPUPatterns.h - tensor-level patterns of convert-moe-to-gpu -*- C++ -*-===//

#ifndef MOE_LIB_CONVERSION_MOETOGPU_GPUPATTERNS_H
#define MOE_LIB_CONVERSION_MOETOGPU_GPUPATTERNS_H

#include "mlir/IR/PatternMatch.h"

namespace mlir::moe {

/// moe.expert_ffn as row-parallel gathered contractions (ExpertsToGPU.cpp).
void populateExpertsToGPUPatterns(RewritePatternSet &patterns);

/// moe.combine as a counting sort of slots by token and a token-parallel
/// gather-sum in slot order (CombineToGPU.cpp).
void populateCombineToGPUPatterns(RewritePatternSet &patterns);

} // namespace mlir::moe

#endif // MOE_LIB_CONVERSION_MOETOGPU_GPUPATTERNS_H
