//===- FastPatterns.h - pattern sets of the fast CPU lowering ---*- C++ -*-===//

#ifndef MOE_LIB_CONVERSION_MOETOCPU_FASTPATTERNS_H
#define MOE_LIB_CONVERSION_MOETOCPU_FASTPATTERNS_H

#include "moe/Conversion/MoEToCPU/MoEToCPU.h"

namespace mlir::moe {
/// moe.combine as a token-parallel weighted sum (CombineToCPU.cpp).
void populateFastCombinePatterns(RewritePatternSet &patterns,
                                 const CPUKernelConfig &config);
/// moe.product_key_topk and moe.single_neuron_experts (PEER/PKM) as
/// token-parallel vectorised kernels (ProductKeyToCPU.cpp).
void populateFastProductKeyPatterns(RewritePatternSet &patterns,
                                    const CPUKernelConfig &config);
} // namespace mlir::moe

#endif // MOE_LIB_CONVERSION_MOETOCPU_FASTPATTERNS_H
