//===- Passes.td - transformations on the moe dialect ------*- tablegen -*-===//

#ifndef MOE_DIALECT_MOE_TRANSFORMS_PASSES_TD
#define MOE_DIALECT_MOE_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def MoEStripRouterNoise : Pass<"moe-strip-router-noise"> {
  let summary = "Turn noisy top-k gating into its deterministic inference form";
  let description = [{
    Noisy top-k gating (Shazeer 2017) adds `N(0,1) · softplus(x · w_noiseᵀ)`
    to the router logits only while training. This pass drops the noise
    operands of every `moe.route`, so a layer spec written for training
    compiles to the inference kernel; the noise projection becomes dead and
    is removed with it when unused elsewhere.
  }];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
}

#endif // MOE_DIALECT_MOE_TRANSFORMS_PASSES_TD
