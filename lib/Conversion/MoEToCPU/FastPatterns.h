//===- FastPatterns.h - pattern sets of the fast CPU lowering ---*- C++ -*-===//

#ifndef MOE_LIB_CONVERSION_MOETOCPU_FASTPATTERNS_H
#define MOE_LIB_CONVERSION_MOETOCPU_FASTPATTERNS_H

#include "moe/Conversion/MoEToCPU/MoEToCPU.h"

#include "mlir/IR/PatternMatch.h"

namespace mlir::moe {
/// A fast CPU lowering of `OpTy` with the kernel tile sizes: benefit 2, so it
/// wins over the reference pattern of the same op.
template <typename OpTy> struct FastCPUPattern : OpRewritePattern<OpTy> {
  FastCPUPattern(MLIRContext *ctx, const CPUKernelConfig &config)
      : OpRewritePattern<OpTy>(ctx, /*benefit=*/2), config(config) {}

  CPUKernelConfig config;
};

/// moe.combine as a token-parallel weighted sum (CombineToCPU.cpp).
void populateFastCombinePatterns(RewritePatternSet &patterns,
                                 const CPUKernelConfig &config);
/// moe.product_key_topk and moe.single_neuron_experts (PEER/PKM) as
/// token-parallel vectorised kernels (ProductKeyToCPU.cpp).
void populateFastProductKeyPatterns(RewritePatternSet &patterns,
                                    const CPUKernelConfig &config);
/// linalg.pack into the panel layout of the expert kernels as parallel
/// in-register transposes (PackToCPU.cpp).
void populateFastPackPatterns(RewritePatternSet &patterns,
                              const CPUKernelConfig &config);
} // namespace mlir::moe

#endif // MOE_LIB_CONVERSION_MOETOCPU_FASTPATTERNS_H
