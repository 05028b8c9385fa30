// Round-trip of the dispatch ops (moe.dispatch_plan, moe.gather,
// moe.combine) in every form of their assembly: custom form, generic form and
// bytecode print back to the same custom form, and print -> parse -> print is
// a fixed point.
// RUN: moe-opt %s | moe-opt | FileCheck %s
// RUN: moe-opt %s -mlir-print-op-generic | moe-opt | FileCheck %s
// RUN: moe-opt %s -emit-bytecode | moe-opt | FileCheck %s
// RUN: moe-opt %s > %t.once && moe-opt %t.once > %t.twice && diff %t.once %t.twice

//===----------------------------------------------------------------------===//
// moe.dispatch_plan
//===----------------------------------------------------------------------===//

// Dropless (no capacity group).
// CHECK-LABEL: func.func @plan_dropless
// CHECK-SAME:    (%[[IDS:.*]]: tensor<?x2xi32>, %[[W:.*]]: tensor<?x2xf32>)
// CHECK:         %[[COUNTS:.*]], %[[OFFSETS:.*]], %[[TOKENS:.*]], %[[SLOTW:.*]], %[[DROPPED:.*]] = moe.dispatch_plan %[[IDS]], %[[W]] experts(8) top_k(2) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
// CHECK:         return %[[COUNTS]], %[[OFFSETS]], %[[TOKENS]], %[[SLOTW]], %[[DROPPED]]
func.func @plan_dropless(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>)
    -> (tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>) {
  %counts, %offsets, %tokens, %slot_w, %dropped = moe.dispatch_plan %ids, %w
      experts(8) top_k(2)
      : tensor<?x2xi32>, tensor<?x2xf32>
      -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return %counts, %offsets, %tokens, %slot_w, %dropped
      : tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
}

// Static shapes: token_ids is [T * top_k].
// CHECK-LABEL: func.func @plan_dropless_static
// CHECK:         moe.dispatch_plan %{{.*}}, %{{.*}} experts(4) top_k(1) : tensor<16x1xi32>, tensor<16x1xf32> -> tensor<4xi32>, tensor<5xi32>, tensor<16xi32>, tensor<16xf32>, tensor<i32>
func.func @plan_dropless_static(%ids: tensor<16x1xi32>, %w: tensor<16x1xf32>)
    -> tensor<16xi32> {
  %counts, %offsets, %tokens, %slot_w, %dropped = moe.dispatch_plan %ids, %w
      experts(4) top_k(1)
      : tensor<16x1xi32>, tensor<16x1xf32>
      -> tensor<4xi32>, tensor<5xi32>, tensor<16xi32>, tensor<16xf32>, tensor<i32>
  return %tokens : tensor<16xi32>
}

// Capacity with every overflow x priority combination.
// CHECK-LABEL: func.func @plan_capacity
// CHECK-SAME:    (%[[IDS:.*]]: tensor<?x2xi32>, %[[W:.*]]: tensor<?x2xf32>)
// CHECK:         moe.dispatch_plan %[[IDS]], %[[W]] experts(8) top_k(2) capacity(1.250000e+00) overflow(drop) priority(token_order) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
// CHECK:         moe.dispatch_plan %[[IDS]], %[[W]] experts(8) top_k(2) capacity(1.000000e+00) overflow(drop) priority(batch_prioritized) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
// CHECK:         moe.dispatch_plan %[[IDS]], %[[W]] experts(8) top_k(2) capacity(2.000000e+00) overflow(next_choice) priority(token_order) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
// CHECK:         moe.dispatch_plan %[[IDS]], %[[W]] experts(8) top_k(2) capacity(5.000000e-01) overflow(next_choice) priority(batch_prioritized) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
func.func @plan_capacity(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>)
    -> (tensor<i32>, tensor<i32>, tensor<i32>, tensor<i32>) {
  %c0, %o0, %t0, %s0, %d0 = moe.dispatch_plan %ids, %w experts(8) top_k(2)
      capacity(1.25) overflow(drop) priority(token_order)
      : tensor<?x2xi32>, tensor<?x2xf32>
      -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  %c1, %o1, %t1, %s1, %d1 = moe.dispatch_plan %ids, %w experts(8) top_k(2)
      capacity(1.0) overflow(drop) priority(batch_prioritized)
      : tensor<?x2xi32>, tensor<?x2xf32>
      -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  %c2, %o2, %t2, %s2, %d2 = moe.dispatch_plan %ids, %w experts(8) top_k(2)
      capacity(2.0) overflow(next_choice) priority(token_order)
      : tensor<?x2xi32>, tensor<?x2xf32>
      -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  %c3, %o3, %t3, %s3, %d3 = moe.dispatch_plan %ids, %w experts(8) top_k(2)
      capacity(0.5) overflow(next_choice) priority(batch_prioritized)
      : tensor<?x2xi32>, tensor<?x2xf32>
      -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return %d0, %d1, %d2, %d3 : tensor<i32>, tensor<i32>, tensor<i32>, tensor<i32>
}

// next_choice with the ranked fallback columns (C = 4 = min(2 top_k, E)),
// plus a discardable attribute.
// CHECK-LABEL: func.func @plan_next_choice_fallbacks
// CHECK-SAME:    (%[[IDS:.*]]: tensor<32x4xi32>, %[[W:.*]]: tensor<32x4xf32>)
// CHECK:         moe.dispatch_plan %[[IDS]], %[[W]] experts(8) top_k(2) capacity(1.250000e+00) overflow(next_choice) priority(token_order) {moe.layer = 3 : i64} : tensor<32x4xi32>, tensor<32x4xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<64xi32>, tensor<64xf32>, tensor<i32>
func.func @plan_next_choice_fallbacks(%ids: tensor<32x4xi32>,
                                      %w: tensor<32x4xf32>) -> tensor<i32> {
  %counts, %offsets, %tokens, %slot_w, %dropped = moe.dispatch_plan %ids, %w
      experts(8) top_k(2) capacity(1.25) overflow(next_choice)
      priority(token_order) {moe.layer = 3}
      : tensor<32x4xi32>, tensor<32x4xf32>
      -> tensor<8xi32>, tensor<9xi32>, tensor<64xi32>, tensor<64xf32>, tensor<i32>
  return %dropped : tensor<i32>
}

//===----------------------------------------------------------------------===//
// moe.gather / moe.combine
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @gather
// CHECK-SAME:    (%[[X:.*]]: tensor<?x64xf32>, %[[TOKENS:.*]]: tensor<?xi32>, %[[INIT:.*]]: tensor<?x64xf32>)
// CHECK:         %[[ROWS:.*]] = moe.gather ins(%[[X]], %[[TOKENS]] : tensor<?x64xf32>, tensor<?xi32>) outs(%[[INIT]] : tensor<?x64xf32>) -> tensor<?x64xf32>
// CHECK:         return %[[ROWS]]
func.func @gather(%x: tensor<?x64xf32>, %tokens: tensor<?xi32>,
                  %init: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %rows = moe.gather ins(%x, %tokens : tensor<?x64xf32>, tensor<?xi32>)
                     outs(%init : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %rows : tensor<?x64xf32>
}

// CHECK-LABEL: func.func @gather_static
// CHECK:         moe.gather ins(%{{.*}}, %{{.*}} : tensor<16x64xf32>, tensor<32xi32>) outs(%{{.*}} : tensor<32x64xf32>) -> tensor<32x64xf32>
func.func @gather_static(%x: tensor<16x64xf32>, %tokens: tensor<32xi32>,
                         %init: tensor<32x64xf32>) -> tensor<32x64xf32> {
  %rows = moe.gather ins(%x, %tokens : tensor<16x64xf32>, tensor<32xi32>)
                     outs(%init : tensor<32x64xf32>) -> tensor<32x64xf32>
  return %rows : tensor<32x64xf32>
}

// CHECK-LABEL: func.func @combine
// CHECK-SAME:    (%[[Y:.*]]: tensor<?x64xf32>, %[[TOKENS:.*]]: tensor<?xi32>, %[[SLOTW:.*]]: tensor<?xf32>, %[[ACC:.*]]: tensor<?x64xf32>)
// CHECK:         %[[OUT:.*]] = moe.combine ins(%[[Y]], %[[TOKENS]], %[[SLOTW]] : tensor<?x64xf32>, tensor<?xi32>, tensor<?xf32>) outs(%[[ACC]] : tensor<?x64xf32>) -> tensor<?x64xf32>
// CHECK:         return %[[OUT]]
func.func @combine(%y: tensor<?x64xf32>, %tokens: tensor<?xi32>,
                   %slot_w: tensor<?xf32>, %acc: tensor<?x64xf32>)
    -> tensor<?x64xf32> {
  %out = moe.combine ins(%y, %tokens, %slot_w : tensor<?x64xf32>, tensor<?xi32>, tensor<?xf32>)
                     outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %out : tensor<?x64xf32>
}

// CHECK-LABEL: func.func @combine_static
// CHECK:         moe.combine ins(%{{.*}}, %{{.*}}, %{{.*}} : tensor<32x64xf32>, tensor<32xi32>, tensor<32xf32>) outs(%{{.*}} : tensor<16x64xf32>) -> tensor<16x64xf32>
func.func @combine_static(%y: tensor<32x64xf32>, %tokens: tensor<32xi32>,
                          %slot_w: tensor<32xf32>, %acc: tensor<16x64xf32>)
    -> tensor<16x64xf32> {
  %out = moe.combine ins(%y, %tokens, %slot_w : tensor<32x64xf32>, tensor<32xi32>, tensor<32xf32>)
                     outs(%acc : tensor<16x64xf32>) -> tensor<16x64xf32>
  return %out : tensor<16x64xf32>
}

// -----

// Switch's fixed expert capacity: capacity(tokens N) in place of a factor.
// CHECK-LABEL: func.func @dispatch_plan_capacity_tokens
// CHECK:         moe.dispatch_plan %{{.*}}, %{{.*}} experts(8) top_k(2) capacity(tokens 64) overflow(next_choice) priority(batch_prioritized) : tensor<?x4xi32>, tensor<?x4xf32>
func.func @dispatch_plan_capacity_tokens(%ids: tensor<?x4xi32>, %w: tensor<?x4xf32>) -> tensor<i32> {
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2)
      capacity(tokens 64) overflow(next_choice) priority(batch_prioritized)
      : tensor<?x4xi32>, tensor<?x4xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return %d : tensor<i32>
}

// -----

// NLLB-MoE: capacity ceil(fraction · T), kept weights renormalised.
// CHECK-LABEL: func.func @dispatch_plan_capacity_fraction
// CHECK:         moe.dispatch_plan %{{.*}}, %{{.*}} experts(8) top_k(2) capacity(fraction 7.500000e-01) overflow(drop) priority(token_order) renormalize : tensor<?x2xi32>, tensor<?x2xf32>
func.func @dispatch_plan_capacity_fraction(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> tensor<?xf32> {
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2)
      capacity(fraction 0.75) overflow(drop) priority(token_order) renormalize
      : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return %s : tensor<?xf32>
}

// -----

// Llama 4: the slot weights scale the gathered rows.
// CHECK-LABEL: func.func @gather_scaled
// CHECK:         moe.gather ins(%{{.*}}, %{{.*}} : tensor<?x64xf32>, tensor<?xi32>) scale(%{{.*}} : tensor<?xf32>) outs(%{{.*}} : tensor<?x64xf32>) -> tensor<?x64xf32>
func.func @gather_scaled(%x: tensor<?x64xf32>, %tokens: tensor<?xi32>, %w: tensor<?xf32>,
                         %init: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %rows = moe.gather ins(%x, %tokens : tensor<?x64xf32>, tensor<?xi32>) scale(%w : tensor<?xf32>)
      outs(%init : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %rows : tensor<?x64xf32>
}
