// RUN: moe-opt --moe-add-route-variant -split-input-file %s | FileCheck %s

// The routing variant returns topk_ids and topk_weights only: the experts,
// the combine and the expert weights are gone; the router's weight, the
// selection bias and the seed stay, in their order.
// CHECK-LABEL: func.func @layer(
// CHECK-LABEL: func.func @layer__route(
// CHECK-SAME:    %[[X:[^:]*]]: tensor<?x16xf32> {moe.name = "x"}, %[[GATE:[^:]*]]: tensor<4x16xf32> {moe.name = "gate"}, %[[BIAS:[^:]*]]: tensor<4xf32> {moe.name = "gate_bias"})
// CHECK-SAME:    -> (tensor<?x2xi32> {moe.name = "topk_ids"}, tensor<?x2xf32> {moe.name = "topk_weights"})
// CHECK-SAME:    attributes {moe.layer = "layer", moe.variant = "route"}
// CHECK:         %[[P:.*]] = moe.linear ins(%[[X]], %[[GATE]]
// CHECK:         %[[W:.*]], %[[IDS:.*]] = moe.route %[[P]] {{.*}} bias(%[[BIAS]]
// CHECK-NOT:     moe.dispatch_plan
// CHECK-NOT:     moe.expert_ffn
// CHECK:         return %[[IDS]], %[[W]] : tensor<?x2xi32>, tensor<?x2xf32>
func.func @layer(%x: tensor<?x16xf32> {moe.name = "x"}, %gate: tensor<4x16xf32> {moe.name = "gate"},
                 %bias: tensor<4xf32> {moe.name = "gate_bias"},
                 %w1: tensor<4x8x16xf32> {moe.name = "w1"}, %w2: tensor<4x16x8xf32> {moe.name = "w2"})
    -> (tensor<?x16xf32> {moe.name = "out"}, tensor<?x2xi32> {moe.name = "topk_ids"},
        tensor<?x2xf32> {moe.name = "topk_weights"}) {
  %c0 = arith.constant 0 : index
  %cst = arith.constant 0.000000e+00 : f32
  %t = tensor.dim %x, %c0 : tensor<?x16xf32>
  %e0 = tensor.empty(%t) : tensor<?x4xf32>
  %z0 = linalg.fill ins(%cst : f32) outs(%e0 : tensor<?x4xf32>) -> tensor<?x4xf32>
  %proj = moe.linear ins(%x, %gate : tensor<?x16xf32>, tensor<4x16xf32>) outs(%z0 : tensor<?x4xf32>) -> tensor<?x4xf32>
  %weights, %ids = moe.route %proj top_k(2) score(sigmoid) order(score_then_topk) bias(%bias : tensor<4xf32>) : tensor<?x4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  %counts, %offsets, %token_ids, %slot_weights, %dropped = moe.dispatch_plan %ids, %weights experts(4) top_k(2) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  %s = tensor.dim %token_ids, %c0 : tensor<?xi32>
  %e1 = tensor.empty(%s) : tensor<?x16xf32>
  %rows = moe.gather ins(%x, %token_ids : tensor<?x16xf32>, tensor<?xi32>) outs(%e1 : tensor<?x16xf32>) -> tensor<?x16xf32>
  %e2 = tensor.empty(%s) : tensor<?x16xf32>
  %z2 = linalg.fill ins(%cst : f32) outs(%e2 : tensor<?x16xf32>) -> tensor<?x16xf32>
  %y = moe.expert_ffn gelu ins(%rows, %offsets, %w1, %w2 : tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) outs(%z2 : tensor<?x16xf32>) -> tensor<?x16xf32>
  %e3 = tensor.empty(%t) : tensor<?x16xf32>
  %z3 = linalg.fill ins(%cst : f32) outs(%e3 : tensor<?x16xf32>) -> tensor<?x16xf32>
  %out = moe.combine ins(%y, %token_ids, %slot_weights : tensor<?x16xf32>, tensor<?xi32>, tensor<?xf32>) outs(%z3 : tensor<?x16xf32>) -> tensor<?x16xf32>
  return %out, %ids, %weights : tensor<?x16xf32>, tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// Without routing results (or a private function): no variant.
// CHECK-LABEL: func.func @no_routing(
// CHECK-NOT:   __route
func.func @no_routing(%x: tensor<?x16xf32> {moe.name = "x"}) -> (tensor<?x16xf32> {moe.name = "out"}) {
  return %x : tensor<?x16xf32>
}
func.func private @helper(%x: tensor<?x16xf32>) -> (tensor<?x2xi32> {moe.name = "topk_ids"}, tensor<?x2xf32> {moe.name = "topk_weights"})
