// Whole layers built from the moe ops (the compositions docs/dialect.md
// describes) verify and round-trip.
// RUN: moe-opt %s | moe-opt | FileCheck %s
// RUN: moe-opt %s -mlir-print-op-generic | moe-opt | FileCheck %s
// RUN: moe-opt %s > %t.once && moe-opt %t.once > %t.twice && diff %t.once %t.twice

// Mixtral-style sparse top-2 MoE, dropless, plus the load-balancing loss.
// CHECK-LABEL: func.func @mixtral_layer
// CHECK-SAME:    (%[[X:.*]]: tensor<?x64xf32>, %[[GATE:.*]]: tensor<8x64xf32>, %[[W1:.*]]: tensor<8x128x64xbf16>, %[[W2:.*]]: tensor<8x64x128xbf16>, %[[W3:.*]]: tensor<8x128x64xbf16>, %[[ZL:.*]]: tensor<?x8xf32>, %[[ZR:.*]]: tensor<?x64xf32>, %[[ZO:.*]]: tensor<?x64xf32>)
// CHECK:         %[[LOGITS:.*]] = moe.linear ins(%[[X]], %[[GATE]] : {{.*}}) outs(%[[ZL]] : {{.*}})
// CHECK:         %[[W:.*]], %[[IDS:.*]] = moe.route %[[LOGITS]] top_k(2) score(softmax) order(topk_then_score)
// CHECK:         %[[COUNTS:.*]], %[[OFFSETS:.*]], %[[TOKENS:.*]], %[[SLOTW:.*]], %[[DROPPED:.*]] = moe.dispatch_plan %[[IDS]], %[[W]] experts(8) top_k(2) :
// CHECK:         %[[ROWS:.*]] = moe.gather ins(%[[X]], %[[TOKENS]] : {{.*}}) outs(%[[ZR]] : {{.*}})
// CHECK:         %[[Y:.*]] = moe.expert_ffn swiglu ins(%[[ROWS]], %[[OFFSETS]], %[[W1]], %[[W2]] : {{.*}}) up(%[[W3]] : {{.*}}) outs(%[[ZR]] : {{.*}})
// CHECK:         %[[OUT:.*]] = moe.combine ins(%[[Y]], %[[TOKENS]], %[[SLOTW]] : {{.*}}) outs(%[[ZO]] : {{.*}})
// CHECK:         %[[LB:.*]] = moe.aux_loss load_balance %[[LOGITS]] ids(%[[IDS]] : tensor<?x2xi32>) {coefficient = 2.000000e-02 : f64}
// CHECK:         return %[[OUT]], %[[LB]]
func.func @mixtral_layer(%x: tensor<?x64xf32>, %gate: tensor<8x64xf32>,
    %w1: tensor<8x128x64xbf16>, %w2: tensor<8x64x128xbf16>,
    %w3: tensor<8x128x64xbf16>, %zero_logits: tensor<?x8xf32>,
    %zero_rows: tensor<?x64xf32>, %zero_out: tensor<?x64xf32>)
    -> (tensor<?x64xf32>, tensor<f32>) {
  %logits = moe.linear ins(%x, %gate : tensor<?x64xf32>, tensor<8x64xf32>)
      outs(%zero_logits : tensor<?x8xf32>) -> tensor<?x8xf32>
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(topk_then_score)
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  %counts, %offsets, %tokens, %slot_w, %dropped = moe.dispatch_plan %ids, %w
      experts(8) top_k(2) : tensor<?x2xi32>, tensor<?x2xf32>
      -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  %rows = moe.gather ins(%x, %tokens : tensor<?x64xf32>, tensor<?xi32>)
      outs(%zero_rows : tensor<?x64xf32>) -> tensor<?x64xf32>
  %y = moe.expert_ffn swiglu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xbf16>, tensor<8x64x128xbf16>)
      up(%w3 : tensor<8x128x64xbf16>)
      outs(%zero_rows : tensor<?x64xf32>) -> tensor<?x64xf32>
  %out = moe.combine ins(%y, %tokens, %slot_w : tensor<?x64xf32>, tensor<?xi32>, tensor<?xf32>)
      outs(%zero_out : tensor<?x64xf32>) -> tensor<?x64xf32>
  %lb = moe.aux_loss load_balance %logits ids(%ids : tensor<?x2xi32>)
      {coefficient = 2.000000e-02 : f64} : tensor<?x8xf32> -> tensor<f32>
  return %out, %lb : tensor<?x64xf32>, tensor<f32>
}

// DeepSeek-V3-style: sigmoid scores, selection bias, group-limited routing,
// routed scaling, capacity with next_choice overflow (fallback columns), and
// an ungated shared expert accumulated into the routed output.
// CHECK-LABEL: func.func @deepseek_layer
// CHECK:         %[[LOGITS:.*]] = moe.linear
// CHECK:         %[[W:.*]], %[[IDS:.*]] = moe.route %[[LOGITS]] top_k(4) score(sigmoid) order(score_then_topk) groups(8, keep 4, top2_sum) bias(%{{.*}} : tensor<32xf32>) {normalize = true, scaling = 2.500000e+00 : f64} : tensor<?x32xf32> -> tensor<?x8xf32>, tensor<?x8xi32>
// CHECK:         %{{.*}}, %[[OFFSETS:.*]], %[[TOKENS:.*]], %[[SLOTW:.*]], %{{.*}} = moe.dispatch_plan %[[IDS]], %[[W]] experts(32) top_k(4) capacity(1.250000e+00) overflow(next_choice) priority(batch_prioritized)
// CHECK:         %[[ROWS:.*]] = moe.gather
// CHECK:         %[[Y:.*]] = moe.expert_ffn swiglu ins(%[[ROWS]], %[[OFFSETS]]
// CHECK:         %[[ROUTED:.*]] = moe.combine ins(%[[Y]], %[[TOKENS]], %[[SLOTW]]
// CHECK:         %[[OUT:.*]] = moe.shared_expert swiglu {{.*}} outs(%[[ROUTED]] : tensor<?x64xf32>)
// CHECK:         return %[[OUT]]
func.func @deepseek_layer(%x: tensor<?x64xf32>, %gate: tensor<32x64xf32>,
    %bias: tensor<32xf32>, %w1: tensor<32x32x64xbf16>,
    %w2: tensor<32x64x32xbf16>, %w3: tensor<32x32x64xbf16>,
    %sw1: tensor<128x64xbf16>, %sw2: tensor<64x128xbf16>,
    %sw3: tensor<128x64xbf16>, %zero_logits: tensor<?x32xf32>,
    %zero_rows: tensor<?x64xf32>, %residual: tensor<?x64xf32>)
    -> tensor<?x64xf32> {
  %logits = moe.linear ins(%x, %gate : tensor<?x64xf32>, tensor<32x64xf32>)
      outs(%zero_logits : tensor<?x32xf32>) -> tensor<?x32xf32>
  %w, %ids = moe.route %logits top_k(4) score(sigmoid) order(score_then_topk)
      groups(8, keep 4, top2_sum) bias(%bias : tensor<32xf32>)
      {normalize = true, scaling = 2.5 : f64}
      : tensor<?x32xf32> -> tensor<?x8xf32>, tensor<?x8xi32>
  %counts, %offsets, %tokens, %slot_w, %dropped = moe.dispatch_plan %ids, %w
      experts(32) top_k(4) capacity(1.25) overflow(next_choice)
      priority(batch_prioritized) : tensor<?x8xi32>, tensor<?x8xf32>
      -> tensor<32xi32>, tensor<33xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  %rows = moe.gather ins(%x, %tokens : tensor<?x64xf32>, tensor<?xi32>)
      outs(%zero_rows : tensor<?x64xf32>) -> tensor<?x64xf32>
  %y = moe.expert_ffn swiglu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x64xf32>, tensor<33xi32>, tensor<32x32x64xbf16>, tensor<32x64x32xbf16>)
      up(%w3 : tensor<32x32x64xbf16>)
      outs(%zero_rows : tensor<?x64xf32>) -> tensor<?x64xf32>
  %routed = moe.combine ins(%y, %tokens, %slot_w : tensor<?x64xf32>, tensor<?xi32>, tensor<?xf32>)
      outs(%residual : tensor<?x64xf32>) -> tensor<?x64xf32>
  %out = moe.shared_expert swiglu
      ins(%x, %sw1, %sw2 : tensor<?x64xf32>, tensor<128x64xbf16>, tensor<64x128xbf16>)
      up(%sw3 : tensor<128x64xbf16>)
      outs(%routed : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %out : tensor<?x64xf32>
}

// MH-MoE: head projection, split into 4 sub-tokens of width 16, a top-2 MoE
// over sub-tokens, merge, merge projection.
// CHECK-LABEL: func.func @mh_moe_layer
// CHECK:         %[[H:.*]] = moe.linear
// CHECK:         %[[SUB:.*]] = moe.token_split %[[H]] heads(4) : tensor<?x64xf32> -> tensor<?x16xf32>
// CHECK:         moe.route
// CHECK:         moe.dispatch_plan
// CHECK:         moe.gather ins(%[[SUB]],
// CHECK:         moe.expert_ffn gelu
// CHECK:         %[[COMBINED:.*]] = moe.combine
// CHECK:         %[[MERGED:.*]] = moe.token_merge %[[COMBINED]] heads(4) : tensor<?x16xf32> -> tensor<?x64xf32>
// CHECK:         moe.linear ins(%[[MERGED]],
func.func @mh_moe_layer(%x: tensor<?x64xf32>, %head_proj: tensor<64x64xf32>,
    %merge_proj: tensor<64x64xf32>, %gate: tensor<8x16xf32>,
    %w1: tensor<8x32x16xf32>, %w2: tensor<8x16x32xf32>,
    %zero_x: tensor<?x64xf32>, %zero_logits: tensor<?x8xf32>,
    %zero_sub: tensor<?x16xf32>) -> tensor<?x64xf32> {
  %h = moe.linear ins(%x, %head_proj : tensor<?x64xf32>, tensor<64x64xf32>)
      outs(%zero_x : tensor<?x64xf32>) -> tensor<?x64xf32>
  %sub = moe.token_split %h heads(4) : tensor<?x64xf32> -> tensor<?x16xf32>
  %logits = moe.linear ins(%sub, %gate : tensor<?x16xf32>, tensor<8x16xf32>)
      outs(%zero_logits : tensor<?x8xf32>) -> tensor<?x8xf32>
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(score_then_topk)
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  %counts, %offsets, %tokens, %slot_w, %dropped = moe.dispatch_plan %ids, %w
      experts(8) top_k(2) capacity(2.0) overflow(drop) priority(token_order)
      : tensor<?x2xi32>, tensor<?x2xf32>
      -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  %rows = moe.gather ins(%sub, %tokens : tensor<?x16xf32>, tensor<?xi32>)
      outs(%zero_sub : tensor<?x16xf32>) -> tensor<?x16xf32>
  %y = moe.expert_ffn gelu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x16xf32>, tensor<9xi32>, tensor<8x32x16xf32>, tensor<8x16x32xf32>)
      outs(%zero_sub : tensor<?x16xf32>) -> tensor<?x16xf32>
  %combined = moe.combine ins(%y, %tokens, %slot_w : tensor<?x16xf32>, tensor<?xi32>, tensor<?xf32>)
      outs(%zero_sub : tensor<?x16xf32>) -> tensor<?x16xf32>
  %merged = moe.token_merge %combined heads(4) : tensor<?x16xf32> -> tensor<?x64xf32>
  %out = moe.linear ins(%merged, %merge_proj : tensor<?x64xf32>, tensor<64x64xf32>)
      outs(%zero_x : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %out : tensor<?x64xf32>
}

// PEER: 4 query heads of d_k = 32, BatchNorm, product-key retrieval over
// n = 64 sub-keys (N = 4096 experts), GELU single-neuron experts.
// CHECK-LABEL: func.func @peer_layer
// CHECK:         %[[Q:.*]] = moe.linear
// CHECK:         %[[QN:.*]] = moe.batch_norm %[[Q]],
// CHECK:         %[[W:.*]], %[[IDS:.*]] = moe.product_key_topk heads(4) top_k(8) score(softmax) ins(%[[QN]],
// CHECK:         moe.single_neuron_experts ins(%{{.*}}, %[[IDS]], %[[W]], %{{.*}} : {{.*}}) in_proj(%{{.*}} : tensor<4096x64xf32>, gelu)
func.func @peer_layer(%x: tensor<?x64xf32>, %query: tensor<128x64xf32>,
    %mean: tensor<128xf32>, %var: tensor<128xf32>, %scale: tensor<128xf32>,
    %shift: tensor<128xf32>, %keys1: tensor<64x16xf32>,
    %keys2: tensor<64x16xf32>, %u: tensor<4096x64xf32>,
    %v: tensor<4096x64xf32>, %zero_q: tensor<?x128xf32>,
    %w0: tensor<?x4x8xf32>, %i0: tensor<?x4x8xi32>, %residual: tensor<?x64xf32>)
    -> tensor<?x64xf32> {
  %q = moe.linear ins(%x, %query : tensor<?x64xf32>, tensor<128x64xf32>)
      outs(%zero_q : tensor<?x128xf32>) -> tensor<?x128xf32>
  %qn = moe.batch_norm %q, %mean, %var, %scale, %shift
      : tensor<?x128xf32>, tensor<128xf32>
  %w, %ids = moe.product_key_topk heads(4) top_k(8) score(softmax)
      ins(%qn, %keys1, %keys2 : tensor<?x128xf32>, tensor<64x16xf32>, tensor<64x16xf32>)
      outs(%w0, %i0 : tensor<?x4x8xf32>, tensor<?x4x8xi32>)
      -> tensor<?x4x8xf32>, tensor<?x4x8xi32>
  %out = moe.single_neuron_experts
      ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x4x8xi32>, tensor<?x4x8xf32>, tensor<4096x64xf32>)
      in_proj(%u : tensor<4096x64xf32>, gelu)
      outs(%residual : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %out : tensor<?x64xf32>
}
