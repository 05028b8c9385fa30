// RUN: moe-opt --convert-moe-to-linalg -split-input-file %s | FileCheck %s

// Softmax over all experts (row max with NaN-propagating maximumf, exp,
// sum, divide), then the row top-k: a loop over tokens threading the ids
// tensor, k selection passes, each a scan of the row; the weights gather the
// scores at the chosen ids.
// CHECK-LABEL: func.func @route_softmax_score_then_topk
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<?x8xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[MAX:.*]] = linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]{{.*}} ins(%[[L]] : tensor<?x8xf32>)
// CHECK:           arith.maximumf
// CHECK:         %[[EXP:.*]] = linalg.generic {{.*}} ins(%[[L]], %[[MAX]] : tensor<?x8xf32>, tensor<?xf32>)
// CHECK:           arith.subf
// CHECK:           math.exp
// CHECK:         %[[SUM:.*]] = linalg.generic {{.*}} ins(%[[EXP]] : tensor<?x8xf32>)
// CHECK:           arith.addf
// CHECK:         %[[S:.*]] = linalg.generic {{.*}} ins(%[[EXP]], %[[SUM]] : tensor<?x8xf32>, tensor<?xf32>)
// CHECK:           arith.divf
// CHECK:         %[[IDS0:.*]] = tensor.empty(%{{.*}}) : tensor<?x2xi32>
// CHECK:         %[[IDS:.*]] = scf.for %[[T:.*]] = %{{.*}} to %{{.*}} step %{{.*}} iter_args(%{{.*}} = %[[IDS0]]) -> (tensor<?x2xi32>)
// CHECK:           scf.for %[[P:.*]] = %{{.*}} to %{{.*}} step
// CHECK:             scf.for %[[N:.*]] = %{{.*}} to %{{.*}} step
// CHECK:               tensor.extract %[[S]][%[[T]], %[[N]]] : tensor<?x8xf32>
// CHECK:               arith.cmpf uno
// CHECK:               arith.cmpf ogt
// CHECK:               arith.cmpf oeq
// CHECK:               arith.cmpi slt
// CHECK:             tensor.insert %{{.*}} into %{{.*}}[%[[T]], %[[P]]] : tensor<?x2xi32>
// CHECK:         %[[W:.*]] = linalg.generic {{.*}} ins(%[[IDS]] : tensor<?x2xi32>)
// CHECK:           %[[ROW:.*]] = linalg.index 0 : index
// CHECK:           %[[COL:.*]] = arith.index_cast %{{.*}} : i32 to index
// CHECK:           tensor.extract %[[S]][%[[ROW]], %[[COL]]] : tensor<?x8xf32>
// CHECK:         return %[[W]], %[[IDS]] : tensor<?x2xf32>, tensor<?x2xi32>
func.func @route_softmax_score_then_topk(%logits: tensor<?x8xf32>)
    -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(score_then_topk)
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %w, %ids : tensor<?x2xf32>, tensor<?x2xi32>
}

// -----

// Mixtral with fallback columns: the top-4 of the raw logits, then a softmax
// whose max and denominator come from the first top_k = 2 columns only
// (extract_slice), shared by the fallback columns; normalize divides by the
// top-2 sum and multiplies by the scaling.
// CHECK-LABEL: func.func @route_topk_then_score_fallbacks
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<?x8xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[IDS:.*]] = scf.for {{.*}} -> (tensor<?x4xi32>)
// CHECK:               tensor.extract %[[L]]
// CHECK:         %[[CHOSEN:.*]] = linalg.generic {{.*}} ins(%[[IDS]] : tensor<?x4xi32>) outs(%{{.*}} : tensor<?x4xf32>)
// CHECK:           tensor.extract %[[L]]
// CHECK:         %[[TOP:.*]] = tensor.extract_slice %[[CHOSEN]][0, 0] [%{{.*}}, 2] [1, 1] : tensor<?x4xf32> to tensor<?x2xf32>
// CHECK:         %[[MAX:.*]] = linalg.generic {{.*}} ins(%[[TOP]] : tensor<?x2xf32>)
// CHECK:           arith.maximumf
// CHECK:         %[[EXP:.*]] = linalg.generic {{.*}} ins(%[[CHOSEN]], %[[MAX]] : tensor<?x4xf32>, tensor<?xf32>)
// CHECK:           math.exp
// CHECK:         %[[EXPTOP:.*]] = tensor.extract_slice %[[EXP]][0, 0] [%{{.*}}, 2] [1, 1]
// CHECK:         %[[DENOM:.*]] = linalg.generic {{.*}} ins(%[[EXPTOP]] : tensor<?x2xf32>)
// CHECK:         %[[RAW:.*]] = linalg.generic {{.*}} ins(%[[EXP]], %[[DENOM]] : tensor<?x4xf32>, tensor<?xf32>)
// CHECK:           arith.divf
// CHECK:         %[[SCALE:.*]] = arith.constant 2.000000e+00 : f32
// CHECK:         %[[RAWTOP:.*]] = tensor.extract_slice %[[RAW]][0, 0] [%{{.*}}, 2] [1, 1]
// CHECK:         %[[NORM:.*]] = linalg.generic {{.*}} ins(%[[RAWTOP]] : tensor<?x2xf32>)
// CHECK:           arith.addf
// CHECK:         %[[W:.*]] = linalg.generic {{.*}} ins(%[[RAW]], %[[NORM]] : tensor<?x4xf32>, tensor<?xf32>)
// CHECK:           %[[Q:.*]] = arith.divf
// CHECK:           arith.mulf %[[Q]], %[[SCALE]] : f32
// CHECK:         return %[[W]], %[[IDS]] : tensor<?x4xf32>, tensor<?x4xi32>
func.func @route_topk_then_score_fallbacks(%logits: tensor<?x8xf32>)
    -> (tensor<?x4xf32>, tensor<?x4xi32>) {
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(topk_then_score)
      {normalize = true, scaling = 2.0 : f64}
      : tensor<?x8xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
  return %w, %ids : tensor<?x4xf32>, tensor<?x4xi32>
}

// -----

// DeepSeek-style: sigmoid scores, selection key = score + bias, group scores
// from a top-2 per (token, group) row of the [T*4, 2] view, the kept groups
// by a top-2 over [T, 4], an i1 exclusion mask, and the top-k over the key
// honouring the mask. The weights gather the sigmoid scores, not the key.
// CHECK-LABEL: func.func @route_grouped_bias
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<?x8xf32>, %[[B:[a-zA-Z0-9_]+]]: tensor<8xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[S:.*]] = linalg.generic {{.*}} ins(%[[L]] : tensor<?x8xf32>)
// CHECK:           arith.negf
// CHECK:           math.exp
// CHECK:         %[[KEY:.*]] = linalg.generic {{.*}} ins(%[[S]], %[[B]] : tensor<?x8xf32>, tensor<8xf32>)
// CHECK:           arith.addf
// CHECK:         %[[G3:.*]] = tensor.expand_shape %[[KEY]] {{\[\[}}0], [1, 2]] output_shape [%{{.*}}, 4, 2] : tensor<?x8xf32> into tensor<?x4x2xf32>
// CHECK:         %[[GROWS:.*]] = tensor.collapse_shape %[[G3]] {{\[\[}}0, 1], [2]] : tensor<?x4x2xf32> into tensor<?x2xf32>
// CHECK:         %[[GTOP:.*]]:2 = scf.for {{.*}} -> (tensor<?x2xi32>, tensor<?x2xf32>)
// CHECK:               tensor.extract %[[GROWS]]
// CHECK:         %[[GSUM:.*]] = linalg.generic {{.*}} ins(%[[GTOP]]#1 : tensor<?x2xf32>)
// CHECK:           arith.addf
// CHECK:         %[[GSCORE:.*]] = tensor.expand_shape %[[GSUM]] {{\[\[}}0, 1]] output_shape [%{{.*}}, 4] : tensor<?xf32> into tensor<?x4xf32>
// CHECK:         %[[KEPT:.*]] = scf.for {{.*}} -> (tensor<?x2xi32>)
// CHECK:               tensor.extract %[[GSCORE]]
// CHECK:         %[[EXCLUDED:.*]] = linalg.generic {{.*}} outs(%{{.*}} : tensor<?x8xi1>)
// CHECK:           arith.divui
// CHECK:           tensor.extract %[[KEPT]]
// CHECK:           tensor.extract %[[KEPT]]
// CHECK:           linalg.yield %{{.*}} : i1
// CHECK:         %[[IDS:.*]] = scf.for {{.*}} -> (tensor<?x2xi32>)
// CHECK:               tensor.extract %[[KEY]]
// CHECK:               tensor.extract %[[EXCLUDED]]
// CHECK:         %[[W:.*]] = linalg.generic {{.*}} ins(%[[IDS]] : tensor<?x2xi32>)
// CHECK:           tensor.extract %[[S]]
// CHECK:         return %[[W]], %[[IDS]]
func.func @route_grouped_bias(%logits: tensor<?x8xf32>, %bias: tensor<8xf32>)
    -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %w, %ids = moe.route %logits top_k(2) score(sigmoid) order(score_then_topk)
      groups(4, keep 2, top2_sum) bias(%bias : tensor<8xf32>)
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %w, %ids : tensor<?x2xf32>, tensor<?x2xi32>
}

// -----

// Group score max: a top-1 per (token, group) row.
// CHECK-LABEL: func.func @route_grouped_max
// CHECK:         tensor.collapse_shape %{{.*}} {{\[\[}}0, 1], [2]] : tensor<16x4x2xf32> into tensor<64x2xf32>
// CHECK:         scf.for {{.*}} -> (tensor<64x1xi32>, tensor<64x1xf32>)
// CHECK:         tensor.expand_shape %{{.*}} {{\[\[}}0, 1]] output_shape [16, 4] : tensor<64xf32> into tensor<16x4xf32>
// CHECK:         scf.for {{.*}} -> (tensor<16x1xi32>)
// CHECK:         linalg.generic {{.*}} outs(%{{.*}} : tensor<16x8xi1>)
func.func @route_grouped_max(%logits: tensor<16x8xf32>)
    -> (tensor<16x2xf32>, tensor<16x2xi32>) {
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(score_then_topk)
      groups(4, keep 1, max)
      : tensor<16x8xf32> -> tensor<16x2xf32>, tensor<16x2xi32>
  return %w, %ids : tensor<16x2xf32>, tensor<16x2xi32>
}

// -----

// Noisy top-k: key (seed lo, seed hi), then per (t, e) ten Philox rounds of
// two 32x32->64 multiplies with the Weyl-bumped key, Box-Muller of words 0
// and 1, and l + n * softplus(z) with softplus = log1p(exp(-|z|)) + max(z, 0).
// CHECK-LABEL: func.func @route_noise
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<?x8xf32>, %[[Z:[a-zA-Z0-9_]+]]: tensor<?x8xf32>, %[[SEED:[a-zA-Z0-9_]+]]: i64
// CHECK-NOT:     moe.
// CHECK:         %[[K0:.*]] = arith.trunci %[[SEED]] : i64 to i32
// CHECK:         %[[HI:.*]] = arith.shrui %[[SEED]], %{{.*}} : i64
// CHECK:         %[[K1:.*]] = arith.trunci %[[HI]] : i64 to i32
// CHECK:         %[[NOISY:.*]] = linalg.generic {{.*}} ins(%[[L]], %[[Z]] : tensor<?x8xf32>, tensor<?x8xf32>)
// CHECK:         ^bb0(%[[LV:.*]]: f32, %[[ZV:.*]]: f32, %{{.*}}: f32):
// CHECK:           %[[T:.*]] = arith.index_castui %{{.*}} : index to i32
// CHECK:           %[[E:.*]] = arith.index_castui %{{.*}} : index to i32
// CHECK-DAG:       arith.constant -766435501 : i32
// CHECK-DAG:       arith.constant -845247145 : i32
// CHECK-DAG:       arith.constant -1640531527 : i32
// CHECK-DAG:       arith.constant -1150833019 : i32
// CHECK:           arith.mului_extended %{{.*}}, %[[E]] : i32
// CHECK-COUNT-19:  arith.mului_extended
// CHECK-NOT:       arith.mului_extended
// CHECK:           arith.uitofp
// CHECK:           arith.uitofp
// CHECK:           math.log
// CHECK:           math.sqrt
// CHECK:           math.cos
// CHECK:           %[[N:.*]] = arith.mulf
// CHECK:           math.absf %[[ZV]]
// CHECK:           math.log1p
// CHECK:           arith.maximumf %[[ZV]]
// CHECK:           %[[SP:.*]] = arith.addf
// CHECK:           %[[SCALED:.*]] = arith.mulf %[[N]], %[[SP]] : f32
// CHECK:           %[[OUT:.*]] = arith.addf %[[LV]], %[[SCALED]] : f32
// CHECK:           linalg.yield %[[OUT]] : f32
// CHECK:         scf.for
// CHECK:               tensor.extract %[[NOISY]]
func.func @route_noise(%logits: tensor<?x8xf32>, %noise: tensor<?x8xf32>,
                       %seed: i64) -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(topk_then_score)
      noise(%noise, %seed : tensor<?x8xf32>)
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %w, %ids : tensor<?x2xf32>, tensor<?x2xi32>
}

// -----

// Sigmoid after the selection, with a static number of tokens in the results
// and a dynamic ids width: the lowering computes [T, C] and casts to the
// declared types.
// CHECK-LABEL: func.func @route_result_casts
// CHECK:         %[[IDS:.*]] = scf.for {{.*}} -> (tensor<?x2xi32>)
// CHECK:         %[[CHOSEN:.*]] = linalg.generic {{.*}} ins(%[[IDS]] : tensor<?x2xi32>)
// CHECK:         %[[W:.*]] = linalg.generic {{.*}} ins(%[[CHOSEN]] : tensor<?x2xf32>)
// CHECK:           math.exp
// CHECK-DAG:     %[[WC:.*]] = tensor.cast %[[W]] : tensor<?x2xf32> to tensor<4x2xf32>
// CHECK-DAG:     %[[IC:.*]] = tensor.cast %[[IDS]] : tensor<?x2xi32> to tensor<4x?xi32>
// CHECK:         return %[[WC]], %[[IC]]
func.func @route_result_casts(%logits: tensor<?x8xf32>)
    -> (tensor<4x2xf32>, tensor<4x?xi32>) {
  %w, %ids = moe.route %logits top_k(2) score(sigmoid) order(topk_then_score)
      : tensor<?x8xf32> -> tensor<4x2xf32>, tensor<4x?xi32>
  return %w, %ids : tensor<4x2xf32>, tensor<4x?xi32>
}

// -----

// sqrt(softplus(l)) elementwise (softplus = log1p(exp(-|l|)) + max(l, 0)),
// then the top-k of the scores.
// CHECK-LABEL: func.func @route_sqrt_softplus
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<?x8xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[S:.*]] = linalg.generic {{.*}} ins(%[[L]] : tensor<?x8xf32>)
// CHECK:           math.absf
// CHECK:           arith.negf
// CHECK:           math.exp
// CHECK:           math.log1p
// CHECK:           arith.maximumf
// CHECK:           arith.addf
// CHECK:           math.sqrt
// CHECK:         scf.for
// CHECK:           tensor.extract %[[S]]
func.func @route_sqrt_softplus(%logits: tensor<?x8xf32>)
    -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %w, %ids = moe.route %logits top_k(2) score(sqrt_softplus) order(score_then_topk)
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %w, %ids : tensor<?x2xf32>, tensor<?x2xi32>
}

// -----

// sparsemixer: the top-k of the logits, then for each pick (logit m) one
// reduction over the experts: skip those ranked ahead of it (the ranking
// rule) or with (m - l) / max(|l|, m) > 2·eps (eps 0.01 -> 0.02 in f32), sum
// exp(l - m) of the rest; the weight is 1 / sum.
// CHECK-LABEL: func.func @route_sparsemixer
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<?x8xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[IDS:.*]] = scf.for
// CHECK:         %[[M:.*]] = linalg.generic {{.*}} ins(%[[IDS]] : tensor<?x2xi32>)
// CHECK:         %[[SUM:.*]] = linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "reduction"]} ins(%[[L]], %[[M]], %[[IDS]] : tensor<?x8xf32>, tensor<?x2xf32>, tensor<?x2xi32>)
// CHECK:           arith.cmpf ogt
// CHECK:           %[[ABS:.*]] = math.absf
// CHECK:           %[[SCALE:.*]] = arith.maximumf %[[ABS]]
// CHECK:           %[[DIST:.*]] = arith.divf %{{.*}}, %[[SCALE]]
// CHECK:           %[[MASKED:.*]] = arith.cmpf ogt, %[[DIST]], %{{.*}} : f32
// CHECK:           %[[SKIP:.*]] = arith.ori %{{.*}}, %[[MASKED]]
// CHECK:           %[[EXP:.*]] = math.exp
// CHECK:           %[[TERM:.*]] = arith.select %[[SKIP]], %{{.*}}, %[[EXP]]
// CHECK:           arith.addf %{{.*}}, %[[TERM]]
// CHECK:         linalg.generic {{.*}} ins(%[[SUM]] : tensor<?x2xf32>)
// CHECK:           arith.divf
func.func @route_sparsemixer(%logits: tensor<?x8xf32>)
    -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %w, %ids = moe.route %logits top_k(2) score(sparsemixer) jitter_eps(0.01)
      order(topk_then_score)
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %w, %ids : tensor<?x2xf32>, tensor<?x2xi32>
}

// -----

// Hash routing: ids[t, j] = table[token_ids[t], j] with both lookups guarded
// (an out-of-range token id or entry gives -1), the scores of all experts,
// gathered where the id is valid (0 otherwise), normalised with 0 kept 0.
// CHECK-LABEL: func.func @route_hash
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<?x8xf32>, %[[T:[a-zA-Z0-9_]+]]: tensor<?xi32>, %[[H:[a-zA-Z0-9_]+]]: tensor<100x2xi32>
// CHECK-NOT:     moe.
// CHECK:         %[[IDS:.*]] = linalg.generic {{.*}} ins(%[[T]] : tensor<?xi32>)
// CHECK:           scf.if
// CHECK:             tensor.extract %[[H]]
// CHECK:           arith.select %{{.*}}, %{{.*}}, %c-1_i32 : i32
// CHECK:         %[[S:.*]] = linalg.generic {{.*}} ins(%[[L]] : tensor<?x8xf32>)
// CHECK:         %[[RAW:.*]] = linalg.generic {{.*}} ins(%[[IDS]] : tensor<?x2xi32>)
// CHECK:           scf.if
// CHECK:             tensor.extract %[[S]]
// CHECK:         %[[SUM:.*]] = linalg.generic {{.*}} ins(%[[RAW]] : tensor<?x2xf32>)
// CHECK:         linalg.generic {{.*}} ins(%[[RAW]], %[[SUM]] : tensor<?x2xf32>, tensor<?xf32>)
// CHECK:           %[[Q:.*]] = arith.divf
// CHECK:           %[[ZERO:.*]] = arith.cmpf oeq
// CHECK:           arith.select %[[ZERO]], %{{.*}}, %[[Q]]
// CHECK:         return
func.func @route_hash(%logits: tensor<?x8xf32>, %tokens: tensor<?xi32>, %table: tensor<100x2xi32>)
    -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %w, %ids = moe.route %logits top_k(2) score(sigmoid) order(score_then_topk)
      hash(%tokens, %table : tensor<?xi32>, tensor<100x2xi32>) {normalize = true}
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %w, %ids : tensor<?x2xf32>, tensor<?x2xi32>
}
