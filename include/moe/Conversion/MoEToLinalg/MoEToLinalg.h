//===- MoEToLinalg.h - reference lowering patterns of moe ops ---*- C++ -*-===//

#ifndef MOE_CONVERSION_MOETOLINALG_MOETOLINALG_H
#define MOE_CONVERSION_MOETOLINALG_MOETOLINALG_H

namespace mlir {
class RewritePatternSet;
} // namespace mlir

namespace mlir::moe {
/// linear, route, topk, product_key_topk, batch_norm, aux_loss.
void populateRoutingLoweringPatterns(RewritePatternSet &patterns);
/// dispatch_plan, gather, combine, token_split, token_merge.
void populateDispatchLoweringPatterns(RewritePatternSet &patterns);
/// expert_ffn, shared_expert, single_neuron_experts.
void populateExpertLoweringPatterns(RewritePatternSet &patterns);
} // namespace mlir::moe

#endif // MOE_CONVERSION_MOETOLINALG_MOETOLINALG_H
