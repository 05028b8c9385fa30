// Folds and canonicalization patterns of the moe dialect.
// RUN: moe-opt %s -canonicalize -split-input-file | FileCheck %s

//===----------------------------------------------------------------------===//
// moe.token_split / moe.token_merge
//===----------------------------------------------------------------------===//

// merge(split(x)) with one head count is x.
// CHECK-LABEL: func.func @merge_of_split
// CHECK-SAME:    (%[[X:.*]]: tensor<?x64xf32>)
// CHECK-NOT:     moe.token_
// CHECK:         return %[[X]]
func.func @merge_of_split(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %sub = moe.token_split %x heads(4) : tensor<?x64xf32> -> tensor<?x16xf32>
  %y = moe.token_merge %sub heads(4) : tensor<?x16xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// split(merge(y)) with one head count is y.
// CHECK-LABEL: func.func @split_of_merge
// CHECK-SAME:    (%[[Y:.*]]: tensor<32x16xf32>)
// CHECK-NOT:     moe.token_
// CHECK:         return %[[Y]]
func.func @split_of_merge(%y: tensor<32x16xf32>) -> tensor<32x16xf32> {
  %x = moe.token_merge %y heads(4) : tensor<32x16xf32> -> tensor<8x64xf32>
  %sub = moe.token_split %x heads(4) : tensor<8x64xf32> -> tensor<32x16xf32>
  return %sub : tensor<32x16xf32>
}

// -----

// The merge stays while something else uses it; the split folds away.
// CHECK-LABEL: func.func @split_of_merge_merge_used
// CHECK-SAME:    (%[[Y:.*]]: tensor<?x16xf32>)
// CHECK:         %[[X:.*]] = moe.token_merge %[[Y]] heads(4) : tensor<?x16xf32> -> tensor<?x64xf32>
// CHECK-NOT:     moe.token_split
// CHECK:         return %[[Y]], %[[X]]
func.func @split_of_merge_merge_used(%y: tensor<?x16xf32>)
    -> (tensor<?x16xf32>, tensor<?x64xf32>) {
  %x = moe.token_merge %y heads(4) : tensor<?x16xf32> -> tensor<?x64xf32>
  %sub = moe.token_split %x heads(4) : tensor<?x64xf32> -> tensor<?x16xf32>
  return %sub, %x : tensor<?x16xf32>, tensor<?x64xf32>
}

// -----

// One head is the identity, for both ops.
// CHECK-LABEL: func.func @one_head
// CHECK-SAME:    (%[[X:.*]]: tensor<?x64xf32>, %[[Y:.*]]: tensor<8x64xf32>)
// CHECK-NOT:     moe.token_
// CHECK:         return %[[X]], %[[Y]]
func.func @one_head(%x: tensor<?x64xf32>, %y: tensor<8x64xf32>)
    -> (tensor<?x64xf32>, tensor<8x64xf32>) {
  %s = moe.token_split %x heads(1) : tensor<?x64xf32> -> tensor<?x64xf32>
  %m = moe.token_merge %y heads(1) : tensor<8x64xf32> -> tensor<8x64xf32>
  return %s, %m : tensor<?x64xf32>, tensor<8x64xf32>
}

// -----

// Different head counts are a different reshape: nothing folds.
// CHECK-LABEL: func.func @merge_of_split_other_heads
// CHECK-SAME:    (%[[X:.*]]: tensor<?x64xf32>)
// CHECK:         %[[SUB:.*]] = moe.token_split %[[X]] heads(4) : tensor<?x64xf32> -> tensor<?x16xf32>
// CHECK:         %[[Y:.*]] = moe.token_merge %[[SUB]] heads(2) : tensor<?x16xf32> -> tensor<?x32xf32>
// CHECK:         return %[[Y]]
func.func @merge_of_split_other_heads(%x: tensor<?x64xf32>) -> tensor<?x32xf32> {
  %sub = moe.token_split %x heads(4) : tensor<?x64xf32> -> tensor<?x16xf32>
  %y = moe.token_merge %sub heads(2) : tensor<?x16xf32> -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

// CHECK-LABEL: func.func @split_of_merge_other_heads
// CHECK-SAME:    (%[[Y:.*]]: tensor<32x16xf32>)
// CHECK:         %[[X:.*]] = moe.token_merge %[[Y]] heads(4) : tensor<32x16xf32> -> tensor<8x64xf32>
// CHECK:         %[[SUB:.*]] = moe.token_split %[[X]] heads(8) : tensor<8x64xf32> -> tensor<64x8xf32>
// CHECK:         return %[[SUB]]
func.func @split_of_merge_other_heads(%y: tensor<32x16xf32>) -> tensor<64x8xf32> {
  %x = moe.token_merge %y heads(4) : tensor<32x16xf32> -> tensor<8x64xf32>
  %sub = moe.token_split %x heads(8) : tensor<8x64xf32> -> tensor<64x8xf32>
  return %sub : tensor<64x8xf32>
}

// -----

// A fold must keep the type: a result with a dynamic width is not replaced by
// a value of static width.
// CHECK-LABEL: func.func @no_fold_across_types
// CHECK-SAME:    (%[[X:.*]]: tensor<?x64xf32>, %[[Y:.*]]: tensor<?x16xf32>)
// CHECK:         %[[S:.*]] = moe.token_split %[[X]] heads(1) : tensor<?x64xf32> -> tensor<?x?xf32>
// CHECK:         %[[M:.*]] = moe.token_merge %[[Y]] heads(4) : tensor<?x16xf32> -> tensor<?x64xf32>
// CHECK:         %[[SM:.*]] = moe.token_split %[[M]] heads(4) : tensor<?x64xf32> -> tensor<?x?xf32>
// CHECK:         return %[[S]], %[[SM]]
func.func @no_fold_across_types(%x: tensor<?x64xf32>, %y: tensor<?x16xf32>)
    -> (tensor<?x?xf32>, tensor<?x?xf32>) {
  %s = moe.token_split %x heads(1) : tensor<?x64xf32> -> tensor<?x?xf32>
  %m = moe.token_merge %y heads(4) : tensor<?x16xf32> -> tensor<?x64xf32>
  %sm = moe.token_split %m heads(4) : tensor<?x64xf32> -> tensor<?x?xf32>
  return %s, %sm : tensor<?x?xf32>, tensor<?x?xf32>
}

// -----

// split(split(x)) is not an inverse pair: nothing folds.
// CHECK-LABEL: func.func @split_of_split
// CHECK:         moe.token_split %{{.*}} heads(2) : tensor<?x64xf32> -> tensor<?x32xf32>
// CHECK:         moe.token_split %{{.*}} heads(2) : tensor<?x32xf32> -> tensor<?x16xf32>
func.func @split_of_split(%x: tensor<?x64xf32>) -> tensor<?x16xf32> {
  %a = moe.token_split %x heads(2) : tensor<?x64xf32> -> tensor<?x32xf32>
  %b = moe.token_split %a heads(2) : tensor<?x32xf32> -> tensor<?x16xf32>
  return %b : tensor<?x16xf32>
}

//===----------------------------------------------------------------------===//
// moe.route
//===----------------------------------------------------------------------===//

// -----

// Keeping every group is plain top-k routing.
// CHECK-LABEL: func.func @route_keep_all_groups
// CHECK-SAME:    (%[[L:.*]]: tensor<?x16xf32>)
// CHECK:         %[[W:.*]], %[[IDS:.*]] = moe.route %[[L]] top_k(4) score(sigmoid) order(score_then_topk) {normalize = true} : tensor<?x16xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
// CHECK:         return %[[W]], %[[IDS]]
func.func @route_keep_all_groups(%logits: tensor<?x16xf32>)
    -> (tensor<?x4xf32>, tensor<?x4xi32>) {
  %w, %ids = moe.route %logits top_k(4) score(sigmoid) order(score_then_topk)
      groups(4, keep 4, top2_sum) {normalize = true}
      : tensor<?x16xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
  return %w, %ids : tensor<?x4xf32>, tensor<?x4xi32>
}

// -----

// CHECK-LABEL: func.func @route_keep_some_groups
// CHECK:         moe.route %{{.*}} top_k(4) score(sigmoid) order(score_then_topk) groups(4, keep 3, top2_sum) : tensor<?x16xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
func.func @route_keep_some_groups(%logits: tensor<?x16xf32>)
    -> (tensor<?x4xf32>, tensor<?x4xi32>) {
  %w, %ids = moe.route %logits top_k(4) score(sigmoid) order(score_then_topk)
      groups(4, keep 3, top2_sum)
      : tensor<?x16xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
  return %w, %ids : tensor<?x4xf32>, tensor<?x4xi32>
}

//===----------------------------------------------------------------------===//
// moe.dispatch_plan
//===----------------------------------------------------------------------===//

// -----

// next_choice without fallback columns drops what overflows.
// CHECK-LABEL: func.func @plan_next_choice_without_fallbacks
// CHECK:         moe.dispatch_plan %{{.*}}, %{{.*}} experts(8) top_k(2) capacity(1.250000e+00) overflow(drop) priority(batch_prioritized) : tensor<?x2xi32>, tensor<?x2xf32>
func.func @plan_next_choice_without_fallbacks(%ids: tensor<?x2xi32>,
                                              %w: tensor<?x2xf32>) -> tensor<i32> {
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2)
      capacity(1.25) overflow(next_choice) priority(batch_prioritized)
      : tensor<?x2xi32>, tensor<?x2xf32>
      -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return %d : tensor<i32>
}

// -----

// CHECK-LABEL: func.func @plan_next_choice_with_fallbacks
// CHECK:         moe.dispatch_plan %{{.*}}, %{{.*}} experts(8) top_k(2) capacity(1.250000e+00) overflow(next_choice) priority(token_order) : tensor<?x3xi32>, tensor<?x3xf32>
func.func @plan_next_choice_with_fallbacks(%ids: tensor<?x3xi32>,
                                           %w: tensor<?x3xf32>) -> tensor<i32> {
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2)
      capacity(1.25) overflow(next_choice) priority(token_order)
      : tensor<?x3xi32>, tensor<?x3xf32>
      -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return %d : tensor<i32>
}

//===----------------------------------------------------------------------===//
// Dead ops: every moe op is Pure, so an unused one is erased.
//===----------------------------------------------------------------------===//

// -----

// CHECK-LABEL: func.func @dead_ops
// CHECK-SAME:    (%[[X:[^:]+]]: tensor<?x64xf32>,
// CHECK-NOT:     moe.
// CHECK:         return %[[X]]
func.func @dead_ops(%x: tensor<?x64xf32>, %gate: tensor<8x64xf32>,
                    %zero: tensor<?x8xf32>, %w1: tensor<8x128x64xf32>,
                    %w2: tensor<8x64x128xf32>, %rows0: tensor<?x64xf32>,
                    %q: tensor<?x32xf32>, %k: tensor<4x16xf32>,
                    %pw0: tensor<?x1x2xf32>, %pi0: tensor<?x1x2xi32>,
                    %p: tensor<32xf32>, %v: tensor<16x64xf32>,
                    %sw1: tensor<128x64xf32>, %sw2: tensor<64x128xf32>,
                    %tv0: tensor<?x2xf32>, %ti0: tensor<?x2xi32>)
    -> tensor<?x64xf32> {
  %logits = moe.linear ins(%x, %gate : tensor<?x64xf32>, tensor<8x64xf32>)
      outs(%zero : tensor<?x8xf32>) -> tensor<?x8xf32>
  %tv, %ti = moe.topk ins(%logits : tensor<?x8xf32>)
      outs(%tv0, %ti0 : tensor<?x2xf32>, tensor<?x2xi32>)
      -> tensor<?x2xf32>, tensor<?x2xi32>
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(topk_then_score)
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  %counts, %offsets, %tokens, %slot_w, %dropped = moe.dispatch_plan %ids, %w
      experts(8) top_k(2) : tensor<?x2xi32>, tensor<?x2xf32>
      -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  %rows = moe.gather ins(%x, %tokens : tensor<?x64xf32>, tensor<?xi32>)
      outs(%rows0 : tensor<?x64xf32>) -> tensor<?x64xf32>
  %y = moe.expert_ffn gelu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>)
      outs(%rows0 : tensor<?x64xf32>) -> tensor<?x64xf32>
  %out = moe.combine ins(%y, %tokens, %slot_w : tensor<?x64xf32>, tensor<?xi32>, tensor<?xf32>)
      outs(%x : tensor<?x64xf32>) -> tensor<?x64xf32>
  %shared = moe.shared_expert relu
      ins(%x, %sw1, %sw2 : tensor<?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>)
      outs(%x : tensor<?x64xf32>) -> tensor<?x64xf32>
  %lb = moe.aux_loss load_balance %logits ids(%ids : tensor<?x2xi32>)
      : tensor<?x8xf32> -> tensor<f32>
  %qn = moe.batch_norm %q, %p, %p, %p, %p : tensor<?x32xf32>, tensor<32xf32>
  %pw, %pi = moe.product_key_topk heads(1) top_k(2) score(softmax)
      ins(%qn, %k, %k : tensor<?x32xf32>, tensor<4x16xf32>, tensor<4x16xf32>)
      outs(%pw0, %pi0 : tensor<?x1x2xf32>, tensor<?x1x2xi32>)
      -> tensor<?x1x2xf32>, tensor<?x1x2xi32>
  %pkm = moe.single_neuron_experts
      ins(%x, %pi, %pw, %v : tensor<?x64xf32>, tensor<?x1x2xi32>, tensor<?x1x2xf32>, tensor<16x64xf32>)
      outs(%x : tensor<?x64xf32>) -> tensor<?x64xf32>
  %sub = moe.token_split %x heads(2) : tensor<?x64xf32> -> tensor<?x32xf32>
  return %x : tensor<?x64xf32>
}
