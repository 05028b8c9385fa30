// Round-trip of the routing ops (moe.route, moe.topk) in every form of their
// assembly: custom form, generic form and bytecode print back to the same
// custom form, and print -> parse -> print is a fixed point.
// RUN: moe-opt %s | moe-opt | FileCheck %s
// RUN: moe-opt %s -mlir-print-op-generic | moe-opt | FileCheck %s
// RUN: moe-opt %s -emit-bytecode | moe-opt | FileCheck %s
// RUN: moe-opt %s > %t.once && moe-opt %t.once > %t.twice && diff %t.once %t.twice

//===----------------------------------------------------------------------===//
// moe.route
//===----------------------------------------------------------------------===//

// No optional group, default attributes elided.
// CHECK-LABEL: func.func @route_minimal
// CHECK-SAME:    (%[[L:.*]]: tensor<?x8xf32>)
// CHECK:         %[[W:.*]], %[[IDS:.*]] = moe.route %[[L]] top_k(2) score(softmax) order(score_then_topk) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
// CHECK:         return %[[W]], %[[IDS]]
func.func @route_minimal(%logits: tensor<?x8xf32>)
    -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(score_then_topk)
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %w, %ids : tensor<?x2xf32>, tensor<?x2xi32>
}

// Mixtral: top-k of the logits, softmax over the k kept; static shapes.
// CHECK-LABEL: func.func @route_topk_then_score_static
// CHECK-SAME:    (%[[L:.*]]: tensor<16x8xf32>)
// CHECK:         %[[W:.*]], %[[IDS:.*]] = moe.route %[[L]] top_k(2) score(softmax) order(topk_then_score) : tensor<16x8xf32> -> tensor<16x2xf32>, tensor<16x2xi32>
// CHECK:         return %[[W]], %[[IDS]]
func.func @route_topk_then_score_static(%logits: tensor<16x8xf32>)
    -> (tensor<16x2xf32>, tensor<16x2xi32>) {
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(topk_then_score)
      : tensor<16x8xf32> -> tensor<16x2xf32>, tensor<16x2xi32>
  return %w, %ids : tensor<16x2xf32>, tensor<16x2xi32>
}

// Hard gating (top-1) and dense gating (k = E) are the two ends of top-k.
// CHECK-LABEL: func.func @route_top1_and_dense
// CHECK:         moe.route %{{.*}} top_k(1) score(softmax) order(score_then_topk) : tensor<?x8xf32> -> tensor<?x1xf32>, tensor<?x1xi32>
// CHECK:         moe.route %{{.*}} top_k(8) score(softmax) order(score_then_topk) : tensor<?x8xf32> -> tensor<?x8xf32>, tensor<?x8xi32>
func.func @route_top1_and_dense(%logits: tensor<?x8xf32>)
    -> (tensor<?x1xi32>, tensor<?x8xi32>) {
  %w1, %ids1 = moe.route %logits top_k(1) score(softmax) order(score_then_topk)
      : tensor<?x8xf32> -> tensor<?x1xf32>, tensor<?x1xi32>
  %w8, %ids8 = moe.route %logits top_k(8) score(softmax) order(score_then_topk)
      : tensor<?x8xf32> -> tensor<?x8xf32>, tensor<?x8xi32>
  return %ids1, %ids8 : tensor<?x1xi32>, tensor<?x8xi32>
}

// Sigmoid scores, renormalised and scaled (attr-dict options).
// CHECK-LABEL: func.func @route_sigmoid_normalize_scaling
// CHECK-SAME:    (%[[L:.*]]: tensor<?x8xf32>)
// CHECK:         moe.route %[[L]] top_k(2) score(sigmoid) order(score_then_topk) {normalize = true, scaling = 2.500000e+00 : f64} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
// CHECK:         moe.route %[[L]] top_k(2) score(sigmoid) order(score_then_topk) {normalize = true} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
// CHECK:         moe.route %[[L]] top_k(2) score(sigmoid) order(score_then_topk) {scaling = 1.600000e+01 : f64} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
func.func @route_sigmoid_normalize_scaling(%logits: tensor<?x8xf32>)
    -> (tensor<?x2xf32>, tensor<?x2xf32>, tensor<?x2xf32>) {
  %w0, %ids0 = moe.route %logits top_k(2) score(sigmoid) order(score_then_topk)
      {normalize = true, scaling = 2.500000e+00 : f64}
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  %w1, %ids1 = moe.route %logits top_k(2) score(sigmoid) order(score_then_topk)
      {normalize = true} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  %w2, %ids2 = moe.route %logits top_k(2) score(sigmoid) order(score_then_topk)
      {scaling = 1.600000e+01 : f64}
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %w0, %w1, %w2 : tensor<?x2xf32>, tensor<?x2xf32>, tensor<?x2xf32>
}

// Zero and negative scaling factors are valid (finite is all that is asked).
// CHECK-LABEL: func.func @route_nonpositive_scaling
// CHECK:         moe.route %{{.*}} top_k(2) score(sigmoid) order(score_then_topk) {scaling = 0.000000e+00 : f64} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
// CHECK:         moe.route %{{.*}} top_k(2) score(sigmoid) order(score_then_topk) {scaling = -1.000000e+00 : f64} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
func.func @route_nonpositive_scaling(%logits: tensor<?x8xf32>)
    -> (tensor<?x2xf32>, tensor<?x2xf32>) {
  %w0, %ids0 = moe.route %logits top_k(2) score(sigmoid) order(score_then_topk)
      {scaling = 0.0 : f64} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  %w1, %ids1 = moe.route %logits top_k(2) score(sigmoid) order(score_then_topk)
      {scaling = -1.0 : f64} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %w0, %w1 : tensor<?x2xf32>, tensor<?x2xf32>
}

// Explicit defaults are not printed: `groups(1, keep 1, max)`, normalize =
// false and scaling = 1.0 all print as the minimal form.
// CHECK-LABEL: func.func @route_explicit_defaults
// CHECK:         moe.route %{{.*}} top_k(2) score(softmax) order(score_then_topk) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
func.func @route_explicit_defaults(%logits: tensor<?x8xf32>)
    -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(score_then_topk)
      groups(1, keep 1, max) {normalize = false, scaling = 1.0 : f64}
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %w, %ids : tensor<?x2xf32>, tensor<?x2xi32>
}

// DeepSeek-V3 selection bias.
// CHECK-LABEL: func.func @route_bias
// CHECK-SAME:    (%[[L:.*]]: tensor<?x8xf32>, %[[B:.*]]: tensor<8xf32>)
// CHECK:         %[[W:.*]], %[[IDS:.*]] = moe.route %[[L]] top_k(2) score(sigmoid) order(score_then_topk) bias(%[[B]] : tensor<8xf32>) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
// CHECK:         return %[[W]], %[[IDS]]
func.func @route_bias(%logits: tensor<?x8xf32>, %bias: tensor<8xf32>)
    -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %w, %ids = moe.route %logits top_k(2) score(sigmoid) order(score_then_topk)
      bias(%bias : tensor<8xf32>)
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %w, %ids : tensor<?x2xf32>, tensor<?x2xi32>
}

// Group-limited routing, ranked by max and by the top-2 sum.
// CHECK-LABEL: func.func @route_groups
// CHECK-SAME:    (%[[L:.*]]: tensor<?x16xf32>)
// CHECK:         moe.route %[[L]] top_k(4) score(sigmoid) order(score_then_topk) groups(4, keep 2, max) : tensor<?x16xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
// CHECK:         moe.route %[[L]] top_k(4) score(sigmoid) order(score_then_topk) groups(8, keep 4, top2_sum) : tensor<?x16xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
func.func @route_groups(%logits: tensor<?x16xf32>)
    -> (tensor<?x4xi32>, tensor<?x4xi32>) {
  %w0, %ids0 = moe.route %logits top_k(4) score(sigmoid) order(score_then_topk)
      groups(4, keep 2, max)
      : tensor<?x16xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
  %w1, %ids1 = moe.route %logits top_k(4) score(sigmoid) order(score_then_topk)
      groups(8, keep 4, top2_sum)
      : tensor<?x16xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
  return %ids0, %ids1 : tensor<?x4xi32>, tensor<?x4xi32>
}

// Noisy top-k gating (training).
// CHECK-LABEL: func.func @route_noise
// CHECK-SAME:    (%[[L:.*]]: tensor<?x8xf32>, %[[N:.*]]: tensor<?x8xf32>, %[[SEED:.*]]: i64)
// CHECK:         %[[W:.*]], %[[IDS:.*]] = moe.route %[[L]] top_k(2) score(softmax) order(topk_then_score) noise(%[[N]], %[[SEED]] : tensor<?x8xf32>) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
// CHECK:         return %[[W]], %[[IDS]]
func.func @route_noise(%logits: tensor<?x8xf32>, %noise: tensor<?x8xf32>,
                       %seed: i64) -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(topk_then_score)
      noise(%noise, %seed : tensor<?x8xf32>)
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %w, %ids : tensor<?x2xf32>, tensor<?x2xi32>
}

// Every optional group and option at once, with the ranked fallback columns
// of next_choice overflow (C = 3 in [top_k, min(2 top_k, E)]).
// CHECK-LABEL: func.func @route_everything
// CHECK-SAME:    (%[[L:.*]]: tensor<?x8xf32>, %[[B:.*]]: tensor<8xf32>, %[[N:.*]]: tensor<?x8xf32>, %[[SEED:.*]]: i64)
// CHECK:         %[[W:.*]], %[[IDS:.*]] = moe.route %[[L]] top_k(2) score(softmax) order(topk_then_score) groups(4, keep 2, top2_sum) bias(%[[B]] : tensor<8xf32>) noise(%[[N]], %[[SEED]] : tensor<?x8xf32>) {normalize = true, scaling = 2.500000e+00 : f64} : tensor<?x8xf32> -> tensor<?x3xf32>, tensor<?x3xi32>
// CHECK:         return %[[W]], %[[IDS]]
func.func @route_everything(%logits: tensor<?x8xf32>, %bias: tensor<8xf32>,
                            %noise: tensor<?x8xf32>, %seed: i64)
    -> (tensor<?x3xf32>, tensor<?x3xi32>) {
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(topk_then_score)
      groups(4, keep 2, top2_sum) bias(%bias : tensor<8xf32>)
      noise(%noise, %seed : tensor<?x8xf32>)
      {normalize = true, scaling = 2.500000e+00 : f64}
      : tensor<?x8xf32> -> tensor<?x3xf32>, tensor<?x3xi32>
  return %w, %ids : tensor<?x3xf32>, tensor<?x3xi32>
}

// Fallback columns up to min(2 top_k, E) = E, and up to the experts of the
// kept groups (2 x 2 = 4 < 2 top_k); ids may leave the column count dynamic.
// CHECK-LABEL: func.func @route_fallback_columns
// CHECK:         moe.route %{{.*}} top_k(3) score(softmax) order(score_then_topk) : tensor<?x4xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
// CHECK:         moe.route %{{.*}} top_k(2) score(softmax) order(score_then_topk) : tensor<?x4xf32> -> tensor<?x4xf32>, tensor<?x?xi32>
// CHECK:         moe.route %{{.*}} top_k(3) score(sigmoid) order(score_then_topk) groups(8, keep 2, max) : tensor<?x16xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
func.func @route_fallback_columns(%logits: tensor<?x4xf32>,
                                  %logits16: tensor<?x16xf32>)
    -> (tensor<?x4xi32>, tensor<?x?xi32>, tensor<?x4xi32>) {
  %w0, %ids0 = moe.route %logits top_k(3) score(softmax) order(score_then_topk)
      : tensor<?x4xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
  %w1, %ids1 = moe.route %logits top_k(2) score(softmax) order(score_then_topk)
      : tensor<?x4xf32> -> tensor<?x4xf32>, tensor<?x?xi32>
  %w2, %ids2 = moe.route %logits16 top_k(3) score(sigmoid) order(score_then_topk)
      groups(8, keep 2, max)
      : tensor<?x16xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
  return %ids0, %ids1, %ids2 : tensor<?x4xi32>, tensor<?x?xi32>, tensor<?x4xi32>
}

//===----------------------------------------------------------------------===//
// moe.topk
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @topk_rank1
// CHECK-SAME:    (%[[IN:.*]]: tensor<64xf32>, %[[V0:.*]]: tensor<4xf32>, %[[I0:.*]]: tensor<4xi32>)
// CHECK:         %[[V:.*]], %[[I:.*]] = moe.topk ins(%[[IN]] : tensor<64xf32>) outs(%[[V0]], %[[I0]] : tensor<4xf32>, tensor<4xi32>) -> tensor<4xf32>, tensor<4xi32>
// CHECK:         return %[[V]], %[[I]]
func.func @topk_rank1(%in: tensor<64xf32>, %v0: tensor<4xf32>, %i0: tensor<4xi32>)
    -> (tensor<4xf32>, tensor<4xi32>) {
  %v, %i = moe.topk ins(%in : tensor<64xf32>)
      outs(%v0, %i0 : tensor<4xf32>, tensor<4xi32>)
      -> tensor<4xf32>, tensor<4xi32>
  return %v, %i : tensor<4xf32>, tensor<4xi32>
}

// CHECK-LABEL: func.func @topk_rank2_dynamic
// CHECK-SAME:    (%[[IN:.*]]: tensor<?x64xf32>, %[[V0:.*]]: tensor<?x4xf32>, %[[I0:.*]]: tensor<?x4xi32>)
// CHECK:         %[[V:.*]], %[[I:.*]] = moe.topk ins(%[[IN]] : tensor<?x64xf32>) outs(%[[V0]], %[[I0]] : tensor<?x4xf32>, tensor<?x4xi32>) -> tensor<?x4xf32>, tensor<?x4xi32>
// CHECK:         return %[[V]], %[[I]]
func.func @topk_rank2_dynamic(%in: tensor<?x64xf32>, %v0: tensor<?x4xf32>,
                              %i0: tensor<?x4xi32>)
    -> (tensor<?x4xf32>, tensor<?x4xi32>) {
  %v, %i = moe.topk ins(%in : tensor<?x64xf32>)
      outs(%v0, %i0 : tensor<?x4xf32>, tensor<?x4xi32>)
      -> tensor<?x4xf32>, tensor<?x4xi32>
  return %v, %i : tensor<?x4xf32>, tensor<?x4xi32>
}

// A dynamic last input dim (k must only be static), and an attribute.
// CHECK-LABEL: func.func @topk_rank3_dynamic_row
// CHECK-SAME:    (%[[IN:.*]]: tensor<2x?x?xf32>, %[[V0:.*]]: tensor<2x?x16xf32>, %[[I0:.*]]: tensor<2x?x16xi32>)
// CHECK:         %[[V:.*]], %[[I:.*]] = moe.topk ins(%[[IN]] : tensor<2x?x?xf32>) outs(%[[V0]], %[[I0]] : tensor<2x?x16xf32>, tensor<2x?x16xi32>) {moe.stage = 1 : i64} -> tensor<2x?x16xf32>, tensor<2x?x16xi32>
// CHECK:         return %[[V]], %[[I]]
func.func @topk_rank3_dynamic_row(%in: tensor<2x?x?xf32>,
                                  %v0: tensor<2x?x16xf32>,
                                  %i0: tensor<2x?x16xi32>)
    -> (tensor<2x?x16xf32>, tensor<2x?x16xi32>) {
  %v, %i = moe.topk ins(%in : tensor<2x?x?xf32>)
      outs(%v0, %i0 : tensor<2x?x16xf32>, tensor<2x?x16xi32>) {moe.stage = 1}
      -> tensor<2x?x16xf32>, tensor<2x?x16xi32>
  return %v, %i : tensor<2x?x16xf32>, tensor<2x?x16xi32>
}

//===----------------------------------------------------------------------===//
// moe.softcap
//===----------------------------------------------------------------------===//

// Laguna: tanh soft-cap of the logits, then the route.
// CHECK-LABEL: func.func @softcap_then_route
// CHECK-SAME:    (%[[L:.*]]: tensor<?x8xf32>)
// CHECK:         %[[C:.*]] = moe.softcap %[[L]] cap(3.000000e+01) : tensor<?x8xf32>
// CHECK:         moe.route %[[C]] top_k(2) score(sigmoid) order(score_then_topk)
func.func @softcap_then_route(%logits: tensor<?x8xf32>)
    -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %capped = moe.softcap %logits cap(30.0) : tensor<?x8xf32>
  %w, %ids = moe.route %capped top_k(2) score(sigmoid) order(score_then_topk)
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %w, %ids : tensor<?x2xf32>, tensor<?x2xi32>
}

// DeepSeek-V4: sqrt(softplus) scores, selection bias, normalised, scaled.
// CHECK-LABEL: func.func @route_sqrt_softplus
// CHECK-SAME:    (%[[L:.*]]: tensor<?x16xf32>, %[[B:.*]]: tensor<16xf32>)
// CHECK:         moe.route %[[L]] top_k(4) score(sqrt_softplus) order(score_then_topk) bias(%[[B]] : tensor<16xf32>) {normalize = true, scaling = 1.500000e+00 : f64} : tensor<?x16xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
func.func @route_sqrt_softplus(%logits: tensor<?x16xf32>, %bias: tensor<16xf32>)
    -> (tensor<?x4xf32>, tensor<?x4xi32>) {
  %w, %ids = moe.route %logits top_k(4) score(sqrt_softplus) order(score_then_topk)
      bias(%bias : tensor<16xf32>) {normalize = true, scaling = 1.5 : f64}
      : tensor<?x16xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
  return %w, %ids : tensor<?x4xf32>, tensor<?x4xi32>
}

// PhiMoE: sparsemixer weights of the top-2 logits, with next_choice columns.
// CHECK-LABEL: func.func @route_sparsemixer
// CHECK:         moe.route %{{.*}} top_k(2) score(sparsemixer) jitter_eps(1.000000e-02) order(topk_then_score) : tensor<?x16xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
func.func @route_sparsemixer(%logits: tensor<?x16xf32>)
    -> (tensor<?x4xf32>, tensor<?x4xi32>) {
  %w, %ids = moe.route %logits top_k(2) score(sparsemixer) jitter_eps(0.01)
      order(topk_then_score)
      : tensor<?x16xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
  return %w, %ids : tensor<?x4xf32>, tensor<?x4xi32>
}

// DeepSeek-V4 hash routing: the table picks by token id, the scores weigh.
// CHECK-LABEL: func.func @route_hash
// CHECK-SAME:    (%[[L:.*]]: tensor<?x16xf32>, %[[T:.*]]: tensor<?xi32>, %[[H:.*]]: tensor<100x4xi32>)
// CHECK:         moe.route %[[L]] top_k(4) score(sigmoid) order(score_then_topk) hash(%[[T]], %[[H]] : tensor<?xi32>, tensor<100x4xi32>) {normalize = true} : tensor<?x16xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
func.func @route_hash(%logits: tensor<?x16xf32>, %tokens: tensor<?xi32>, %table: tensor<100x4xi32>)
    -> (tensor<?x4xf32>, tensor<?x4xi32>) {
  %w, %ids = moe.route %logits top_k(4) score(sigmoid) order(score_then_topk)
      hash(%tokens, %table : tensor<?xi32>, tensor<100x4xi32>) {normalize = true}
      : tensor<?x16xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
  return %w, %ids : tensor<?x4xf32>, tensor<?x4xi32>
}

//===----------------------------------------------------------------------===//
// moe.rms_norm
//===----------------------------------------------------------------------===//

// Gemma 4: RMSNorm of the router input; the default epsilon is elided.
// CHECK-LABEL: func.func @rms_norm_then_linear
// CHECK-SAME:    (%[[X:.*]]: tensor<?x64xf32>, %[[W:.*]]: tensor<64xf32>, %[[G:.*]]: tensor<8x64xf32>, %[[Z:.*]]: tensor<?x8xf32>)
// CHECK:         %[[XR:.*]] = moe.rms_norm %[[X]], %[[W]] : tensor<?x64xf32>, tensor<64xf32>
// CHECK:         moe.linear ins(%[[XR]], %[[G]] :
func.func @rms_norm_then_linear(%x: tensor<?x64xf32>, %w: tensor<64xf32>,
                                %g: tensor<8x64xf32>, %z: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %xr = moe.rms_norm %x, %w : tensor<?x64xf32>, tensor<64xf32>
  %l = moe.linear ins(%xr, %g : tensor<?x64xf32>, tensor<8x64xf32>) outs(%z : tensor<?x8xf32>) -> tensor<?x8xf32>
  return %l : tensor<?x8xf32>
}
