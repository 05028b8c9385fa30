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

def MoETileTokenOps : Pass<"moe-tile-token-ops"> {
  let summary = "Tile routing chains into one pass over token tiles";
  let description = [{
    Tiles the last token-parallel op of each routing chain (`moe.route`,
    `moe.topk`, `moe.product_key_topk`, `moe.single_neuron_experts`) into an
    `scf.forall` over tiles of `token-tile` tokens and fuses its
    token-parallel producers (`moe.linear`, `moe.batch_norm`, the
    retrieval, the inits) into it with upstream's
    `scf::tileConsumerAndFuseProducersUsingSCF`: the router matmul, the
    score and the top-k of a tile run back to back with the logits tile in
    cache; PEER/PKM's query BatchNorm, both sub-key top-k's, the k×k
    candidate top-k and the weighted expert gather likewise.

    A producer whose per-layer operands (weights) exceed
    `max-fused-weight-bytes` stays outside the loop (its own kernel streams
    the weights once for all tokens). A producer whose results have other
    users is computed in the loop and its full result yielded for them.
    Tiles split tokens only, never a reduction, so the bits are those of
    the untiled ops. Ops that reduce over tokens (dispatch plan, aux losses)
    and noisy routes (their noise is keyed by token position) are not
    tiled. With `routing-only`, only chains ending in `moe.route` or
    `moe.topk` are.
  }];
  let options = [
    Option<"tokenTile", "token-tile", "int64_t", /*default=*/"16",
           "tokens per tile">,
    Option<"maxFusedWeightBytes", "max-fused-weight-bytes", "int64_t",
           /*default=*/"1048576",
           "largest per-layer operands (bytes) of a producer fused into "
           "the tile loop">,
    Option<"routingOnly", "routing-only", "bool", /*default=*/"false",
           "tile only chains that end in moe.route or moe.topk: the GPU "
           "runs a tile in one thread, too few for the retrieval's sub-key "
           "scores or the single-neuron experts">,
  ];
  let dependentDialects = ["::mlir::scf::SCFDialect",
                           "::mlir::tensor::TensorDialect",
                           "::mlir::affine::AffineDialect",
                           "::mlir::arith::ArithDialect"];
}

#endif // MOE_DIALECT_MOE_TRANSFORMS_PASSES_TD
