// Every diagnostic of the moe dialect: one case per verifier message of
// MoEVerifiers.cpp, the ODS constraints (element types, positive counts,
// matching types) and the custom parser's unknown-keyword error.
// RUN: moe-opt %s -split-input-file -verify-diagnostics

//===----------------------------------------------------------------------===//
// moe.linear
//===----------------------------------------------------------------------===//

func.func @linear_input_rank(%x: tensor<64xf32>, %w: tensor<8x64xf32>, %i: tensor<4x8xf32>) {
  // expected-error @+1 {{'moe.linear' op expects input of rank 2, got rank 1}}
  %0 = moe.linear ins(%x, %w : tensor<64xf32>, tensor<8x64xf32>) outs(%i : tensor<4x8xf32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @linear_weight_rank(%x: tensor<4x64xf32>, %w: tensor<2x8x64xf32>, %i: tensor<4x8xf32>) {
  // expected-error @+1 {{'moe.linear' op expects weight of rank 2, got rank 3}}
  %0 = moe.linear ins(%x, %w : tensor<4x64xf32>, tensor<2x8x64xf32>) outs(%i : tensor<4x8xf32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @linear_init_rank(%x: tensor<4x64xf32>, %w: tensor<8x64xf32>, %i: tensor<32xf32>) {
  // expected-error @+1 {{'moe.linear' op expects init of rank 2, got rank 1}}
  %0 = moe.linear ins(%x, %w : tensor<4x64xf32>, tensor<8x64xf32>) outs(%i : tensor<32xf32>) -> tensor<32xf32>
  return
}

// -----

func.func @linear_reduction_dim(%x: tensor<4x64xf32>, %w: tensor<8x32xf32>, %i: tensor<4x8xf32>) {
  // expected-error @+1 {{'moe.linear' op expects weight dim 1 (32) to match input dim 1 (64)}}
  %0 = moe.linear ins(%x, %w : tensor<4x64xf32>, tensor<8x32xf32>) outs(%i : tensor<4x8xf32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @linear_init_tokens(%x: tensor<4x64xf32>, %w: tensor<8x64xf32>, %i: tensor<5x8xf32>) {
  // expected-error @+1 {{'moe.linear' op expects init dim 0 (5) to match input dim 0 (4)}}
  %0 = moe.linear ins(%x, %w : tensor<4x64xf32>, tensor<8x64xf32>) outs(%i : tensor<5x8xf32>) -> tensor<5x8xf32>
  return
}

// -----

func.func @linear_init_features(%x: tensor<?x64xf32>, %w: tensor<8x64xf32>, %i: tensor<?x9xf32>) {
  // expected-error @+1 {{'moe.linear' op expects init dim 1 (9) to match weight dim 0 (8)}}
  %0 = moe.linear ins(%x, %w : tensor<?x64xf32>, tensor<8x64xf32>) outs(%i : tensor<?x9xf32>) -> tensor<?x9xf32>
  return
}

// -----

func.func @linear_result_type(%x: tensor<4x64xf32>, %w: tensor<8x64xf32>, %i: tensor<4x8xf32>) {
  // expected-error @+1 {{'moe.linear' op expects result type 'tensor<?x8xf32>' to match init type 'tensor<4x8xf32>'}}
  %0 = moe.linear ins(%x, %w : tensor<4x64xf32>, tensor<8x64xf32>) outs(%i : tensor<4x8xf32>) -> tensor<?x8xf32>
  return
}

// -----

func.func @linear_input_element_type(%x: tensor<4x64xbf16>, %w: tensor<8x64xf32>, %i: tensor<4x8xf32>) {
  // expected-error @+1 {{'moe.linear' op operand #0 must be ranked tensor of 32-bit float values, but got 'tensor<4x64xbf16>'}}
  %0 = moe.linear ins(%x, %w : tensor<4x64xbf16>, tensor<8x64xf32>) outs(%i : tensor<4x8xf32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @linear_weight_element_type(%x: tensor<4x64xf32>, %w: tensor<8x64xi8>, %i: tensor<4x8xf32>) {
  // expected-error @+1 {{'moe.linear' op operand #1 must be ranked tensor of 32-bit float or bfloat16 type or 16-bit float values, but got 'tensor<8x64xi8>'}}
  %0 = moe.linear ins(%x, %w : tensor<4x64xf32>, tensor<8x64xi8>) outs(%i : tensor<4x8xf32>) -> tensor<4x8xf32>
  return
}

// -----

// Unranked tensors only get past the parser in the generic form.
func.func @linear_unranked(%x: tensor<*xf32>, %w: tensor<8x64xf32>, %i: tensor<4x8xf32>) {
  // expected-error @+1 {{'moe.linear' op operand #0 must be ranked tensor of 32-bit float values, but got 'tensor<*xf32>'}}
  %0 = "moe.linear"(%x, %w, %i) : (tensor<*xf32>, tensor<8x64xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  return
}

//===----------------------------------------------------------------------===//
// moe.route
//===----------------------------------------------------------------------===//

// -----

func.func @route_logits_rank(%l: tensor<8xf32>) {
  // expected-error @+1 {{'moe.route' op expects logits of rank 2, got rank 1}}
  %w, %ids = moe.route %l top_k(2) score(softmax) order(score_then_topk) : tensor<8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @route_weights_rank(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects weights of rank 2, got rank 1}}
  %w, %ids = moe.route %l top_k(2) score(softmax) order(score_then_topk) : tensor<?x8xf32> -> tensor<2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @route_ids_rank(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects ids of rank 2, got rank 3}}
  %w, %ids = moe.route %l top_k(2) score(softmax) order(score_then_topk) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2x1xi32>
  return
}

// -----

func.func @route_dynamic_experts(%l: tensor<?x?xf32>) {
  // expected-error @+1 {{'moe.route' op expects a static expert count (logits dim 1)}}
  %w, %ids = moe.route %l top_k(2) score(softmax) order(score_then_topk) : tensor<?x?xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @route_dynamic_choices(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects a static number of choices (weights dim 1)}}
  %w, %ids = moe.route %l top_k(2) score(softmax) order(score_then_topk) : tensor<?x8xf32> -> tensor<?x?xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @route_tokens(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects weights dim 0 (5) to match logits dim 0 (4)}}
  %w, %ids = moe.route %l top_k(2) score(softmax) order(score_then_topk) : tensor<4x8xf32> -> tensor<5x2xf32>, tensor<5x2xi32>
  return
}

// -----

func.func @route_ids_shape(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects ids shape [?, 3] to match weights shape [?, 2]}}
  %w, %ids = moe.route %l top_k(2) score(softmax) order(score_then_topk) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x3xi32>
  return
}

// -----

func.func @route_top_k_above_experts(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects top_k (9) <= experts (8)}}
  %w, %ids = moe.route %l top_k(9) score(softmax) order(score_then_topk) : tensor<?x8xf32> -> tensor<?x9xf32>, tensor<?x9xi32>
  return
}

// -----

func.func @route_too_many_choices(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects the number of choices (5) in [top_k, min(2*top_k, experts)] = [2, 4]}}
  %w, %ids = moe.route %l top_k(2) score(softmax) order(score_then_topk) : tensor<?x8xf32> -> tensor<?x5xf32>, tensor<?x5xi32>
  return
}

// -----

func.func @route_too_few_choices(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects the number of choices (1) in [top_k, min(2*top_k, experts)] = [2, 4]}}
  %w, %ids = moe.route %l top_k(2) score(softmax) order(score_then_topk) : tensor<?x8xf32> -> tensor<?x1xf32>, tensor<?x1xi32>
  return
}

// -----

func.func @route_bias_rank(%l: tensor<?x8xf32>, %b: tensor<1x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects bias of rank 1, got rank 2}}
  %w, %ids = moe.route %l top_k(2) score(sigmoid) order(score_then_topk) bias(%b : tensor<1x8xf32>) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @route_bias_experts(%l: tensor<?x8xf32>, %b: tensor<4xf32>) {
  // expected-error @+1 {{'moe.route' op expects bias dim 0 (4) to equal experts (8)}}
  %w, %ids = moe.route %l top_k(2) score(sigmoid) order(score_then_topk) bias(%b : tensor<4xf32>) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// Only the generic form can give noise without its seed.
func.func @route_noise_without_seed(%l: tensor<?x8xf32>, %n: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects noise_logits and seed together}}
  %0:2 = "moe.route"(%l, %n) <{operandSegmentSizes = array<i32: 1, 0, 1, 0, 0, 0>, top_k = 2 : i64, score = #moe<score softmax>, order = #moe<order topk_then_score>}> : (tensor<?x8xf32>, tensor<?x8xf32>) -> (tensor<?x2xf32>, tensor<?x2xi32>)
  return
}

// -----

func.func @route_seed_without_noise(%l: tensor<?x8xf32>, %seed: i64) {
  // expected-error @+1 {{'moe.route' op expects noise_logits and seed together}}
  %0:2 = "moe.route"(%l, %seed) <{operandSegmentSizes = array<i32: 1, 0, 0, 1, 0, 0>, top_k = 2 : i64, score = #moe<score softmax>, order = #moe<order topk_then_score>}> : (tensor<?x8xf32>, i64) -> (tensor<?x2xf32>, tensor<?x2xi32>)
  return
}

// -----

func.func @route_noise_shape(%l: tensor<?x8xf32>, %n: tensor<?x4xf32>, %seed: i64) {
  // expected-error @+1 {{'moe.route' op expects noise_logits shape [?, 4] to match logits shape [?, 8]}}
  %w, %ids = moe.route %l top_k(2) score(softmax) order(topk_then_score) noise(%n, %seed : tensor<?x4xf32>) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// Any finite scaling is defined (zero and negative included); nan is not.
func.func @route_scaling_nan(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects a finite scaling, got nan}}
  %w, %ids = moe.route %l top_k(2) score(softmax) order(score_then_topk) {scaling = 0x7FF8000000000000 : f64} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @route_scaling_infinite(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects a finite scaling, got inf}}
  %w, %ids = moe.route %l top_k(2) score(softmax) order(score_then_topk) {scaling = 0x7FF0000000000000 : f64} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @route_groups_positive(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects groups >= 1, got 0}}
  %w, %ids = moe.route %l top_k(2) score(sigmoid) order(score_then_topk) groups(0, keep 1, max) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @route_groups_divide_experts(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects experts (8) divisible by groups (3)}}
  %w, %ids = moe.route %l top_k(2) score(sigmoid) order(score_then_topk) groups(3, keep 1, max) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @route_topk_groups_range(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects topk_groups (5) in [1, groups] = [1, 4]}}
  %w, %ids = moe.route %l top_k(2) score(sigmoid) order(score_then_topk) groups(4, keep 5, max) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @route_topk_groups_zero(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects topk_groups (0) in [1, groups] = [1, 2]}}
  %w, %ids = moe.route %l top_k(2) score(sigmoid) order(score_then_topk) groups(2, keep 0, max) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @route_top_k_above_kept_experts(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects top_k (3) <= experts in the kept groups (1 x 2 = 2)}}
  %w, %ids = moe.route %l top_k(3) score(sigmoid) order(score_then_topk) groups(4, keep 1, max) : tensor<?x8xf32> -> tensor<?x3xf32>, tensor<?x3xi32>
  return
}

// -----

func.func @route_top2_sum_group_size(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects at least 2 experts per group for group_score top2_sum, got 1}}
  %w, %ids = moe.route %l top_k(2) score(sigmoid) order(score_then_topk) groups(8, keep 4, top2_sum) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// Fallback columns come from the kept groups: 1 group of 2 experts here.
func.func @route_choices_beyond_kept_groups(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects the number of choices (3) in [top_k, min(2*top_k, experts in the kept groups)] = [2, 2]}}
  %w, %ids = moe.route %l top_k(2) score(sigmoid) order(score_then_topk) groups(4, keep 1, max) : tensor<?x8xf32> -> tensor<?x3xf32>, tensor<?x3xi32>
  return
}

// -----

func.func @route_top_k_positive(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op attribute 'top_k' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %w, %ids = moe.route %l top_k(0) score(softmax) order(score_then_topk) : tensor<?x8xf32> -> tensor<?x0xf32>, tensor<?x0xi32>
  return
}

// -----

func.func @route_logits_element_type(%l: tensor<?x8xf16>) {
  // expected-error @+1 {{'moe.route' op operand #0 must be ranked tensor of 32-bit float values, but got 'tensor<?x8xf16>'}}
  %w, %ids = moe.route %l top_k(2) score(softmax) order(score_then_topk) : tensor<?x8xf16> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @route_ids_element_type(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op result #1 must be ranked tensor of 32-bit signless integer values, but got 'tensor<?x2xi64>'}}
  %w, %ids = moe.route %l top_k(2) score(softmax) order(score_then_topk) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi64>
  return
}

// -----

func.func @route_unknown_score(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{expected one of {softmax, sigmoid, sqrt_softplus, sparsemixer}, got 'tanh'}}
  %w, %ids = moe.route %l top_k(2) score(tanh) order(score_then_topk) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @route_unknown_order(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{expected one of {score_then_topk, topk_then_score}, got 'topk_first'}}
  %w, %ids = moe.route %l top_k(2) score(softmax) order(topk_first) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @route_score_not_a_keyword(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{custom op 'moe.route' expected one of {softmax, sigmoid, sqrt_softplus, sparsemixer}}}
  %w, %ids = moe.route %l top_k(2) score(42) order(score_then_topk) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @route_unknown_group_score(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{expected one of {max, top2_sum}, got 'sum'}}
  %w, %ids = moe.route %l top_k(2) score(sigmoid) order(score_then_topk) groups(4, keep 2, sum) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

//===----------------------------------------------------------------------===//
// moe.topk
//===----------------------------------------------------------------------===//

// -----

func.func @topk_input_rank(%in: tensor<f32>, %v0: tensor<1xf32>, %i0: tensor<1xi32>) {
  // expected-error @+1 {{'moe.topk' op expects input of rank >= 1, got rank 0}}
  %v, %i = moe.topk ins(%in : tensor<f32>) outs(%v0, %i0 : tensor<1xf32>, tensor<1xi32>) -> tensor<1xf32>, tensor<1xi32>
  return
}

// -----

func.func @topk_values_rank(%in: tensor<4x64xf32>, %v0: tensor<4xf32>, %i0: tensor<4xi32>) {
  // expected-error @+1 {{'moe.topk' op expects values_init of rank 2, got rank 1}}
  %v, %i = moe.topk ins(%in : tensor<4x64xf32>) outs(%v0, %i0 : tensor<4xf32>, tensor<4xi32>) -> tensor<4xf32>, tensor<4xi32>
  return
}

// -----

func.func @topk_indices_shape(%in: tensor<4x64xf32>, %v0: tensor<4x4xf32>, %i0: tensor<4x3xi32>) {
  // expected-error @+1 {{'moe.topk' op expects indices_init shape [4, 3] to match values_init shape [4, 4]}}
  %v, %i = moe.topk ins(%in : tensor<4x64xf32>) outs(%v0, %i0 : tensor<4x4xf32>, tensor<4x3xi32>) -> tensor<4x4xf32>, tensor<4x3xi32>
  return
}

// -----

func.func @topk_leading_dim(%in: tensor<2x4x64xf32>, %v0: tensor<2x5x4xf32>, %i0: tensor<2x5x4xi32>) {
  // expected-error @+1 {{'moe.topk' op expects values_init dim 1 (5) to match input dim 1 (4)}}
  %v, %i = moe.topk ins(%in : tensor<2x4x64xf32>) outs(%v0, %i0 : tensor<2x5x4xf32>, tensor<2x5x4xi32>) -> tensor<2x5x4xf32>, tensor<2x5x4xi32>
  return
}

// -----

func.func @topk_dynamic_k(%in: tensor<4x64xf32>, %v0: tensor<4x?xf32>, %i0: tensor<4x?xi32>) {
  // expected-error @+1 {{'moe.topk' op expects a static k (values_init dim 1)}}
  %v, %i = moe.topk ins(%in : tensor<4x64xf32>) outs(%v0, %i0 : tensor<4x?xf32>, tensor<4x?xi32>) -> tensor<4x?xf32>, tensor<4x?xi32>
  return
}

// -----

func.func @topk_zero_k(%in: tensor<4x64xf32>, %v0: tensor<4x0xf32>, %i0: tensor<4x0xi32>) {
  // expected-error @+1 {{'moe.topk' op expects k >= 1, got 0}}
  %v, %i = moe.topk ins(%in : tensor<4x64xf32>) outs(%v0, %i0 : tensor<4x0xf32>, tensor<4x0xi32>) -> tensor<4x0xf32>, tensor<4x0xi32>
  return
}

// -----

func.func @topk_k_above_size(%in: tensor<4x64xf32>, %v0: tensor<4x65xf32>, %i0: tensor<4x65xi32>) {
  // expected-error @+1 {{'moe.topk' op expects k (65) <= input size along the last axis (64)}}
  %v, %i = moe.topk ins(%in : tensor<4x64xf32>) outs(%v0, %i0 : tensor<4x65xf32>, tensor<4x65xi32>) -> tensor<4x65xf32>, tensor<4x65xi32>
  return
}

// -----

func.func @topk_values_result(%in: tensor<4x64xf32>, %v0: tensor<4x4xf32>, %i0: tensor<4x4xi32>) {
  // expected-error @+1 {{'moe.topk' op expects values type 'tensor<?x4xf32>' to match values_init type 'tensor<4x4xf32>'}}
  %v, %i = moe.topk ins(%in : tensor<4x64xf32>) outs(%v0, %i0 : tensor<4x4xf32>, tensor<4x4xi32>) -> tensor<?x4xf32>, tensor<4x4xi32>
  return
}

// -----

func.func @topk_indices_result(%in: tensor<4x64xf32>, %v0: tensor<4x4xf32>, %i0: tensor<4x4xi32>) {
  // expected-error @+1 {{'moe.topk' op expects indices type 'tensor<4x?xi32>' to match indices_init type 'tensor<4x4xi32>'}}
  %v, %i = moe.topk ins(%in : tensor<4x64xf32>) outs(%v0, %i0 : tensor<4x4xf32>, tensor<4x4xi32>) -> tensor<4x4xf32>, tensor<4x?xi32>
  return
}

// -----

func.func @topk_indices_element_type(%in: tensor<4x64xf32>, %v0: tensor<4x4xf32>, %i0: tensor<4x4xf32>) {
  // expected-error @+1 {{'moe.topk' op operand #2 must be ranked tensor of 32-bit signless integer values, but got 'tensor<4x4xf32>'}}
  %v, %i = moe.topk ins(%in : tensor<4x64xf32>) outs(%v0, %i0 : tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>, tensor<4x4xf32>
  return
}

//===----------------------------------------------------------------------===//
// moe.product_key_topk
//===----------------------------------------------------------------------===//

// -----

func.func @pk_query_rank(%q: tensor<256xf32>, %k1: tensor<16x16xf32>, %k2: tensor<16x16xf32>, %w0: tensor<?x8x4xf32>, %i0: tensor<?x8x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects query of rank 2, got rank 1}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(softmax) ins(%q, %k1, %k2 : tensor<256xf32>, tensor<16x16xf32>, tensor<16x16xf32>) outs(%w0, %i0 : tensor<?x8x4xf32>, tensor<?x8x4xi32>) -> tensor<?x8x4xf32>, tensor<?x8x4xi32>
  return
}

// -----

func.func @pk_keys1_rank(%q: tensor<?x256xf32>, %k1: tensor<256xf32>, %k2: tensor<16x16xf32>, %w0: tensor<?x8x4xf32>, %i0: tensor<?x8x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects keys1 of rank 2 ([n, d_k/2], shared by the heads) or 3 ([heads, n, d_k/2]), got rank 1}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(softmax) ins(%q, %k1, %k2 : tensor<?x256xf32>, tensor<256xf32>, tensor<16x16xf32>) outs(%w0, %i0 : tensor<?x8x4xf32>, tensor<?x8x4xi32>) -> tensor<?x8x4xf32>, tensor<?x8x4xi32>
  return
}

// -----

func.func @pk_keys2_rank(%q: tensor<?x256xf32>, %k1: tensor<16x16xf32>, %k2: tensor<1x16x16xf32>, %w0: tensor<?x8x4xf32>, %i0: tensor<?x8x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects keys2 shape [1, 16, 16] to match keys1 shape [16, 16]}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(softmax) ins(%q, %k1, %k2 : tensor<?x256xf32>, tensor<16x16xf32>, tensor<1x16x16xf32>) outs(%w0, %i0 : tensor<?x8x4xf32>, tensor<?x8x4xi32>) -> tensor<?x8x4xf32>, tensor<?x8x4xi32>
  return
}

// -----

func.func @pk_keys_rank4(%q: tensor<?x256xf32>, %k1: tensor<8x1x16x16xf32>, %w0: tensor<?x8x4xf32>, %i0: tensor<?x8x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects keys1 of rank 2 ([n, d_k/2], shared by the heads) or 3 ([heads, n, d_k/2]), got rank 4}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(softmax) ins(%q, %k1, %k1 : tensor<?x256xf32>, tensor<8x1x16x16xf32>, tensor<8x1x16x16xf32>) outs(%w0, %i0 : tensor<?x8x4xf32>, tensor<?x8x4xi32>) -> tensor<?x8x4xf32>, tensor<?x8x4xi32>
  return
}

// -----

func.func @pk_keys_per_head_count(%q: tensor<?x256xf32>, %k1: tensor<4x16x16xf32>, %w0: tensor<?x8x4xf32>, %i0: tensor<?x8x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects keys1 dim 0 (4) to equal heads (8)}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(softmax) ins(%q, %k1, %k1 : tensor<?x256xf32>, tensor<4x16x16xf32>, tensor<4x16x16xf32>) outs(%w0, %i0 : tensor<?x8x4xf32>, tensor<?x8x4xi32>) -> tensor<?x8x4xf32>, tensor<?x8x4xi32>
  return
}

// -----

func.func @pk_keys_per_head_dynamic_sub_keys(%q: tensor<?x256xf32>, %k1: tensor<8x?x16xf32>, %w0: tensor<?x8x4xf32>, %i0: tensor<?x8x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects a static sub-key count (keys1 dim 1)}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(softmax) ins(%q, %k1, %k1 : tensor<?x256xf32>, tensor<8x?x16xf32>, tensor<8x?x16xf32>) outs(%w0, %i0 : tensor<?x8x4xf32>, tensor<?x8x4xi32>) -> tensor<?x8x4xf32>, tensor<?x8x4xi32>
  return
}

// -----

func.func @pk_weights_rank(%q: tensor<?x256xf32>, %k1: tensor<16x16xf32>, %k2: tensor<16x16xf32>, %w0: tensor<?x32xf32>, %i0: tensor<?x32xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects weights_init of rank 3, got rank 2}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(softmax) ins(%q, %k1, %k2 : tensor<?x256xf32>, tensor<16x16xf32>, tensor<16x16xf32>) outs(%w0, %i0 : tensor<?x32xf32>, tensor<?x32xi32>) -> tensor<?x32xf32>, tensor<?x32xi32>
  return
}

// -----

func.func @pk_dynamic_sub_keys(%q: tensor<?x256xf32>, %k1: tensor<?x16xf32>, %k2: tensor<?x16xf32>, %w0: tensor<?x8x4xf32>, %i0: tensor<?x8x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects a static sub-key count (keys1 dim 0)}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(softmax) ins(%q, %k1, %k2 : tensor<?x256xf32>, tensor<?x16xf32>, tensor<?x16xf32>) outs(%w0, %i0 : tensor<?x8x4xf32>, tensor<?x8x4xi32>) -> tensor<?x8x4xf32>, tensor<?x8x4xi32>
  return
}

// -----

func.func @pk_dynamic_sub_key_width(%q: tensor<?x256xf32>, %k1: tensor<16x?xf32>, %k2: tensor<16x?xf32>, %w0: tensor<?x8x4xf32>, %i0: tensor<?x8x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects a static sub-key width (keys1 dim 1)}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(softmax) ins(%q, %k1, %k2 : tensor<?x256xf32>, tensor<16x?xf32>, tensor<16x?xf32>) outs(%w0, %i0 : tensor<?x8x4xf32>, tensor<?x8x4xi32>) -> tensor<?x8x4xf32>, tensor<?x8x4xi32>
  return
}

// -----

func.func @pk_dynamic_query_width(%q: tensor<?x?xf32>, %k1: tensor<16x16xf32>, %k2: tensor<16x16xf32>, %w0: tensor<?x8x4xf32>, %i0: tensor<?x8x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects a static query width (query dim 1)}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(softmax) ins(%q, %k1, %k2 : tensor<?x?xf32>, tensor<16x16xf32>, tensor<16x16xf32>) outs(%w0, %i0 : tensor<?x8x4xf32>, tensor<?x8x4xi32>) -> tensor<?x8x4xf32>, tensor<?x8x4xi32>
  return
}

// -----

func.func @pk_keys2_shape(%q: tensor<?x256xf32>, %k1: tensor<16x16xf32>, %k2: tensor<32x16xf32>, %w0: tensor<?x8x4xf32>, %i0: tensor<?x8x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects keys2 shape [32, 16] to match keys1 shape [16, 16]}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(softmax) ins(%q, %k1, %k2 : tensor<?x256xf32>, tensor<16x16xf32>, tensor<32x16xf32>) outs(%w0, %i0 : tensor<?x8x4xf32>, tensor<?x8x4xi32>) -> tensor<?x8x4xf32>, tensor<?x8x4xi32>
  return
}

// -----

func.func @pk_keys_element_type(%q: tensor<?x256xf32>, %k1: tensor<16x16xf32>, %k2: tensor<16x16xbf16>, %w0: tensor<?x8x4xf32>, %i0: tensor<?x8x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects keys2 element type ('bf16') to match keys1 element type ('f32')}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(softmax) ins(%q, %k1, %k2 : tensor<?x256xf32>, tensor<16x16xf32>, tensor<16x16xbf16>) outs(%w0, %i0 : tensor<?x8x4xf32>, tensor<?x8x4xi32>) -> tensor<?x8x4xf32>, tensor<?x8x4xi32>
  return
}

// -----

func.func @pk_query_width(%q: tensor<?x128xf32>, %k1: tensor<16x16xf32>, %k2: tensor<16x16xf32>, %w0: tensor<?x8x4xf32>, %i0: tensor<?x8x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects query width (128) to equal heads (8) x key_dim (32)}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(softmax) ins(%q, %k1, %k2 : tensor<?x128xf32>, tensor<16x16xf32>, tensor<16x16xf32>) outs(%w0, %i0 : tensor<?x8x4xf32>, tensor<?x8x4xi32>) -> tensor<?x8x4xf32>, tensor<?x8x4xi32>
  return
}

// -----

func.func @pk_top_k_above_experts(%q: tensor<?x16xf32>, %k1: tensor<4x8xf32>, %k2: tensor<4x8xf32>, %w0: tensor<?x1x17xf32>, %i0: tensor<?x1x17xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects top_k (17) <= experts (n*n = 16)}}
  %w, %ids = moe.product_key_topk heads(1) top_k(17) score(softmax) ins(%q, %k1, %k2 : tensor<?x16xf32>, tensor<4x8xf32>, tensor<4x8xf32>) outs(%w0, %i0 : tensor<?x1x17xf32>, tensor<?x1x17xi32>) -> tensor<?x1x17xf32>, tensor<?x1x17xi32>
  return
}

// -----

func.func @pk_weights_tokens(%q: tensor<3x256xf32>, %k1: tensor<16x16xf32>, %k2: tensor<16x16xf32>, %w0: tensor<4x8x4xf32>, %i0: tensor<4x8x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects weights_init dim 0 (4) to match query dim 0 (3)}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(softmax) ins(%q, %k1, %k2 : tensor<3x256xf32>, tensor<16x16xf32>, tensor<16x16xf32>) outs(%w0, %i0 : tensor<4x8x4xf32>, tensor<4x8x4xi32>) -> tensor<4x8x4xf32>, tensor<4x8x4xi32>
  return
}

// -----

func.func @pk_weights_heads(%q: tensor<?x256xf32>, %k1: tensor<16x16xf32>, %k2: tensor<16x16xf32>, %w0: tensor<?x4x4xf32>, %i0: tensor<?x4x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects weights_init dim 1 (4) to equal heads (8)}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(softmax) ins(%q, %k1, %k2 : tensor<?x256xf32>, tensor<16x16xf32>, tensor<16x16xf32>) outs(%w0, %i0 : tensor<?x4x4xf32>, tensor<?x4x4xi32>) -> tensor<?x4x4xf32>, tensor<?x4x4xi32>
  return
}

// -----

func.func @pk_weights_top_k(%q: tensor<?x256xf32>, %k1: tensor<16x16xf32>, %k2: tensor<16x16xf32>, %w0: tensor<?x8x2xf32>, %i0: tensor<?x8x2xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects weights_init dim 2 (2) to equal top_k (4)}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(softmax) ins(%q, %k1, %k2 : tensor<?x256xf32>, tensor<16x16xf32>, tensor<16x16xf32>) outs(%w0, %i0 : tensor<?x8x2xf32>, tensor<?x8x2xi32>) -> tensor<?x8x2xf32>, tensor<?x8x2xi32>
  return
}

// -----

func.func @pk_ids_shape(%q: tensor<?x256xf32>, %k1: tensor<16x16xf32>, %k2: tensor<16x16xf32>, %w0: tensor<?x8x4xf32>, %i0: tensor<?x8x3xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects ids_init shape [?, 8, 3] to match weights_init shape [?, 8, 4]}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(softmax) ins(%q, %k1, %k2 : tensor<?x256xf32>, tensor<16x16xf32>, tensor<16x16xf32>) outs(%w0, %i0 : tensor<?x8x4xf32>, tensor<?x8x3xi32>) -> tensor<?x8x4xf32>, tensor<?x8x3xi32>
  return
}

// -----

func.func @pk_weights_result(%q: tensor<4x256xf32>, %k1: tensor<16x16xf32>, %k2: tensor<16x16xf32>, %w0: tensor<4x8x4xf32>, %i0: tensor<4x8x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects weights type 'tensor<?x8x4xf32>' to match weights_init type 'tensor<4x8x4xf32>'}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(softmax) ins(%q, %k1, %k2 : tensor<4x256xf32>, tensor<16x16xf32>, tensor<16x16xf32>) outs(%w0, %i0 : tensor<4x8x4xf32>, tensor<4x8x4xi32>) -> tensor<?x8x4xf32>, tensor<4x8x4xi32>
  return
}

// -----

func.func @pk_ids_result(%q: tensor<4x256xf32>, %k1: tensor<16x16xf32>, %k2: tensor<16x16xf32>, %w0: tensor<4x8x4xf32>, %i0: tensor<4x8x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects ids type 'tensor<?x8x4xi32>' to match ids_init type 'tensor<4x8x4xi32>'}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(softmax) ins(%q, %k1, %k2 : tensor<4x256xf32>, tensor<16x16xf32>, tensor<16x16xf32>) outs(%w0, %i0 : tensor<4x8x4xf32>, tensor<4x8x4xi32>) -> tensor<4x8x4xf32>, tensor<?x8x4xi32>
  return
}

// -----

func.func @pk_heads_positive(%q: tensor<?x256xf32>, %k1: tensor<16x16xf32>, %k2: tensor<16x16xf32>, %w0: tensor<?x8x4xf32>, %i0: tensor<?x8x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op attribute 'heads' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %w, %ids = moe.product_key_topk heads(0) top_k(4) score(softmax) ins(%q, %k1, %k2 : tensor<?x256xf32>, tensor<16x16xf32>, tensor<16x16xf32>) outs(%w0, %i0 : tensor<?x8x4xf32>, tensor<?x8x4xi32>) -> tensor<?x8x4xf32>, tensor<?x8x4xi32>
  return
}

// -----

func.func @pk_top_k_positive(%q: tensor<?x256xf32>, %k1: tensor<16x16xf32>, %k2: tensor<16x16xf32>, %w0: tensor<?x8x4xf32>, %i0: tensor<?x8x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op attribute 'top_k' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %w, %ids = moe.product_key_topk heads(8) top_k(-1) score(softmax) ins(%q, %k1, %k2 : tensor<?x256xf32>, tensor<16x16xf32>, tensor<16x16xf32>) outs(%w0, %i0 : tensor<?x8x4xf32>, tensor<?x8x4xi32>) -> tensor<?x8x4xf32>, tensor<?x8x4xi32>
  return
}

// -----

func.func @pk_keys_element_type_i8(%q: tensor<?x256xf32>, %k1: tensor<16x16xi8>, %k2: tensor<16x16xi8>, %w0: tensor<?x8x4xf32>, %i0: tensor<?x8x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op operand #1 must be ranked tensor of 32-bit float or bfloat16 type or 16-bit float values, but got 'tensor<16x16xi8>'}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(softmax) ins(%q, %k1, %k2 : tensor<?x256xf32>, tensor<16x16xi8>, tensor<16x16xi8>) outs(%w0, %i0 : tensor<?x8x4xf32>, tensor<?x8x4xi32>) -> tensor<?x8x4xf32>, tensor<?x8x4xi32>
  return
}

// -----

func.func @pk_unknown_score(%q: tensor<?x256xf32>, %k1: tensor<16x16xf32>, %k2: tensor<16x16xf32>, %w0: tensor<?x8x4xf32>, %i0: tensor<?x8x4xi32>) {
  // expected-error @+1 {{expected one of {softmax, sigmoid, sqrt_softplus, sparsemixer}, got 'relu'}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(relu) ins(%q, %k1, %k2 : tensor<?x256xf32>, tensor<16x16xf32>, tensor<16x16xf32>) outs(%w0, %i0 : tensor<?x8x4xf32>, tensor<?x8x4xi32>) -> tensor<?x8x4xf32>, tensor<?x8x4xi32>
  return
}

//===----------------------------------------------------------------------===//
// moe.dispatch_plan
//===----------------------------------------------------------------------===//

// -----

func.func @plan_ids_rank(%ids: tensor<8xi32>, %w: tensor<8xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects ids of rank 2, got rank 1}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) : tensor<8xi32>, tensor<8xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return
}

// -----

func.func @plan_weights_shape(%ids: tensor<?x2xi32>, %w: tensor<?x3xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects weights shape [?, 3] to match ids shape [?, 2]}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) : tensor<?x2xi32>, tensor<?x3xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return
}

// -----

func.func @plan_dynamic_choices(%ids: tensor<?x?xi32>, %w: tensor<?x?xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects a static number of choices (ids dim 1)}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) : tensor<?x?xi32>, tensor<?x?xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return
}

// -----

func.func @plan_top_k_above_experts(%ids: tensor<?x3xi32>, %w: tensor<?x3xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects top_k (3) <= experts (2)}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(2) top_k(3) : tensor<?x3xi32>, tensor<?x3xf32> -> tensor<2xi32>, tensor<3xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return
}

// -----

func.func @plan_capacity_positive(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects a positive finite capacity factor, got 0}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) capacity(0.0) overflow(drop) priority(token_order) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return
}

// -----

func.func @plan_capacity_nan(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects a positive finite capacity factor, got nan}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) capacity(0x7FF8000000000000) overflow(drop) priority(token_order) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return
}

// -----

func.func @plan_capacity_infinite(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects a positive finite capacity factor, got inf}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) capacity(0x7FF0000000000000) overflow(drop) priority(token_order) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return
}

// -----

// Only the generic form can give overflow or priority without a capacity.
func.func @plan_overflow_without_capacity(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects a capacity factor when overflow or priority is set}}
  %0:5 = "moe.dispatch_plan"(%ids, %w) <{num_experts = 8 : i64, top_k = 2 : i64, overflow = #moe<overflow next_choice>}> : (tensor<?x2xi32>, tensor<?x2xf32>) -> (tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>)
  return
}

// -----

func.func @plan_priority_without_capacity(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects a capacity factor when overflow or priority is set}}
  %0:5 = "moe.dispatch_plan"(%ids, %w) <{num_experts = 8 : i64, top_k = 2 : i64, priority = #moe<priority batch_prioritized>}> : (tensor<?x2xi32>, tensor<?x2xf32>) -> (tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>)
  return
}

// -----

func.func @plan_fallbacks_without_next_choice(%ids: tensor<?x3xi32>, %w: tensor<?x3xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects ids dim 1 (3) to equal top_k (2) unless overflow is next_choice}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) capacity(1.0) overflow(drop) priority(token_order) : tensor<?x3xi32>, tensor<?x3xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return
}

// -----

func.func @plan_next_choice_too_many(%ids: tensor<?x5xi32>, %w: tensor<?x5xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects the number of choices (5) in [top_k, min(2*top_k, experts)] = [2, 4]}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) capacity(1.0) overflow(next_choice) priority(token_order) : tensor<?x5xi32>, tensor<?x5xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return
}

// -----

func.func @plan_next_choice_too_few(%ids: tensor<?x1xi32>, %w: tensor<?x1xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects the number of choices (1) in [top_k, min(2*top_k, experts)] = [2, 4]}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) capacity(1.0) overflow(next_choice) priority(token_order) : tensor<?x1xi32>, tensor<?x1xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return
}

// -----

func.func @plan_counts_rank(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects counts of rank 1, got rank 2}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<1x8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return
}

// -----

func.func @plan_offsets_rank(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects offsets of rank 1, got rank 2}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<1x9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return
}

// -----

func.func @plan_token_ids_rank(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects token_ids of rank 1, got rank 2}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?x2xi32>, tensor<?xf32>, tensor<i32>
  return
}

// -----

func.func @plan_slot_weights_shape(%ids: tensor<4x2xi32>, %w: tensor<4x2xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects slot_weights shape [4] to match token_ids shape [8]}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) : tensor<4x2xi32>, tensor<4x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<8xi32>, tensor<4xf32>, tensor<i32>
  return
}

// -----

func.func @plan_counts_experts(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects counts dim 0 (4) to equal experts (8)}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<4xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return
}

// -----

func.func @plan_offsets_experts(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects offsets dim 0 (8) to equal experts + 1 (9)}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<8xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return
}

// -----

func.func @plan_token_slots(%ids: tensor<4x2xi32>, %w: tensor<4x2xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects token_ids dim 0 (4) to equal tokens x top_k (8)}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) : tensor<4x2xi32>, tensor<4x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<4xi32>, tensor<4xf32>, tensor<i32>
  return
}

// -----

func.func @plan_experts_positive(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op attribute 'num_experts' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(0) top_k(2) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<0xi32>, tensor<1xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return
}

// -----

func.func @plan_top_k_positive(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op attribute 'top_k' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(0) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return
}

// -----

func.func @plan_dropped_scalar(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op result #4 must be 0D tensor of 32-bit signless integer values, but got 'tensor<1xi32>'}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<1xi32>
  return
}

// -----

func.func @plan_unknown_overflow(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{expected one of {drop, next_choice}, got 'reroute'}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) capacity(1.0) overflow(reroute) priority(token_order) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return
}

// -----

func.func @plan_unknown_priority(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{expected one of {token_order, batch_prioritized}, got 'random'}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) capacity(1.0) overflow(drop) priority(random) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return
}

//===----------------------------------------------------------------------===//
// moe.gather
//===----------------------------------------------------------------------===//

// -----

func.func @gather_input_rank(%x: tensor<64xf32>, %t: tensor<?xi32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.gather' op expects input of rank 2, got rank 1}}
  %0 = moe.gather ins(%x, %t : tensor<64xf32>, tensor<?xi32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @gather_token_ids_rank(%x: tensor<?x64xf32>, %t: tensor<?x2xi32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.gather' op expects token_ids of rank 1, got rank 2}}
  %0 = moe.gather ins(%x, %t : tensor<?x64xf32>, tensor<?x2xi32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @gather_init_rank(%x: tensor<?x64xf32>, %t: tensor<?xi32>, %i: tensor<?xf32>) {
  // expected-error @+1 {{'moe.gather' op expects init of rank 2, got rank 1}}
  %0 = moe.gather ins(%x, %t : tensor<?x64xf32>, tensor<?xi32>) outs(%i : tensor<?xf32>) -> tensor<?xf32>
  return
}

// -----

func.func @gather_slots(%x: tensor<?x64xf32>, %t: tensor<8xi32>, %i: tensor<6x64xf32>) {
  // expected-error @+1 {{'moe.gather' op expects init dim 0 (6) to match token_ids dim 0 (8)}}
  %0 = moe.gather ins(%x, %t : tensor<?x64xf32>, tensor<8xi32>) outs(%i : tensor<6x64xf32>) -> tensor<6x64xf32>
  return
}

// -----

func.func @gather_width(%x: tensor<?x64xf32>, %t: tensor<?xi32>, %i: tensor<?x32xf32>) {
  // expected-error @+1 {{'moe.gather' op expects init dim 1 (32) to match input dim 1 (64)}}
  %0 = moe.gather ins(%x, %t : tensor<?x64xf32>, tensor<?xi32>) outs(%i : tensor<?x32xf32>) -> tensor<?x32xf32>
  return
}

// -----

func.func @gather_result(%x: tensor<?x64xf32>, %t: tensor<8xi32>, %i: tensor<8x64xf32>) {
  // expected-error @+1 {{'moe.gather' op expects result type 'tensor<?x64xf32>' to match init type 'tensor<8x64xf32>'}}
  %0 = moe.gather ins(%x, %t : tensor<?x64xf32>, tensor<8xi32>) outs(%i : tensor<8x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @gather_token_ids_element_type(%x: tensor<?x64xf32>, %t: tensor<?xi64>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.gather' op operand #1 must be ranked tensor of 32-bit signless integer values, but got 'tensor<?xi64>'}}
  %0 = moe.gather ins(%x, %t : tensor<?x64xf32>, tensor<?xi64>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

//===----------------------------------------------------------------------===//
// moe.combine
//===----------------------------------------------------------------------===//

// -----

func.func @combine_rows_rank(%y: tensor<64xf32>, %t: tensor<?xi32>, %s: tensor<?xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.combine' op expects expert_rows of rank 2, got rank 1}}
  %0 = moe.combine ins(%y, %t, %s : tensor<64xf32>, tensor<?xi32>, tensor<?xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @combine_token_ids_rank(%y: tensor<?x64xf32>, %t: tensor<?x1xi32>, %s: tensor<?x1xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.combine' op expects token_ids of rank 1, got rank 2}}
  %0 = moe.combine ins(%y, %t, %s : tensor<?x64xf32>, tensor<?x1xi32>, tensor<?x1xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @combine_init_rank(%y: tensor<?x64xf32>, %t: tensor<?xi32>, %s: tensor<?xf32>, %acc: tensor<64xf32>) {
  // expected-error @+1 {{'moe.combine' op expects init of rank 2, got rank 1}}
  %0 = moe.combine ins(%y, %t, %s : tensor<?x64xf32>, tensor<?xi32>, tensor<?xf32>) outs(%acc : tensor<64xf32>) -> tensor<64xf32>
  return
}

// -----

func.func @combine_slots(%y: tensor<8x64xf32>, %t: tensor<6xi32>, %s: tensor<6xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.combine' op expects token_ids dim 0 (6) to match expert_rows dim 0 (8)}}
  %0 = moe.combine ins(%y, %t, %s : tensor<8x64xf32>, tensor<6xi32>, tensor<6xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @combine_slot_weights_shape(%y: tensor<8x64xf32>, %t: tensor<8xi32>, %s: tensor<6xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.combine' op expects slot_weights shape [6] to match token_ids shape [8]}}
  %0 = moe.combine ins(%y, %t, %s : tensor<8x64xf32>, tensor<8xi32>, tensor<6xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @combine_width(%y: tensor<?x64xf32>, %t: tensor<?xi32>, %s: tensor<?xf32>, %acc: tensor<?x32xf32>) {
  // expected-error @+1 {{'moe.combine' op expects init dim 1 (32) to match expert_rows dim 1 (64)}}
  %0 = moe.combine ins(%y, %t, %s : tensor<?x64xf32>, tensor<?xi32>, tensor<?xf32>) outs(%acc : tensor<?x32xf32>) -> tensor<?x32xf32>
  return
}

// -----

func.func @combine_result(%y: tensor<?x64xf32>, %t: tensor<?xi32>, %s: tensor<?xf32>, %acc: tensor<4x64xf32>) {
  // expected-error @+1 {{'moe.combine' op expects result type 'tensor<?x64xf32>' to match init type 'tensor<4x64xf32>'}}
  %0 = moe.combine ins(%y, %t, %s : tensor<?x64xf32>, tensor<?xi32>, tensor<?xf32>) outs(%acc : tensor<4x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @combine_slot_weights_element_type(%y: tensor<?x64xf32>, %t: tensor<?xi32>, %s: tensor<?xbf16>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.combine' op operand #2 must be ranked tensor of 32-bit float values, but got 'tensor<?xbf16>'}}
  %0 = moe.combine ins(%y, %t, %s : tensor<?x64xf32>, tensor<?xi32>, tensor<?xbf16>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

//===----------------------------------------------------------------------===//
// moe.expert_ffn
//===----------------------------------------------------------------------===//

// -----

func.func @ffn_rows_rank(%r: tensor<64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects rows of rank 2, got rank 1}}
  %0 = moe.expert_ffn gelu ins(%r, %o, %w1, %w2 : tensor<64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @ffn_offsets_rank(%r: tensor<?x64xf32>, %o: tensor<9x1xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects offsets of rank 1, got rank 2}}
  %0 = moe.expert_ffn gelu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9x1xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @ffn_w1_rank(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<128x64xf32>, %w2: tensor<8x64x128xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects w1 of rank 3, got rank 2}}
  %0 = moe.expert_ffn gelu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<128x64xf32>, tensor<8x64x128xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @ffn_w2_rank(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<64x128xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects w2 of rank 3, got rank 2}}
  %0 = moe.expert_ffn gelu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<64x128xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @ffn_init_rank(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %i: tensor<64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects init of rank 2, got rank 1}}
  %0 = moe.expert_ffn gelu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) outs(%i : tensor<64xf32>) -> tensor<64xf32>
  return
}

// -----

func.func @ffn_gated_without_up(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects the up projection w3 for gated activation swiglu}}
  %0 = moe.expert_ffn swiglu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @ffn_up_without_gating(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %w3: tensor<8x128x64xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects no up projection w3 for activation relu}}
  %0 = moe.expert_ffn relu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) up(%w3 : tensor<8x128x64xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @ffn_w3_shape(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %w3: tensor<8x64x64xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects w3 shape [8, 64, 64] to match w1 shape [8, 128, 64]}}
  %0 = moe.expert_ffn geglu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) up(%w3 : tensor<8x64x64xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @ffn_weight_element_types(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xbf16>, %w2: tensor<8x64x128xbf16>, %w3: tensor<8x128x64xf16>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects w3 element type ('f16') to match w1 element type ('bf16')}}
  %0 = moe.expert_ffn swiglu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xbf16>, tensor<8x64x128xbf16>) up(%w3 : tensor<8x128x64xf16>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @ffn_w2_experts(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<4x64x128xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects w2 dim 0 (4) to match w1 dim 0 (8)}}
  %0 = moe.expert_ffn gelu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<4x64x128xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @ffn_w2_model_width(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x32x128xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects w2 dim 1 (32) to match w1 dim 2 (64)}}
  %0 = moe.expert_ffn gelu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x32x128xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

// w2 is [E, D, F], not the transposed [E, F, D] of w1.
func.func @ffn_w2_hidden_width(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x64xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects w2 dim 2 (64) to match w1 dim 1 (128)}}
  %0 = moe.expert_ffn gelu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x64xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @ffn_rows_width(%r: tensor<?x32xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %i: tensor<?x32xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects rows dim 1 (32) to match w1 dim 2 (64)}}
  %0 = moe.expert_ffn gelu ins(%r, %o, %w1, %w2 : tensor<?x32xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) outs(%i : tensor<?x32xf32>) -> tensor<?x32xf32>
  return
}

// -----

func.func @ffn_offsets_experts(%r: tensor<?x64xf32>, %o: tensor<8xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects offsets dim 0 (8) to equal experts + 1 (9)}}
  %0 = moe.expert_ffn gelu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<8xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

// The expert count is taken from w2 when w1 leaves it dynamic.
func.func @ffn_offsets_experts_from_w2(%r: tensor<?x64xf32>, %o: tensor<4xi32>, %w1: tensor<?x128x64xf32>, %w2: tensor<8x64x128xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects offsets dim 0 (4) to equal experts + 1 (9)}}
  %0 = moe.expert_ffn gelu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<4xi32>, tensor<?x128x64xf32>, tensor<8x64x128xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @ffn_init_shape(%r: tensor<16x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %i: tensor<8x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects init shape [8, 64] to match rows shape [16, 64]}}
  %0 = moe.expert_ffn gelu ins(%r, %o, %w1, %w2 : tensor<16x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) outs(%i : tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @ffn_result(%r: tensor<16x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %i: tensor<16x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects result type 'tensor<?x64xf32>' to match init type 'tensor<16x64xf32>'}}
  %0 = moe.expert_ffn gelu ins(%r, %o, %w1, %w2 : tensor<16x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) outs(%i : tensor<16x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @ffn_weight_element_type_i8(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xi8>, %w2: tensor<8x64x128xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op operand #2 must be ranked tensor of 32-bit float or bfloat16 type or 16-bit float values, but got 'tensor<8x128x64xi8>'}}
  %0 = moe.expert_ffn gelu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xi8>, tensor<8x64x128xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @ffn_unknown_activation(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{expected one of {swiglu, geglu, gelu, relu, silu, gelu_tanh, geglu_tanh, relu2}, got 'tanh'}}
  %0 = moe.expert_ffn tanh ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

//===----------------------------------------------------------------------===//
// moe.shared_expert
//===----------------------------------------------------------------------===//

// -----

func.func @shared_input_rank(%x: tensor<64xf32>, %w1: tensor<256x64xf32>, %w2: tensor<64x256xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.shared_expert' op expects input of rank 2, got rank 1}}
  %0 = moe.shared_expert gelu ins(%x, %w1, %w2 : tensor<64xf32>, tensor<256x64xf32>, tensor<64x256xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @shared_w1_rank(%x: tensor<?x64xf32>, %w1: tensor<1x256x64xf32>, %w2: tensor<64x256xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.shared_expert' op expects w1 of rank 2, got rank 3}}
  %0 = moe.shared_expert gelu ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<1x256x64xf32>, tensor<64x256xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @shared_w2_rank(%x: tensor<?x64xf32>, %w1: tensor<256x64xf32>, %w2: tensor<1x64x256xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.shared_expert' op expects w2 of rank 2, got rank 3}}
  %0 = moe.shared_expert gelu ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x64xf32>, tensor<1x64x256xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @shared_init_rank(%x: tensor<?x64xf32>, %w1: tensor<256x64xf32>, %w2: tensor<64x256xf32>, %acc: tensor<64xf32>) {
  // expected-error @+1 {{'moe.shared_expert' op expects init of rank 2, got rank 1}}
  %0 = moe.shared_expert gelu ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>) outs(%acc : tensor<64xf32>) -> tensor<64xf32>
  return
}

// -----

func.func @shared_gated_without_up(%x: tensor<?x64xf32>, %w1: tensor<256x64xf32>, %w2: tensor<64x256xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.shared_expert' op expects the up projection w3 for gated activation geglu}}
  %0 = moe.shared_expert geglu ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @shared_up_without_gating(%x: tensor<?x64xf32>, %w1: tensor<256x64xf32>, %w2: tensor<64x256xf32>, %w3: tensor<256x64xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.shared_expert' op expects no up projection w3 for activation silu}}
  %0 = moe.shared_expert silu ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>) up(%w3 : tensor<256x64xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @shared_w3_shape(%x: tensor<?x64xf32>, %w1: tensor<256x64xf32>, %w2: tensor<64x256xf32>, %w3: tensor<64x256xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.shared_expert' op expects w3 shape [64, 256] to match w1 shape [256, 64]}}
  %0 = moe.shared_expert swiglu ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>) up(%w3 : tensor<64x256xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @shared_weight_element_types(%x: tensor<?x64xf32>, %w1: tensor<256x64xf32>, %w2: tensor<64x256xbf16>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.shared_expert' op expects w2 element type ('bf16') to match w1 element type ('f32')}}
  %0 = moe.shared_expert gelu ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x256xbf16>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @shared_w1_width(%x: tensor<?x64xf32>, %w1: tensor<256x32xf32>, %w2: tensor<64x256xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.shared_expert' op expects w1 dim 1 (32) to match input dim 1 (64)}}
  %0 = moe.shared_expert gelu ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x32xf32>, tensor<64x256xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @shared_w2_width(%x: tensor<?x64xf32>, %w1: tensor<256x64xf32>, %w2: tensor<32x256xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.shared_expert' op expects w2 dim 0 (32) to match input dim 1 (64)}}
  %0 = moe.shared_expert gelu ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x64xf32>, tensor<32x256xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @shared_hidden_width(%x: tensor<?x64xf32>, %w1: tensor<256x64xf32>, %w2: tensor<64x128xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.shared_expert' op expects w2 dim 1 (128) to match w1 dim 0 (256)}}
  %0 = moe.shared_expert gelu ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x128xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @shared_gate_rank(%x: tensor<?x64xf32>, %w1: tensor<256x64xf32>, %w2: tensor<64x256xf32>, %g: tensor<64xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.shared_expert' op expects gate of rank 2, got rank 1}}
  %0 = moe.shared_expert gelu ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>) gate(%g : tensor<64xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @shared_gate_rows(%x: tensor<?x64xf32>, %w1: tensor<256x64xf32>, %w2: tensor<64x256xf32>, %g: tensor<2x64xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.shared_expert' op expects gate dim 0 (2) to equal 1 (one gate logit per token)}}
  %0 = moe.shared_expert gelu ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>) gate(%g : tensor<2x64xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @shared_gate_width(%x: tensor<?x64xf32>, %w1: tensor<256x64xf32>, %w2: tensor<64x256xf32>, %g: tensor<1x32xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.shared_expert' op expects gate dim 1 (32) to match input dim 1 (64)}}
  %0 = moe.shared_expert gelu ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>) gate(%g : tensor<1x32xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @shared_init_shape(%x: tensor<8x64xf32>, %w1: tensor<256x64xf32>, %w2: tensor<64x256xf32>, %acc: tensor<4x64xf32>) {
  // expected-error @+1 {{'moe.shared_expert' op expects init shape [4, 64] to match input shape [8, 64]}}
  %0 = moe.shared_expert gelu ins(%x, %w1, %w2 : tensor<8x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>) outs(%acc : tensor<4x64xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @shared_result(%x: tensor<8x64xf32>, %w1: tensor<256x64xf32>, %w2: tensor<64x256xf32>, %acc: tensor<8x64xf32>) {
  // expected-error @+1 {{'moe.shared_expert' op expects result type 'tensor<?x64xf32>' to match init type 'tensor<8x64xf32>'}}
  %0 = moe.shared_expert gelu ins(%x, %w1, %w2 : tensor<8x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>) outs(%acc : tensor<8x64xf32>) -> tensor<?x64xf32>
  return
}

//===----------------------------------------------------------------------===//
// moe.layer_norm
//===----------------------------------------------------------------------===//

// -----

func.func @ln_input_rank(%q: tensor<256xf32>, %p: tensor<256xf32>) {
  // expected-error @+1 {{'moe.layer_norm' op expects input of rank 2, got rank 1}}
  %0 = moe.layer_norm %q, %p, %p : tensor<256xf32>, tensor<256xf32>
  return
}

// -----

func.func @ln_channels(%q: tensor<?x256xf32>, %p: tensor<128xf32>) {
  // expected-error @+1 {{'moe.layer_norm' op expects scale dim 0 (128) to match input dim 1 (256)}}
  %0 = moe.layer_norm %q, %p, %p : tensor<?x256xf32>, tensor<128xf32>
  return
}

// -----

func.func @ln_epsilon(%q: tensor<?x256xf32>, %p: tensor<256xf32>) {
  // expected-error @+1 {{'moe.layer_norm' op expects a positive finite epsilon, got inf}}
  %0 = moe.layer_norm %q, %p, %p {epsilon = 0x7FF0000000000000 : f64} : tensor<?x256xf32>, tensor<256xf32>
  return
}

// -----

func.func @ln_shift_type(%q: tensor<?x256xf32>, %s: tensor<256xf32>, %b: tensor<255xf32>) {
  // expected-error @+1 {{'moe.layer_norm' op failed to verify that all of {scale, shift} have same type}}
  %0 = "moe.layer_norm"(%q, %s, %b) : (tensor<?x256xf32>, tensor<256xf32>, tensor<255xf32>) -> tensor<?x256xf32>
  return
}

//===----------------------------------------------------------------------===//
// moe.batch_norm
//===----------------------------------------------------------------------===//

// -----

func.func @bn_input_rank(%q: tensor<256xf32>, %p: tensor<256xf32>) {
  // expected-error @+1 {{'moe.batch_norm' op expects input of rank 2, got rank 1}}
  %0 = moe.batch_norm %q, %p, %p, %p, %p : tensor<256xf32>, tensor<256xf32>
  return
}

// -----

func.func @bn_mean_rank(%q: tensor<?x256xf32>, %p: tensor<1x256xf32>) {
  // expected-error @+1 {{'moe.batch_norm' op expects mean of rank 1, got rank 2}}
  %0 = moe.batch_norm %q, %p, %p, %p, %p : tensor<?x256xf32>, tensor<1x256xf32>
  return
}

// -----

func.func @bn_channels(%q: tensor<?x256xf32>, %p: tensor<128xf32>) {
  // expected-error @+1 {{'moe.batch_norm' op expects mean dim 0 (128) to match input dim 1 (256)}}
  %0 = moe.batch_norm %q, %p, %p, %p, %p : tensor<?x256xf32>, tensor<128xf32>
  return
}

// -----

func.func @bn_epsilon(%q: tensor<?x256xf32>, %p: tensor<256xf32>) {
  // expected-error @+1 {{'moe.batch_norm' op expects a positive finite epsilon, got 0}}
  %0 = moe.batch_norm %q, %p, %p, %p, %p {epsilon = 0.0 : f64} : tensor<?x256xf32>, tensor<256xf32>
  return
}

// -----

func.func @bn_epsilon_infinite(%q: tensor<?x256xf32>, %p: tensor<256xf32>) {
  // expected-error @+1 {{'moe.batch_norm' op expects a positive finite epsilon, got inf}}
  %0 = moe.batch_norm %q, %p, %p, %p, %p {epsilon = 0x7FF0000000000000 : f64} : tensor<?x256xf32>, tensor<256xf32>
  return
}

// -----

// The custom form gives all four statistics one type; the generic form may not.
func.func @bn_statistics_types(%q: tensor<?x256xf32>, %p: tensor<256xf32>, %v: tensor<?xf32>) {
  // expected-error @+1 {{'moe.batch_norm' op failed to verify that all of {mean, variance, scale, shift} have same type}}
  %0 = "moe.batch_norm"(%q, %p, %v, %p, %p) : (tensor<?x256xf32>, tensor<256xf32>, tensor<?xf32>, tensor<256xf32>, tensor<256xf32>) -> tensor<?x256xf32>
  return
}

// -----

func.func @bn_result_type(%q: tensor<?x256xf32>, %p: tensor<256xf32>) {
  // expected-error @+1 {{'moe.batch_norm' op failed to verify that all of {input, result} have same type}}
  %0 = "moe.batch_norm"(%q, %p, %p, %p, %p) : (tensor<?x256xf32>, tensor<256xf32>, tensor<256xf32>, tensor<256xf32>, tensor<256xf32>) -> tensor<4x256xf32>
  return
}

// -----

func.func @bn_statistics_element_type(%q: tensor<?x256xf32>, %p: tensor<256xbf16>) {
  // expected-error @+1 {{'moe.batch_norm' op operand #1 must be ranked tensor of 32-bit float values, but got 'tensor<256xbf16>'}}
  %0 = moe.batch_norm %q, %p, %p, %p, %p : tensor<?x256xf32>, tensor<256xbf16>
  return
}

//===----------------------------------------------------------------------===//
// moe.single_neuron_experts
//===----------------------------------------------------------------------===//

// -----

func.func @sne_input_rank(%x: tensor<64xf32>, %ids: tensor<?x8x16xi32>, %w: tensor<?x8x16xf32>, %v: tensor<1024x64xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.single_neuron_experts' op expects input of rank 2, got rank 1}}
  %0 = moe.single_neuron_experts ins(%x, %ids, %w, %v : tensor<64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<1024x64xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @sne_ids_rank(%x: tensor<?x64xf32>, %ids: tensor<?x16xi32>, %w: tensor<?x16xf32>, %v: tensor<1024x64xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.single_neuron_experts' op expects ids of rank 3, got rank 2}}
  %0 = moe.single_neuron_experts ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x16xi32>, tensor<?x16xf32>, tensor<1024x64xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @sne_expert_out_rank(%x: tensor<?x64xf32>, %ids: tensor<?x8x16xi32>, %w: tensor<?x8x16xf32>, %v: tensor<65536xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.single_neuron_experts' op expects expert_out of rank 2, got rank 1}}
  %0 = moe.single_neuron_experts ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<65536xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @sne_init_rank(%x: tensor<?x64xf32>, %ids: tensor<?x8x16xi32>, %w: tensor<?x8x16xf32>, %v: tensor<1024x64xf32>, %acc: tensor<64xf32>) {
  // expected-error @+1 {{'moe.single_neuron_experts' op expects init of rank 2, got rank 1}}
  %0 = moe.single_neuron_experts ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<1024x64xf32>) outs(%acc : tensor<64xf32>) -> tensor<64xf32>
  return
}

// -----

func.func @sne_weights_shape(%x: tensor<?x64xf32>, %ids: tensor<?x8x16xi32>, %w: tensor<?x8x8xf32>, %v: tensor<1024x64xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.single_neuron_experts' op expects weights shape [?, 8, 8] to match ids shape [?, 8, 16]}}
  %0 = moe.single_neuron_experts ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x8xf32>, tensor<1024x64xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @sne_tokens(%x: tensor<4x64xf32>, %ids: tensor<5x8x16xi32>, %w: tensor<5x8x16xf32>, %v: tensor<1024x64xf32>, %acc: tensor<4x64xf32>) {
  // expected-error @+1 {{'moe.single_neuron_experts' op expects ids dim 0 (5) to match input dim 0 (4)}}
  %0 = moe.single_neuron_experts ins(%x, %ids, %w, %v : tensor<4x64xf32>, tensor<5x8x16xi32>, tensor<5x8x16xf32>, tensor<1024x64xf32>) outs(%acc : tensor<4x64xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @sne_value_width(%x: tensor<?x64xf32>, %ids: tensor<?x8x16xi32>, %w: tensor<?x8x16xf32>, %v: tensor<1024x32xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.single_neuron_experts' op expects expert_out dim 1 (32) to match input dim 1 (64)}}
  %0 = moe.single_neuron_experts ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<1024x32xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @sne_expert_in_shape(%x: tensor<?x64xf32>, %ids: tensor<?x8x16xi32>, %w: tensor<?x8x16xf32>, %v: tensor<1024x64xf32>, %u: tensor<512x64xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.single_neuron_experts' op expects expert_in shape [512, 64] to match expert_out shape [1024, 64]}}
  %0 = moe.single_neuron_experts ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<1024x64xf32>) in_proj(%u : tensor<512x64xf32>, gelu) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @sne_expert_in_element_type(%x: tensor<?x64xf32>, %ids: tensor<?x8x16xi32>, %w: tensor<?x8x16xf32>, %v: tensor<1024x64xf32>, %u: tensor<1024x64xbf16>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.single_neuron_experts' op expects expert_in element type ('bf16') to match expert_out element type ('f32')}}
  %0 = moe.single_neuron_experts ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<1024x64xf32>) in_proj(%u : tensor<1024x64xbf16>, gelu) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

// Only the generic form can give in_proj without its activation.
func.func @sne_in_proj_without_activation(%x: tensor<?x64xf32>, %ids: tensor<?x8x16xi32>, %w: tensor<?x8x16xf32>, %v: tensor<1024x64xf32>, %u: tensor<1024x64xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.single_neuron_experts' op expects an activation with in_proj (PEER experts)}}
  %0 = "moe.single_neuron_experts"(%x, %ids, %w, %v, %u, %acc) : (tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<1024x64xf32>, tensor<1024x64xf32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @sne_gated_activation(%x: tensor<?x64xf32>, %ids: tensor<?x8x16xi32>, %w: tensor<?x8x16xf32>, %v: tensor<1024x64xf32>, %u: tensor<1024x64xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.single_neuron_experts' op expects an ungated activation (gelu, gelu_tanh, relu, relu2, silu), got swiglu}}
  %0 = moe.single_neuron_experts ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<1024x64xf32>) in_proj(%u : tensor<1024x64xf32>, swiglu) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

// Only the generic form can give an activation without in_proj.
func.func @sne_activation_without_in_proj(%x: tensor<?x64xf32>, %ids: tensor<?x8x16xi32>, %w: tensor<?x8x16xf32>, %v: tensor<1024x64xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.single_neuron_experts' op expects no activation without in_proj (PKM values)}}
  %0 = "moe.single_neuron_experts"(%x, %ids, %w, %v, %acc) <{activation = #moe<activation gelu>}> : (tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<1024x64xf32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @sne_init_shape(%x: tensor<4x64xf32>, %ids: tensor<4x8x16xi32>, %w: tensor<4x8x16xf32>, %v: tensor<1024x64xf32>, %acc: tensor<8x64xf32>) {
  // expected-error @+1 {{'moe.single_neuron_experts' op expects init shape [8, 64] to match input shape [4, 64]}}
  %0 = moe.single_neuron_experts ins(%x, %ids, %w, %v : tensor<4x64xf32>, tensor<4x8x16xi32>, tensor<4x8x16xf32>, tensor<1024x64xf32>) outs(%acc : tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @sne_result(%x: tensor<4x64xf32>, %ids: tensor<4x8x16xi32>, %w: tensor<4x8x16xf32>, %v: tensor<1024x64xf32>, %acc: tensor<4x64xf32>) {
  // expected-error @+1 {{'moe.single_neuron_experts' op expects result type 'tensor<?x64xf32>' to match init type 'tensor<4x64xf32>'}}
  %0 = moe.single_neuron_experts ins(%x, %ids, %w, %v : tensor<4x64xf32>, tensor<4x8x16xi32>, tensor<4x8x16xf32>, tensor<1024x64xf32>) outs(%acc : tensor<4x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @sne_unknown_activation(%x: tensor<?x64xf32>, %ids: tensor<?x8x16xi32>, %w: tensor<?x8x16xf32>, %v: tensor<1024x64xf32>, %u: tensor<1024x64xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{expected one of {swiglu, geglu, gelu, relu, silu, gelu_tanh, geglu_tanh, relu2}, got 'gelu_approx'}}
  %0 = moe.single_neuron_experts ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<1024x64xf32>) in_proj(%u : tensor<1024x64xf32>, gelu_approx) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

//===----------------------------------------------------------------------===//
// moe.token_split / moe.token_merge
//===----------------------------------------------------------------------===//

// -----

func.func @split_input_rank(%x: tensor<64xf32>) {
  // expected-error @+1 {{'moe.token_split' op expects input of rank 2, got rank 1}}
  %0 = moe.token_split %x heads(4) : tensor<64xf32> -> tensor<?x16xf32>
  return
}

// -----

func.func @split_result_rank(%x: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.token_split' op expects result of rank 2, got rank 3}}
  %0 = moe.token_split %x heads(4) : tensor<?x64xf32> -> tensor<?x4x16xf32>
  return
}

// -----

func.func @split_dynamic_width(%x: tensor<?x?xf32>) {
  // expected-error @+1 {{'moe.token_split' op expects a static model width (input dim 1)}}
  %0 = moe.token_split %x heads(4) : tensor<?x?xf32> -> tensor<?x16xf32>
  return
}

// -----

func.func @split_heads_divide_width(%x: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.token_split' op expects model width (64) divisible by heads (3)}}
  %0 = moe.token_split %x heads(3) : tensor<?x64xf32> -> tensor<?x21xf32>
  return
}

// -----

func.func @split_sub_token_width(%x: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.token_split' op expects result dim 1 (32) to equal model width / heads (16)}}
  %0 = moe.token_split %x heads(4) : tensor<?x64xf32> -> tensor<?x32xf32>
  return
}

// -----

func.func @split_sub_token_count(%x: tensor<4x64xf32>) {
  // expected-error @+1 {{'moe.token_split' op expects result dim 0 (8) to equal input dim 0 x heads (4 x 4)}}
  %0 = moe.token_split %x heads(4) : tensor<4x64xf32> -> tensor<8x16xf32>
  return
}

// -----

func.func @split_sub_token_count_dynamic(%x: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.token_split' op expects result dim 0 (16) to equal input dim 0 x heads (? x 4)}}
  %0 = moe.token_split %x heads(4) : tensor<?x64xf32> -> tensor<16x16xf32>
  return
}

// -----

func.func @split_heads_positive(%x: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.token_split' op attribute 'heads' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %0 = moe.token_split %x heads(0) : tensor<?x64xf32> -> tensor<?x64xf32>
  return
}

// -----

func.func @merge_input_rank(%x: tensor<64xf32>) {
  // expected-error @+1 {{'moe.token_merge' op expects input of rank 2, got rank 1}}
  %0 = moe.token_merge %x heads(4) : tensor<64xf32> -> tensor<?x64xf32>
  return
}

// -----

func.func @merge_result_rank(%x: tensor<?x16xf32>) {
  // expected-error @+1 {{'moe.token_merge' op expects result of rank 2, got rank 1}}
  %0 = moe.token_merge %x heads(4) : tensor<?x16xf32> -> tensor<64xf32>
  return
}

// -----

func.func @merge_dynamic_width(%x: tensor<?x16xf32>) {
  // expected-error @+1 {{'moe.token_merge' op expects a static model width (result dim 1)}}
  %0 = moe.token_merge %x heads(4) : tensor<?x16xf32> -> tensor<?x?xf32>
  return
}

// -----

func.func @merge_heads_divide_width(%x: tensor<?x16xf32>) {
  // expected-error @+1 {{'moe.token_merge' op expects model width (50) divisible by heads (4)}}
  %0 = moe.token_merge %x heads(4) : tensor<?x16xf32> -> tensor<?x50xf32>
  return
}

// -----

func.func @merge_sub_token_width(%x: tensor<?x32xf32>) {
  // expected-error @+1 {{'moe.token_merge' op expects input dim 1 (32) to equal model width / heads (16)}}
  %0 = moe.token_merge %x heads(4) : tensor<?x32xf32> -> tensor<?x64xf32>
  return
}

// -----

func.func @merge_sub_token_count(%x: tensor<6x16xf32>) {
  // expected-error @+1 {{'moe.token_merge' op expects input dim 0 (6) to equal result dim 0 x heads (2 x 4)}}
  %0 = moe.token_merge %x heads(4) : tensor<6x16xf32> -> tensor<2x64xf32>
  return
}

// -----

func.func @merge_heads_positive(%x: tensor<?x16xf32>) {
  // expected-error @+1 {{'moe.token_merge' op attribute 'heads' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %0 = moe.token_merge %x heads(-4) : tensor<?x16xf32> -> tensor<?x64xf32>
  return
}

//===----------------------------------------------------------------------===//
// moe.aux_loss
//===----------------------------------------------------------------------===//

// -----

func.func @aux_logits_rank(%l: tensor<8xf32>) {
  // expected-error @+1 {{'moe.aux_loss' op expects logits of rank 2, got rank 1}}
  %0 = moe.aux_loss z_loss %l : tensor<8xf32> -> tensor<f32>
  return
}

// -----

func.func @aux_load_balance_without_ids(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.aux_loss' op expects ids for load_balance}}
  %0 = moe.aux_loss load_balance %l : tensor<?x8xf32> -> tensor<f32>
  return
}

// -----

func.func @aux_importance_without_ids(%l: tensor<?x8xf32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.aux_loss' op expects ids for importance}}
  %0 = moe.aux_loss importance %l weights(%w : tensor<?x2xf32>) : tensor<?x8xf32> -> tensor<f32>
  return
}

// -----

func.func @aux_z_loss_with_ids(%l: tensor<?x8xf32>, %ids: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.aux_loss' op expects no ids for z_loss}}
  %0 = moe.aux_loss z_loss %l ids(%ids : tensor<?x2xi32>) : tensor<?x8xf32> -> tensor<f32>
  return
}

// -----

func.func @aux_importance_without_weights(%l: tensor<?x8xf32>, %ids: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.aux_loss' op expects weights for importance}}
  %0 = moe.aux_loss importance %l ids(%ids : tensor<?x2xi32>) : tensor<?x8xf32> -> tensor<f32>
  return
}

// -----

func.func @aux_load_balance_with_weights(%l: tensor<?x8xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.aux_loss' op expects no weights for load_balance}}
  %0 = moe.aux_loss load_balance %l ids(%ids : tensor<?x2xi32>) weights(%w : tensor<?x2xf32>) : tensor<?x8xf32> -> tensor<f32>
  return
}

// -----

func.func @aux_z_loss_with_weights(%l: tensor<?x8xf32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.aux_loss' op expects no weights for z_loss}}
  %0 = moe.aux_loss z_loss %l weights(%w : tensor<?x2xf32>) : tensor<?x8xf32> -> tensor<f32>
  return
}

// -----

func.func @aux_ids_rank(%l: tensor<?x8xf32>, %ids: tensor<?xi32>) {
  // expected-error @+1 {{'moe.aux_loss' op expects ids of rank 2, got rank 1}}
  %0 = moe.aux_loss load_balance %l ids(%ids : tensor<?xi32>) : tensor<?x8xf32> -> tensor<f32>
  return
}

// -----

func.func @aux_ids_tokens(%l: tensor<4x8xf32>, %ids: tensor<5x2xi32>) {
  // expected-error @+1 {{'moe.aux_loss' op expects ids dim 0 (5) to match logits dim 0 (4)}}
  %0 = moe.aux_loss load_balance %l ids(%ids : tensor<5x2xi32>) : tensor<4x8xf32> -> tensor<f32>
  return
}

// -----

func.func @aux_ids_above_experts(%l: tensor<?x8xf32>, %ids: tensor<?x9xi32>) {
  // expected-error @+1 {{'moe.aux_loss' op expects ids dim 1 (9) <= experts (8)}}
  %0 = moe.aux_loss load_balance %l ids(%ids : tensor<?x9xi32>) : tensor<?x8xf32> -> tensor<f32>
  return
}

// -----

func.func @aux_weights_shape(%l: tensor<?x8xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x3xf32>) {
  // expected-error @+1 {{'moe.aux_loss' op expects weights shape [?, 3] to match ids shape [?, 2]}}
  %0 = moe.aux_loss importance %l ids(%ids : tensor<?x2xi32>) weights(%w : tensor<?x3xf32>) : tensor<?x8xf32> -> tensor<f32>
  return
}

// -----

func.func @aux_coefficient(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.aux_loss' op expects a non-negative finite coefficient, got -0.01}}
  %0 = moe.aux_loss z_loss %l {coefficient = -1.0e-02 : f64} : tensor<?x8xf32> -> tensor<f32>
  return
}

// -----

func.func @aux_coefficient_infinite(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.aux_loss' op expects a non-negative finite coefficient, got -inf}}
  %0 = moe.aux_loss z_loss %l {coefficient = 0xFFF0000000000000 : f64} : tensor<?x8xf32> -> tensor<f32>
  return
}

// -----

func.func @aux_result_scalar(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.aux_loss' op result #0 must be 0D tensor of 32-bit float values, but got 'tensor<1xf32>'}}
  %0 = moe.aux_loss z_loss %l : tensor<?x8xf32> -> tensor<1xf32>
  return
}

// -----

func.func @aux_unknown_kind(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{expected one of {load_balance, importance, z_loss}, got 'entropy'}}
  %0 = moe.aux_loss entropy %l : tensor<?x8xf32> -> tensor<f32>
  return
}

// -----

func.func @softcap_zero(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.softcap' op expects a positive finite cap, got 0}}
  %c = moe.softcap %l cap(0.0) : tensor<?x8xf32>
  return
}

// -----

func.func @softcap_negative(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.softcap' op expects a positive finite cap, got -2.5}}
  %c = moe.softcap %l cap(-2.5) : tensor<?x8xf32>
  return
}

// -----

func.func @softcap_rank(%l: tensor<8xf32>) {
  // expected-error @+1 {{'moe.softcap' op expects input of rank 2, got rank 1}}
  %c = moe.softcap %l cap(1.0) : tensor<8xf32>
  return
}

// -----

func.func @pk_sqrt_softplus(%q: tensor<?x256xf32>, %k1: tensor<16x16xf32>, %k2: tensor<16x16xf32>, %w0: tensor<?x8x4xf32>, %i0: tensor<?x8x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects score softmax or sigmoid, got sqrt_softplus}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(sqrt_softplus) ins(%q, %k1, %k2 : tensor<?x256xf32>, tensor<16x16xf32>, tensor<16x16xf32>) outs(%w0, %i0 : tensor<?x8x4xf32>, tensor<?x8x4xi32>) -> tensor<?x8x4xf32>, tensor<?x8x4xi32>
  return
}

// -----

func.func @rms_norm_weight_width(%x: tensor<?x64xf32>, %w: tensor<32xf32>) {
  // expected-error @+1 {{'moe.rms_norm' op expects weight dim 0 (32) to match input dim 1 (64)}}
  %xr = moe.rms_norm %x, %w : tensor<?x64xf32>, tensor<32xf32>
  return
}

// -----

func.func @rms_norm_epsilon(%x: tensor<?x64xf32>, %w: tensor<64xf32>) {
  // expected-error @+1 {{'moe.rms_norm' op expects a positive finite epsilon, got 0}}
  %xr = moe.rms_norm %x, %w {epsilon = 0.0 : f64} : tensor<?x64xf32>, tensor<64xf32>
  return
}

// -----

func.func @plan_capacity_tokens_zero(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects a capacity in tokens in [1, 2147483647], got 0}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) capacity(tokens 0) overflow(drop) priority(token_order) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return
}

// -----

func.func @plan_capacity_factor_and_tokens(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects one of a capacity factor, a capacity in tokens and a capacity fraction, not more}}
  %c, %o, %t, %s, %d = "moe.dispatch_plan"(%ids, %w) <{num_experts = 8 : i64, top_k = 2 : i64, capacity_factor = 1.0 : f64, capacity_tokens = 4 : i64}> : (tensor<?x2xi32>, tensor<?x2xf32>) -> (tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>)
  return
}

// -----

func.func @plan_capacity_fraction_zero(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects a positive finite capacity fraction, got 0}}
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) capacity(fraction 0.0) overflow(drop) priority(token_order) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return
}

// -----

func.func @plan_capacity_tokens_and_fraction(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects one of a capacity factor, a capacity in tokens and a capacity fraction, not more}}
  %c, %o, %t, %s, %d = "moe.dispatch_plan"(%ids, %w) <{num_experts = 8 : i64, top_k = 2 : i64, capacity_fraction = 1.0 : f64, capacity_tokens = 4 : i64}> : (tensor<?x2xi32>, tensor<?x2xf32>) -> (tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>)
  return
}

// -----

func.func @plan_renormalize_dropless(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.dispatch_plan' op expects a capacity with renormalize: a dropless plan keeps every weight}}
  %c, %o, %t, %s, %d = "moe.dispatch_plan"(%ids, %w) <{num_experts = 8 : i64, top_k = 2 : i64, renormalize}> : (tensor<?x2xi32>, tensor<?x2xf32>) -> (tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>)
  return
}

// -----

func.func @sparsemixer_no_eps(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects jitter_eps with score sparsemixer}}
  %w, %ids = moe.route %l top_k(2) score(sparsemixer) order(topk_then_score) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @sparsemixer_negative_eps(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects a finite jitter_eps >= 0, got -1}}
  %w, %ids = moe.route %l top_k(2) score(sparsemixer) jitter_eps(-1.0) order(topk_then_score) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @sparsemixer_score_first(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects order topk_then_score with score sparsemixer (it picks by the logits)}}
  %w, %ids = moe.route %l top_k(2) score(sparsemixer) jitter_eps(0.01) order(score_then_topk) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @jitter_eps_softmax(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects jitter_eps only with score sparsemixer, got score softmax}}
  %w, %ids = moe.route %l top_k(2) score(softmax) jitter_eps(0.01) order(topk_then_score) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @sparsemixer_groups(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.route' op expects no groups with score sparsemixer}}
  %w, %ids = moe.route %l top_k(2) score(sparsemixer) jitter_eps(0.01) order(topk_then_score) groups(4, keep 2, max) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @sparsemixer_bias(%l: tensor<?x8xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{'moe.route' op expects no selection bias with score sparsemixer}}
  %w, %ids = moe.route %l top_k(2) score(sparsemixer) jitter_eps(0.01) order(topk_then_score) bias(%b : tensor<8xf32>) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @hash_table_width(%l: tensor<?x8xf32>, %t: tensor<?xi32>, %h: tensor<100x3xi32>) {
  // expected-error @+1 {{'moe.route' op expects hash_table dim 1 (3) to equal top_k (2)}}
  %w, %ids = moe.route %l top_k(2) score(softmax) order(score_then_topk) hash(%t, %h : tensor<?xi32>, tensor<100x3xi32>) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @hash_token_rank(%l: tensor<?x8xf32>, %t: tensor<?x1xi32>, %h: tensor<100x2xi32>) {
  // expected-error @+1 {{'moe.route' op expects token_ids of rank 1, got rank 2}}
  %w, %ids = moe.route %l top_k(2) score(softmax) order(score_then_topk) hash(%t, %h : tensor<?x1xi32>, tensor<100x2xi32>) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @hash_topk_first(%l: tensor<?x8xf32>, %t: tensor<?xi32>, %h: tensor<100x2xi32>) {
  // expected-error @+1 {{'moe.route' op expects order score_then_topk and a softmax, sigmoid or sqrt_softplus score with hash routing (the table picks, the score weighs)}}
  %w, %ids = moe.route %l top_k(2) score(softmax) order(topk_then_score) hash(%t, %h : tensor<?xi32>, tensor<100x2xi32>) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @hash_groups(%l: tensor<?x8xf32>, %t: tensor<?xi32>, %h: tensor<100x2xi32>) {
  // expected-error @+1 {{'moe.route' op expects no selection bias, noise or groups with hash routing: the table picks the experts}}
  %w, %ids = moe.route %l top_k(2) score(softmax) order(score_then_topk) groups(4, keep 2, max) hash(%t, %h : tensor<?xi32>, tensor<100x2xi32>) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @hash_fallbacks(%l: tensor<?x8xf32>, %t: tensor<?xi32>, %h: tensor<100x2xi32>) {
  // expected-error @+1 {{'moe.route' op expects top_k choices with hash routing: the table has no fallback choices}}
  %w, %ids = moe.route %l top_k(2) score(softmax) order(score_then_topk) hash(%t, %h : tensor<?xi32>, tensor<100x2xi32>) : tensor<?x8xf32> -> tensor<?x3xf32>, tensor<?x3xi32>
  return
}

// -----

func.func @hash_table_alone(%l: tensor<?x8xf32>, %h: tensor<100x2xi32>) {
  // expected-error @+1 {{'moe.route' op expects token_ids and hash_table together}}
  %w, %ids = "moe.route"(%l, %h) <{operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 1>, top_k = 2 : i64, score = #moe<score softmax>, order = #moe<order score_then_topk>}> : (tensor<?x8xf32>, tensor<100x2xi32>) -> (tensor<?x2xf32>, tensor<?x2xi32>)
  return
}

// -----

func.func @aux_loss_sparsemixer(%l: tensor<?x8xf32>, %ids: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.aux_loss' op expects score softmax, sigmoid or sqrt_softplus: sparsemixer weights are no probabilities (a sparsemixer router's losses take softmax)}}
  %0 = moe.aux_loss load_balance %l ids(%ids : tensor<?x2xi32>) {score = #moe<score sparsemixer>} : tensor<?x8xf32> -> tensor<f32>
  return
}

// -----

func.func @pk_sparsemixer(%q: tensor<?x256xf32>, %k1: tensor<16x16xf32>, %k2: tensor<16x16xf32>, %w0: tensor<?x8x4xf32>, %i0: tensor<?x8x4xi32>) {
  // expected-error @+1 {{'moe.product_key_topk' op expects score softmax or sigmoid, got sparsemixer}}
  %w, %ids = moe.product_key_topk heads(8) top_k(4) score(sparsemixer) ins(%q, %k1, %k2 : tensor<?x256xf32>, tensor<16x16xf32>, tensor<16x16xf32>) outs(%w0, %i0 : tensor<?x8x4xf32>, tensor<?x8x4xi32>) -> tensor<?x8x4xf32>, tensor<?x8x4xi32>
  return
}

// -----

func.func @gather_scale_slots(%x: tensor<?x64xf32>, %tokens: tensor<16xi32>, %w: tensor<8xf32>, %init: tensor<16x64xf32>) {
  // expected-error @+1 {{'moe.gather' op expects scale dim 0 (8) to match token_ids dim 0 (16)}}
  %rows = moe.gather ins(%x, %tokens : tensor<?x64xf32>, tensor<16xi32>) scale(%w : tensor<8xf32>) outs(%init : tensor<16x64xf32>) -> tensor<16x64xf32>
  return
}

// -----

// moe.warp_mma's registers: i32 fragments (two bf16 each), f32 accumulators.
func.func @warp_mma_f16_accumulator(%a: i32, %c: f32, %h: f16) {
  // expected-error @+1 {{'moe.warp_mma' op operand #9 must be 32-bit float, but got 'f16'}}
  %d:4 = "moe.warp_mma"(%a, %a, %a, %a, %a, %a, %c, %c, %c, %h) : (i32, i32, i32, i32, i32, i32, f32, f32, f32, f16) -> (f32, f32, f32, f32)
  return
}

// -----

func.func @warp_mma_f32_fragment(%a: i32, %c: f32) {
  // expected-error @+1 {{'moe.warp_mma' op operand #0 must be 32-bit signless integer, but got 'f32'}}
  %d:4 = "moe.warp_mma"(%c, %a, %a, %a, %a, %a, %c, %c, %c, %c) : (f32, i32, i32, i32, i32, i32, f32, f32, f32, f32) -> (f32, f32, f32, f32)
  return
}
