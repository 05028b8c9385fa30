// moe-strip-router-noise: noisy top-k gating becomes its inference form.
// RUN: moe-opt %s -moe-strip-router-noise -split-input-file | FileCheck %s

// The noise operands go, and so does the noise projection that only fed them
// (with its init and the seed constant).
// CHECK-LABEL: func.func @noisy_route
// CHECK-SAME:    (%[[X:.*]]: tensor<?x64xf32>, %[[GATE:.*]]: tensor<8x64xf32>, %[[WNOISE:.*]]: tensor<8x64xf32>, %[[ZERO:.*]]: tensor<?x8xf32>)
// CHECK-NOT:     arith.constant
// CHECK:         %[[LOGITS:.*]] = moe.linear ins(%[[X]], %[[GATE]] : tensor<?x64xf32>, tensor<8x64xf32>) outs(%[[ZERO]] : tensor<?x8xf32>) -> tensor<?x8xf32>
// CHECK-NOT:     moe.linear
// CHECK:         %[[W:.*]], %[[IDS:.*]] = moe.route %[[LOGITS]] top_k(2) score(softmax) order(topk_then_score) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
// CHECK:         return %[[W]], %[[IDS]]
func.func @noisy_route(%x: tensor<?x64xf32>, %gate: tensor<8x64xf32>,
                       %w_noise: tensor<8x64xf32>, %zero: tensor<?x8xf32>)
    -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %seed = arith.constant 42 : i64
  %logits = moe.linear ins(%x, %gate : tensor<?x64xf32>, tensor<8x64xf32>)
      outs(%zero : tensor<?x8xf32>) -> tensor<?x8xf32>
  %noise = moe.linear ins(%x, %w_noise : tensor<?x64xf32>, tensor<8x64xf32>)
      outs(%zero : tensor<?x8xf32>) -> tensor<?x8xf32>
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(topk_then_score)
      noise(%noise, %seed : tensor<?x8xf32>)
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %w, %ids : tensor<?x2xf32>, tensor<?x2xi32>
}

// -----

// The init of the erased noise projection goes when nothing else uses it.
// CHECK-LABEL: func.func @noise_init_erased
// CHECK-SAME:    (%[[L:.*]]: tensor<4x8xf32>, %[[X:.*]]: tensor<4x64xf32>, %[[WNOISE:.*]]: tensor<8x64xf32>)
// CHECK-NEXT:    %[[W:.*]], %[[IDS:.*]] = moe.route %[[L]] top_k(2) score(softmax) order(topk_then_score) {normalize = true} : tensor<4x8xf32> -> tensor<4x2xf32>, tensor<4x2xi32>
// CHECK-NEXT:    return %[[W]], %[[IDS]]
func.func @noise_init_erased(%logits: tensor<4x8xf32>, %x: tensor<4x64xf32>,
                             %w_noise: tensor<8x64xf32>)
    -> (tensor<4x2xf32>, tensor<4x2xi32>) {
  %seed = arith.constant 7 : i64
  %zero = arith.constant dense<0.0> : tensor<4x8xf32>
  %noise = moe.linear ins(%x, %w_noise : tensor<4x64xf32>, tensor<8x64xf32>)
      outs(%zero : tensor<4x8xf32>) -> tensor<4x8xf32>
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(topk_then_score)
      noise(%noise, %seed : tensor<4x8xf32>) {normalize = true}
      : tensor<4x8xf32> -> tensor<4x2xf32>, tensor<4x2xi32>
  return %w, %ids : tensor<4x2xf32>, tensor<4x2xi32>
}

// -----

// Other options and operands of the route are kept; noise given as block
// arguments leaves nothing to erase.
// CHECK-LABEL: func.func @noisy_route_all_options
// CHECK-SAME:    (%[[L:.*]]: tensor<?x8xf32>, %[[B:.*]]: tensor<8xf32>, %[[N:.*]]: tensor<?x8xf32>, %[[SEED:.*]]: i64)
// CHECK-NEXT:    %[[W:.*]], %[[IDS:.*]] = moe.route %[[L]] top_k(2) score(sigmoid) order(score_then_topk) groups(4, keep 2, top2_sum) bias(%[[B]] : tensor<8xf32>) {normalize = true, scaling = 2.500000e+00 : f64} : tensor<?x8xf32> -> tensor<?x3xf32>, tensor<?x3xi32>
// CHECK-NEXT:    return %[[W]], %[[IDS]]
func.func @noisy_route_all_options(%logits: tensor<?x8xf32>, %bias: tensor<8xf32>,
                                   %noise: tensor<?x8xf32>, %seed: i64)
    -> (tensor<?x3xf32>, tensor<?x3xi32>) {
  %w, %ids = moe.route %logits top_k(2) score(sigmoid) order(score_then_topk)
      groups(4, keep 2, top2_sum) bias(%bias : tensor<8xf32>)
      noise(%noise, %seed : tensor<?x8xf32>)
      {normalize = true, scaling = 2.500000e+00 : f64}
      : tensor<?x8xf32> -> tensor<?x3xf32>, tensor<?x3xi32>
  return %w, %ids : tensor<?x3xf32>, tensor<?x3xi32>
}

// -----

// A noise projection (and seed) still used elsewhere stays; two noisy routes
// sharing them both lose their noise.
// CHECK-LABEL: func.func @noise_used_elsewhere
// CHECK:         %[[SEED:.*]] = arith.constant 3 : i64
// CHECK:         %[[NOISE:.*]] = moe.linear
// CHECK:         %[[W0:.*]], %[[IDS0:.*]] = moe.route %{{.*}} top_k(1) score(softmax) order(topk_then_score) : tensor<?x8xf32> -> tensor<?x1xf32>, tensor<?x1xi32>
// CHECK:         %[[W1:.*]], %[[IDS1:.*]] = moe.route %{{.*}} top_k(2) score(softmax) order(topk_then_score) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
// CHECK:         return %[[NOISE]], %[[SEED]], %[[IDS0]], %[[IDS1]]
func.func @noise_used_elsewhere(%x: tensor<?x64xf32>, %logits: tensor<?x8xf32>,
                                %w_noise: tensor<8x64xf32>, %zero: tensor<?x8xf32>)
    -> (tensor<?x8xf32>, i64, tensor<?x1xi32>, tensor<?x2xi32>) {
  %seed = arith.constant 3 : i64
  %noise = moe.linear ins(%x, %w_noise : tensor<?x64xf32>, tensor<8x64xf32>)
      outs(%zero : tensor<?x8xf32>) -> tensor<?x8xf32>
  %w0, %ids0 = moe.route %logits top_k(1) score(softmax) order(topk_then_score)
      noise(%noise, %seed : tensor<?x8xf32>)
      : tensor<?x8xf32> -> tensor<?x1xf32>, tensor<?x1xi32>
  %w1, %ids1 = moe.route %logits top_k(2) score(softmax) order(topk_then_score)
      noise(%noise, %seed : tensor<?x8xf32>)
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %noise, %seed, %ids0, %ids1
      : tensor<?x8xf32>, i64, tensor<?x1xi32>, tensor<?x2xi32>
}

// -----

// Routes without noise, and every other op, are left exactly as they are:
// dead ops stay and nothing is folded (that is -canonicalize's job).
// CHECK-LABEL: func.func @no_noise_untouched
// CHECK-SAME:    (%[[L:.*]]: tensor<?x8xf32>, %[[X:.*]]: tensor<?x64xf32>)
// CHECK-NEXT:    %[[C:.*]] = arith.constant 0 : i64
// CHECK-NEXT:    %[[W:.*]], %[[IDS:.*]] = moe.route %[[L]] top_k(2) score(softmax) order(score_then_topk) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
// CHECK-NEXT:    %[[DEAD_W:.*]], %[[DEAD_IDS:.*]] = moe.route %[[L]] top_k(1) score(sigmoid) order(score_then_topk) : tensor<?x8xf32> -> tensor<?x1xf32>, tensor<?x1xi32>
// CHECK-NEXT:    %[[SUB:.*]] = moe.token_split %[[X]] heads(1) : tensor<?x64xf32> -> tensor<?x64xf32>
// CHECK-NEXT:    return %[[W]], %[[IDS]], %[[SUB]]
func.func @no_noise_untouched(%logits: tensor<?x8xf32>, %x: tensor<?x64xf32>)
    -> (tensor<?x2xf32>, tensor<?x2xi32>, tensor<?x64xf32>) {
  %unused = arith.constant 0 : i64
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(score_then_topk)
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  %dead_w, %dead_ids = moe.route %logits top_k(1) score(sigmoid) order(score_then_topk)
      : tensor<?x8xf32> -> tensor<?x1xf32>, tensor<?x1xi32>
  %sub = moe.token_split %x heads(1) : tensor<?x64xf32> -> tensor<?x64xf32>
  return %w, %ids, %sub : tensor<?x2xf32>, tensor<?x2xi32>, tensor<?x64xf32>
}

// -----

// Noisy routes nested in regions are found too.
// CHECK-LABEL: func.func @nested_route
// CHECK:         scf.if
// CHECK-NEXT:      %{{.*}}, %[[IDS:.*]] = moe.route %{{.*}} top_k(2) score(softmax) order(topk_then_score) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
// CHECK-NEXT:      scf.yield %[[IDS]]
func.func @nested_route(%cond: i1, %logits: tensor<?x8xf32>,
                        %noise: tensor<?x8xf32>, %seed: i64,
                        %other: tensor<?x2xi32>) -> tensor<?x2xi32> {
  %r = scf.if %cond -> tensor<?x2xi32> {
    %w, %ids = moe.route %logits top_k(2) score(softmax) order(topk_then_score)
        noise(%noise, %seed : tensor<?x8xf32>)
        : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
    scf.yield %ids : tensor<?x2xi32>
  } else {
    scf.yield %other : tensor<?x2xi32>
  }
  return %r : tensor<?x2xi32>
}
