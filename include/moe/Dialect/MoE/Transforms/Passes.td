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

def MoEAddRouteVariant : Pass<"moe-add-route-variant", "ModuleOp"> {
  let summary = "Add a routing-only variant to each layer";
  let description = [{
    For every public layer function `@L` with `topk_ids` and `topk_weights`
    results (named by `moe.name`), adds `@L__route`: `@L` returning only
    those two, with every op that fed nothing else (the experts, the
    combine, the aux losses) and every argument left unused (the expert
    weights) removed. It carries `moe.layer = "L"` and
    `moe.variant = "route"`; `moe-create-c-entry-points` exports it as
    `L_route(tokens, d_model, x, <the weights routing reads>, [seed],
    topk_ids, topk_weights)`. Routing is what it is in `@L`: the same ops on
    the same values, so the same bits.
  }];
  let dependentDialects = ["::mlir::func::FuncDialect"];
}

#endif // MOE_DIALECT_MOE_TRANSFORMS_PASSES_TD
