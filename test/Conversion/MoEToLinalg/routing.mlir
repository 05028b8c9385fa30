// RUN: moe-opt --convert-moe-to-linalg -split-input-file %s | FileCheck %s

// init + x · wᵀ: a linalg.matmul whose B map reads the [out, in] weight
// transposed; the matmul's cast widens bf16 to f32 and accumulates into init.
// CHECK-DAG:   #[[A:.*]] = affine_map<(d0, d1, d2) -> (d0, d2)>
// CHECK-DAG:   #[[BT:.*]] = affine_map<(d0, d1, d2) -> (d1, d2)>
// CHECK-DAG:   #[[C:.*]] = affine_map<(d0, d1, d2) -> (d0, d1)>
// CHECK-LABEL: func.func @linear_bf16
// CHECK-SAME:    %[[X:[a-zA-Z0-9_]+]]: tensor<?x64xf32>, %[[W:[a-zA-Z0-9_]+]]: tensor<8x64xbf16>, %[[INIT:[a-zA-Z0-9_]+]]: tensor<?x8xf32>
// CHECK:         %[[Y:.*]] = linalg.matmul indexing_maps = [#[[A]], #[[BT]], #[[C]]] ins(%[[X]], %[[W]] : tensor<?x64xf32>, tensor<8x64xbf16>) outs(%[[INIT]] : tensor<?x8xf32>) -> tensor<?x8xf32>
// CHECK:         return %[[Y]]
func.func @linear_bf16(%x: tensor<?x64xf32>, %w: tensor<8x64xbf16>,
                       %init: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %y = moe.linear ins(%x, %w : tensor<?x64xf32>, tensor<8x64xbf16>)
                  outs(%init : tensor<?x8xf32>) -> tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}

// -----

// Leading dims collapsed into rows; the row top-k threads the collapsed inits
// (values and indices written in place) and the results are expanded back.
// CHECK-LABEL: func.func @topk_rank3
// CHECK-SAME:    %[[X:[a-zA-Z0-9_]+]]: tensor<2x?x16xf32>, %[[V0:[a-zA-Z0-9_]+]]: tensor<2x?x4xf32>, %[[I0:[a-zA-Z0-9_]+]]: tensor<2x?x4xi32>
// CHECK-NOT:     moe.
// CHECK:         %[[ROWS:.*]] = tensor.collapse_shape %[[X]] {{\[\[}}0, 1], [2]] : tensor<2x?x16xf32> into tensor<?x16xf32>
// CHECK:         %[[VR:.*]] = tensor.collapse_shape %[[V0]] {{\[\[}}0, 1], [2]] : tensor<2x?x4xf32> into tensor<?x4xf32>
// CHECK:         %[[IR:.*]] = tensor.collapse_shape %[[I0]] {{\[\[}}0, 1], [2]] : tensor<2x?x4xi32> into tensor<?x4xi32>
// CHECK:         %[[TOP:.*]]:2 = scf.for %[[R:.*]] = %{{.*}} to %{{.*}} step %{{.*}} iter_args(%{{.*}} = %[[IR]], %{{.*}} = %[[VR]]) -> (tensor<?x4xi32>, tensor<?x4xf32>)
// CHECK:           scf.for %[[P:.*]] = %{{.*}} to %{{.*}} step
// CHECK:             scf.for %[[N:.*]] = %{{.*}} to %{{.*}} step
// CHECK:               tensor.extract %[[ROWS]][%[[R]], %[[N]]] : tensor<?x16xf32>
// CHECK:             tensor.insert %{{.*}} into %{{.*}}[%[[R]], %[[P]]] : tensor<?x4xi32>
// CHECK:             tensor.insert %{{.*}} into %{{.*}}[%[[R]], %[[P]]] : tensor<?x4xf32>
// CHECK:         %[[V:.*]] = tensor.expand_shape %[[TOP]]#1 {{\[\[}}0, 1], [2]] output_shape [2, %{{.*}}, 4] : tensor<?x4xf32> into tensor<2x?x4xf32>
// CHECK:         %[[I:.*]] = tensor.expand_shape %[[TOP]]#0 {{\[\[}}0, 1], [2]] output_shape [2, %{{.*}}, 4] : tensor<?x4xi32> into tensor<2x?x4xi32>
// CHECK:         return %[[V]], %[[I]]
func.func @topk_rank3(%x: tensor<2x?x16xf32>, %v0: tensor<2x?x4xf32>,
                      %i0: tensor<2x?x4xi32>)
    -> (tensor<2x?x4xf32>, tensor<2x?x4xi32>) {
  %v, %i = moe.topk ins(%x : tensor<2x?x16xf32>)
      outs(%v0, %i0 : tensor<2x?x4xf32>, tensor<2x?x4xi32>)
      -> tensor<2x?x4xf32>, tensor<2x?x4xi32>
  return %v, %i : tensor<2x?x4xf32>, tensor<2x?x4xi32>
}

// -----

// A vector is one row.
// CHECK-LABEL: func.func @topk_vector
// CHECK:         tensor.expand_shape %{{.*}} {{\[\[}}0, 1]] output_shape [1, %{{.*}}] : tensor<?xf32> into tensor<1x?xf32>
// CHECK:         %[[TOP:.*]]:2 = scf.for {{.*}} -> (tensor<1x3xi32>, tensor<1x3xf32>)
// CHECK:         tensor.collapse_shape %[[TOP]]#1 {{\[\[}}0, 1]] : tensor<1x3xf32> into tensor<3xf32>
// CHECK:         tensor.collapse_shape %[[TOP]]#0 {{\[\[}}0, 1]] : tensor<1x3xi32> into tensor<3xi32>
func.func @topk_vector(%x: tensor<?xf32>, %v0: tensor<3xf32>, %i0: tensor<3xi32>)
    -> (tensor<3xf32>, tensor<3xi32>) {
  %v, %i = moe.topk ins(%x : tensor<?xf32>) outs(%v0, %i0 : tensor<3xf32>, tensor<3xi32>)
      -> tensor<3xf32>, tensor<3xi32>
  return %v, %i : tensor<3xf32>, tensor<3xi32>
}

// -----

// Product keys: sub-key scores [T, heads, n] as contractions reading the
// head's query half through an affine map (h * d_k + d, + d_k/2 for the
// second half), bf16 keys widened; top-k' of each over [T*heads, n] rows;
// the k'×k' candidate sums and ids i*n + j; their top-k (ties by id) into
// the collapsed ids init; a softmax over each head's k scores.
// CHECK-DAG:   #[[Q1:.*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1 * 8 + d3)>
// CHECK-DAG:   #[[Q2:.*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1 * 8 + d3 + 4)>
// CHECK-DAG:   #[[KEYS:.*]] = affine_map<(d0, d1, d2, d3) -> (d2, d3)>
// CHECK-DAG:   #[[SCORES:.*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2)>
// CHECK-LABEL: func.func @product_key
// CHECK-SAME:    %[[Q:[a-zA-Z0-9_]+]]: tensor<?x16xf32>, %[[K1:[a-zA-Z0-9_]+]]: tensor<32x4xbf16>, %[[K2:[a-zA-Z0-9_]+]]: tensor<32x4xbf16>, %[[W0:[a-zA-Z0-9_]+]]: tensor<?x2x8xf32>, %[[I0:[a-zA-Z0-9_]+]]: tensor<?x2x8xi32>
// CHECK-NOT:     moe.
// CHECK:         %[[S1:.*]] = linalg.generic {indexing_maps = [#[[Q1]], #[[KEYS]], #[[SCORES]]], iterator_types = ["parallel", "parallel", "parallel", "reduction"]} ins(%[[Q]], %[[K1]] : tensor<?x16xf32>, tensor<32x4xbf16>)
// CHECK:           arith.extf %{{.*}} : bf16 to f32
// CHECK:         %[[S2:.*]] = linalg.generic {indexing_maps = [#[[Q2]], #[[KEYS]], #[[SCORES]]], {{.*}} ins(%[[Q]], %[[K2]] : tensor<?x16xf32>, tensor<32x4xbf16>)
// CHECK:         %[[R1:.*]] = tensor.collapse_shape %[[S1]] {{\[\[}}0, 1], [2]] : tensor<?x2x32xf32> into tensor<?x32xf32>
// CHECK:         %[[R2:.*]] = tensor.collapse_shape %[[S2]] {{\[\[}}0, 1], [2]] : tensor<?x2x32xf32> into tensor<?x32xf32>
// CHECK:         %[[TOP1:.*]]:2 = scf.for {{.*}} -> (tensor<?x8xi32>, tensor<?x8xf32>)
// CHECK:               tensor.extract %[[R1]]
// CHECK:         %[[TOP2:.*]]:2 = scf.for {{.*}} -> (tensor<?x8xi32>, tensor<?x8xf32>)
// CHECK:               tensor.extract %[[R2]]
// CHECK:         %[[CAND:.*]]:2 = linalg.generic {{.*}} ins(%[[TOP1]]#1, %[[TOP1]]#0, %[[TOP2]]#1, %[[TOP2]]#0 : tensor<?x8xf32>, tensor<?x8xi32>, tensor<?x8xf32>, tensor<?x8xi32>) outs(%{{.*}}, %{{.*}} : tensor<?x8x8xf32>, tensor<?x8x8xi32>)
// CHECK:         ^bb0(%[[V1:.*]]: f32, %[[I1:.*]]: i32, %[[V2:.*]]: f32, %[[I2:.*]]: i32, %{{.*}}: f32, %{{.*}}: i32):
// CHECK:           %[[SUM:.*]] = arith.addf %[[V1]], %[[V2]] : f32
// CHECK:           %[[ROWID:.*]] = arith.muli %[[I1]], %{{.*}} : i32
// CHECK:           %[[ID:.*]] = arith.addi %[[ROWID]], %[[I2]] : i32
// CHECK:           linalg.yield %[[SUM]], %[[ID]] : f32, i32
// CHECK:         %[[CS:.*]] = tensor.collapse_shape %[[CAND]]#0 {{\[\[}}0], [1, 2]] : tensor<?x8x8xf32> into tensor<?x64xf32>
// CHECK:         %[[CI:.*]] = tensor.collapse_shape %[[CAND]]#1 {{\[\[}}0], [1, 2]] : tensor<?x8x8xi32> into tensor<?x64xi32>
// CHECK:         %[[IDS0:.*]] = tensor.collapse_shape %[[I0]] {{\[\[}}0, 1], [2]] : tensor<?x2x8xi32> into tensor<?x8xi32>
// CHECK:         %[[BEST:.*]]:2 = scf.for {{.*}} iter_args(%{{.*}} = %[[IDS0]], %{{.*}} = %{{.*}}) -> (tensor<?x8xi32>, tensor<?x8xf32>)
// CHECK:               tensor.extract %[[CS]]
// CHECK:               tensor.extract %[[CI]]
// CHECK:         %[[MAX:.*]] = linalg.generic {{.*}} ins(%[[BEST]]#1 : tensor<?x8xf32>)
// CHECK:           arith.maximumf
// CHECK:         %[[EXP:.*]] = linalg.generic {{.*}} ins(%[[BEST]]#1, %[[MAX]] : tensor<?x8xf32>, tensor<?xf32>)
// CHECK:           math.exp
// CHECK:         %[[SUM:.*]] = linalg.generic {{.*}} ins(%[[EXP]] : tensor<?x8xf32>)
// CHECK:         %[[WR:.*]] = linalg.generic {{.*}} ins(%[[EXP]], %[[SUM]] : tensor<?x8xf32>, tensor<?xf32>)
// CHECK:           arith.divf
// CHECK:         %[[WOUT:.*]] = tensor.expand_shape %[[WR]] {{\[\[}}0, 1], [2]] output_shape [%{{.*}}, 2, 8] : tensor<?x8xf32> into tensor<?x2x8xf32>
// CHECK:         %[[IOUT:.*]] = tensor.expand_shape %[[BEST]]#0 {{\[\[}}0, 1], [2]] output_shape [%{{.*}}, 2, 8] : tensor<?x8xi32> into tensor<?x2x8xi32>
// CHECK:         return %[[WOUT]], %[[IOUT]]
func.func @product_key(%q: tensor<?x16xf32>, %k1: tensor<32x4xbf16>,
                       %k2: tensor<32x4xbf16>, %w0: tensor<?x2x8xf32>,
                       %i0: tensor<?x2x8xi32>)
    -> (tensor<?x2x8xf32>, tensor<?x2x8xi32>) {
  %w, %i = moe.product_key_topk heads(2) top_k(8) score(softmax)
      ins(%q, %k1, %k2 : tensor<?x16xf32>, tensor<32x4xbf16>, tensor<32x4xbf16>)
      outs(%w0, %i0 : tensor<?x2x8xf32>, tensor<?x2x8xi32>)
      -> tensor<?x2x8xf32>, tensor<?x2x8xi32>
  return %w, %i : tensor<?x2x8xf32>, tensor<?x2x8xi32>
}

// -----

// Sigmoid product-key weights: elementwise, no row reduction.
// CHECK-LABEL: func.func @product_key_sigmoid
// CHECK:         tensor.collapse_shape %{{.*}} {{\[\[}}0], [1, 2]] : tensor<4x2x2xi32> into tensor<4x4xi32>
// CHECK:         %[[BEST:.*]]:2 = scf.for {{.*}} -> (tensor<4x2xi32>, tensor<4x2xf32>)
// CHECK:         linalg.generic {{.*}} ins(%[[BEST]]#1 : tensor<4x2xf32>)
// CHECK:           arith.negf
// CHECK:           math.exp
// CHECK:           arith.divf
// CHECK-NOT:     arith.maximumf
// CHECK:         return
func.func @product_key_sigmoid(%q: tensor<4x4xf32>, %k1: tensor<3x2xf32>,
                               %k2: tensor<3x2xf32>, %w0: tensor<4x1x2xf32>,
                               %i0: tensor<4x1x2xi32>)
    -> (tensor<4x1x2xf32>, tensor<4x1x2xi32>) {
  %w, %i = moe.product_key_topk heads(1) top_k(2) score(sigmoid)
      ins(%q, %k1, %k2 : tensor<4x4xf32>, tensor<3x2xf32>, tensor<3x2xf32>)
      outs(%w0, %i0 : tensor<4x1x2xf32>, tensor<4x1x2xi32>)
      -> tensor<4x1x2xf32>, tensor<4x1x2xi32>
  return %w, %i : tensor<4x1x2xf32>, tensor<4x1x2xi32>
}

// -----

// (x - mean) / sqrt(var + eps) * scale + shift with the channel parameters
// broadcast along the tokens.
// CHECK-DAG:   #[[FULL:.*]] = affine_map<(d0, d1) -> (d0, d1)>
// CHECK-DAG:   #[[CHAN:.*]] = affine_map<(d0, d1) -> (d1)>
// CHECK-LABEL: func.func @batch_norm
// CHECK-SAME:    %[[X:[a-zA-Z0-9_]+]]: tensor<?x4xf32>, %[[M:[a-zA-Z0-9_]+]]: tensor<4xf32>, %[[V:[a-zA-Z0-9_]+]]: tensor<4xf32>, %[[S:[a-zA-Z0-9_]+]]: tensor<4xf32>, %[[B:[a-zA-Z0-9_]+]]: tensor<4xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[EPS:.*]] = arith.constant 9.99999974E-6 : f32
// CHECK:         %[[Y:.*]] = linalg.generic {indexing_maps = [#[[FULL]], #[[CHAN]], #[[CHAN]], #[[CHAN]], #[[CHAN]], #[[FULL]]], iterator_types = ["parallel", "parallel"]} ins(%[[X]], %[[M]], %[[V]], %[[S]], %[[B]] :
// CHECK:         ^bb0(%[[XV:.*]]: f32, %[[MV:.*]]: f32, %[[VV:.*]]: f32, %[[SV:.*]]: f32, %[[BV:.*]]: f32, %{{.*}}: f32):
// CHECK:           %[[CENTERED:.*]] = arith.subf %[[XV]], %[[MV]] : f32
// CHECK:           %[[VAREPS:.*]] = arith.addf %[[VV]], %[[EPS]] : f32
// CHECK:           %[[STD:.*]] = math.sqrt %[[VAREPS]] : f32
// CHECK:           %[[NORM:.*]] = arith.divf %[[CENTERED]], %[[STD]] : f32
// CHECK:           %[[SCALED:.*]] = arith.mulf %[[NORM]], %[[SV]] : f32
// CHECK:           %[[OUT:.*]] = arith.addf %[[SCALED]], %[[BV]] : f32
// CHECK:           linalg.yield %[[OUT]] : f32
// CHECK:         return %[[Y]]
func.func @batch_norm(%x: tensor<?x4xf32>, %mean: tensor<4xf32>,
                      %var: tensor<4xf32>, %scale: tensor<4xf32>,
                      %shift: tensor<4xf32>) -> tensor<?x4xf32> {
  %y = moe.batch_norm %x, %mean, %var, %scale, %shift {epsilon = 1.0e-05 : f64}
      : tensor<?x4xf32>, tensor<4xf32>
  return %y : tensor<?x4xf32>
}

// -----

// LayerNorm: the row sum, the row sum of squared deviations from sum / C
// (two reductions over the channels, each row on its own), then
// (x - mean) / sqrt(var + eps) * scale + shift.
// CHECK-DAG:   #[[FULL:.*]] = affine_map<(d0, d1) -> (d0, d1)>
// CHECK-DAG:   #[[ROW:.*]] = affine_map<(d0, d1) -> (d0)>
// CHECK-DAG:   #[[CHAN:.*]] = affine_map<(d0, d1) -> (d1)>
// CHECK-LABEL: func.func @layer_norm
// CHECK-SAME:    %[[X:[a-zA-Z0-9_]+]]: tensor<?x4xf32>, %[[S:[a-zA-Z0-9_]+]]: tensor<4xf32>, %[[B:[a-zA-Z0-9_]+]]: tensor<4xf32>
// CHECK-NOT:     moe.
// CHECK-DAG:     %[[C:.*]] = arith.constant 4.000000e+00 : f32
// CHECK-DAG:     %[[EPS:.*]] = arith.constant 9.99999974E-6 : f32
// CHECK:         %[[SUM:.*]] = linalg.generic {indexing_maps = [#[[FULL]], #[[ROW]]], iterator_types = ["parallel", "reduction"]} ins(%[[X]] : tensor<?x4xf32>) outs(%{{.*}} : tensor<?xf32>)
// CHECK:           arith.addf
// CHECK:         %[[SQ:.*]] = linalg.generic {indexing_maps = [#[[FULL]], #[[ROW]], #[[ROW]]], iterator_types = ["parallel", "reduction"]} ins(%[[X]], %[[SUM]] : tensor<?x4xf32>, tensor<?xf32>)
// CHECK:           %[[MEAN:.*]] = arith.divf %{{.*}}, %[[C]] : f32
// CHECK:           %[[DEV:.*]] = arith.subf %{{.*}}, %[[MEAN]] : f32
// CHECK:           arith.mulf %[[DEV]], %[[DEV]] : f32
// CHECK:         %[[Y:.*]] = linalg.generic {indexing_maps = [#[[FULL]], #[[ROW]], #[[ROW]], #[[CHAN]], #[[CHAN]], #[[FULL]]], iterator_types = ["parallel", "parallel"]} ins(%[[X]], %[[SUM]], %[[SQ]], %[[S]], %[[B]] :
// CHECK:           arith.divf
// CHECK:           %[[VAR:.*]] = arith.divf %{{.*}}, %[[C]] : f32
// CHECK:           %[[VAREPS:.*]] = arith.addf %[[VAR]], %[[EPS]] : f32
// CHECK:           math.sqrt %[[VAREPS]] : f32
// CHECK:         return %[[Y]]
func.func @layer_norm(%x: tensor<?x4xf32>, %scale: tensor<4xf32>,
                      %shift: tensor<4xf32>) -> tensor<?x4xf32> {
  %y = moe.layer_norm %x, %scale, %shift : tensor<?x4xf32>, tensor<4xf32>
  return %y : tensor<?x4xf32>
}

// -----

// Sub-keys per head: head h scores against keys[h] (the keys map reads the
// head's table), the rest as with shared keys.
// CHECK-DAG:   #[[Q:.*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1 * 4 + d3)>
// CHECK-DAG:   #[[Q2:.*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1 * 4 + d3 + 2)>
// CHECK-DAG:   #[[K:.*]] = affine_map<(d0, d1, d2, d3) -> (d1, d2, d3)>
// CHECK-DAG:   #[[S:.*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2)>
// CHECK-LABEL: func.func @product_key_keys_per_head
// CHECK-SAME:    %[[QV:[a-zA-Z0-9_]+]]: tensor<?x8xf32>, %[[K1:[a-zA-Z0-9_]+]]: tensor<2x3x2xf32>, %[[K2:[a-zA-Z0-9_]+]]: tensor<2x3x2xf32>
// CHECK:         linalg.generic {indexing_maps = [#[[Q]], #[[K]], #[[S]]], iterator_types = ["parallel", "parallel", "parallel", "reduction"]} ins(%[[QV]], %[[K1]] : tensor<?x8xf32>, tensor<2x3x2xf32>)
// CHECK:         linalg.generic {indexing_maps = [#[[Q2]], #[[K]], #[[S]]], iterator_types = ["parallel", "parallel", "parallel", "reduction"]} ins(%[[QV]], %[[K2]] : tensor<?x8xf32>, tensor<2x3x2xf32>)
func.func @product_key_keys_per_head(%q: tensor<?x8xf32>, %k1: tensor<2x3x2xf32>,
                                     %k2: tensor<2x3x2xf32>, %w0: tensor<?x2x2xf32>,
                                     %i0: tensor<?x2x2xi32>)
    -> (tensor<?x2x2xf32>, tensor<?x2x2xi32>) {
  %w, %i = moe.product_key_topk heads(2) top_k(2) score(softmax)
      ins(%q, %k1, %k2 : tensor<?x8xf32>, tensor<2x3x2xf32>, tensor<2x3x2xf32>)
      outs(%w0, %i0 : tensor<?x2x2xf32>, tensor<?x2x2xi32>)
      -> tensor<?x2x2xf32>, tensor<?x2x2xi32>
  return %w, %i : tensor<?x2x2xf32>, tensor<?x2x2xi32>
}

// -----

// Load balance: an expert histogram of the ids (a loop over tokens and
// choices; ids outside [0, E) add 0), softmax probabilities summed over the
// tokens, then c * E * Σ_i (count_i / (T k)) (P_i / T) as a 0-d reduction.
// CHECK-LABEL: func.func @aux_load_balance
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<?x8xf32>, %[[IDS:[a-zA-Z0-9_]+]]: tensor<?x2xi32>
// CHECK-NOT:     moe.
// CHECK:         %[[COUNTS:.*]] = scf.for {{.*}} -> (tensor<8xf32>)
// CHECK:           scf.for {{.*}} -> (tensor<8xf32>)
// CHECK:             %[[ID:.*]] = tensor.extract %[[IDS]]
// CHECK:             arith.index_cast %[[ID]] : i32 to index
// CHECK:             arith.select
// CHECK:             tensor.insert
// CHECK:         %[[MAX:.*]] = linalg.generic {{.*}} ins(%[[L]] : tensor<?x8xf32>)
// CHECK:           arith.maximumf
// CHECK:         %[[EXP:.*]] = linalg.generic {{.*}} ins(%[[L]], %[[MAX]] : tensor<?x8xf32>, tensor<?xf32>)
// CHECK:         %[[ROWSUM:.*]] = linalg.generic {{.*}} ins(%[[EXP]] : tensor<?x8xf32>)
// CHECK:         %[[P:.*]] = linalg.generic {{.*}} ins(%[[EXP]], %[[ROWSUM]] : tensor<?x8xf32>, tensor<?xf32>)
// CHECK:           arith.divf
// CHECK:         %[[PSUM:.*]] = linalg.generic {{.*}}iterator_types = ["reduction", "parallel"]{{.*}} ins(%[[P]] : tensor<?x8xf32>) outs(%{{.*}} : tensor<8xf32>)
// CHECK:         %[[DOT:.*]] = linalg.generic {{.*}}iterator_types = ["reduction"]{{.*}} ins(%[[COUNTS]], %[[PSUM]] : tensor<8xf32>, tensor<8xf32>) outs(%{{.*}} : tensor<f32>)
// CHECK:         %[[D:.*]] = tensor.extract %[[DOT]][] : tensor<f32>
// CHECK:         %[[LB:.*]] = arith.mulf %{{.*}}, %[[D]] : f32
// CHECK:         %[[C:.*]] = arith.constant 0.00999999977 : f32
// CHECK:         %[[LOSS:.*]] = arith.mulf %[[C]], %[[LB]] : f32
// CHECK:         %[[R:.*]] = tensor.from_elements %[[LOSS]] : tensor<f32>
// CHECK:         return %[[R]]
func.func @aux_load_balance(%logits: tensor<?x8xf32>, %ids: tensor<?x2xi32>)
    -> tensor<f32> {
  %loss = moe.aux_loss load_balance %logits ids(%ids : tensor<?x2xi32>)
      {coefficient = 1.000000e-02 : f64} : tensor<?x8xf32> -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// Sigmoid load balance: the sigmoid scores divided by their per-token sum.
// CHECK-LABEL: func.func @aux_load_balance_sigmoid
// CHECK:         %[[SIG:.*]] = linalg.generic
// CHECK:           arith.negf
// CHECK:           math.exp
// CHECK:         %[[ROWSUM:.*]] = linalg.generic {{.*}} ins(%[[SIG]] : tensor<?x8xf32>)
// CHECK:         linalg.generic {{.*}} ins(%[[SIG]], %[[ROWSUM]] : tensor<?x8xf32>, tensor<?xf32>)
// CHECK:           arith.divf
// CHECK-NOT:     arith.maximumf
// CHECK:         tensor.from_elements
func.func @aux_load_balance_sigmoid(%logits: tensor<?x8xf32>,
                                    %ids: tensor<?x2xi32>) -> tensor<f32> {
  %loss = moe.aux_loss load_balance %logits ids(%ids : tensor<?x2xi32>)
      {score = #moe<score sigmoid>} : tensor<?x8xf32> -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// Importance: a weight histogram, its mean, the population variance, then
// var / (mean² + 1e-10).
// CHECK-LABEL: func.func @aux_importance
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<?x8xf32>, %[[IDS:[a-zA-Z0-9_]+]]: tensor<?x2xi32>, %[[W:[a-zA-Z0-9_]+]]: tensor<?x2xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[IMP:.*]] = scf.for {{.*}} -> (tensor<8xf32>)
// CHECK:             tensor.extract %[[IDS]]
// CHECK:             tensor.extract %[[W]]
// CHECK:         %[[SUM:.*]] = linalg.generic {{.*}} ins(%[[IMP]] : tensor<8xf32>) outs(%{{.*}} : tensor<f32>)
// CHECK:         %[[S:.*]] = tensor.extract %[[SUM]][]
// CHECK:         %[[MEAN:.*]] = arith.divf %[[S]], %{{.*}} : f32
// CHECK:         %[[SQ:.*]] = linalg.generic {{.*}} ins(%[[IMP]] : tensor<8xf32>) outs(%{{.*}} : tensor<f32>)
// CHECK:           %[[DEV:.*]] = arith.subf %{{.*}}, %[[MEAN]] : f32
// CHECK:           arith.mulf %[[DEV]], %[[DEV]] : f32
// CHECK:         %[[Q:.*]] = tensor.extract %[[SQ]][]
// CHECK:         %[[VAR:.*]] = arith.divf %[[Q]], %{{.*}} : f32
// CHECK:         %[[MEAN2:.*]] = arith.mulf %[[MEAN]], %[[MEAN]] : f32
// CHECK:         %[[DEN:.*]] = arith.addf %[[MEAN2]], %{{.*}} : f32
// CHECK:         %[[LOSS:.*]] = arith.divf %[[VAR]], %[[DEN]] : f32
// CHECK:         tensor.from_elements %[[LOSS]] : tensor<f32>
func.func @aux_importance(%logits: tensor<?x8xf32>, %ids: tensor<?x2xi32>,
                          %w: tensor<?x2xf32>) -> tensor<f32> {
  %loss = moe.aux_loss importance %logits ids(%ids : tensor<?x2xi32>)
      weights(%w : tensor<?x2xf32>) : tensor<?x8xf32> -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// z-loss: row max, Σ exp(l - max), then the mean of (max + log Σ)².
// CHECK-LABEL: func.func @aux_z_loss
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<?x8xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[MAX:.*]] = linalg.generic {{.*}} ins(%[[L]] : tensor<?x8xf32>)
// CHECK:           arith.maximumf
// CHECK:         %[[EXP:.*]] = linalg.generic {{.*}} ins(%[[L]], %[[MAX]] :
// CHECK:         %[[SUM:.*]] = linalg.generic {{.*}} ins(%[[EXP]] :
// CHECK:         %[[SQ:.*]] = linalg.generic {{.*}} ins(%[[MAX]], %[[SUM]] : tensor<?xf32>, tensor<?xf32>) outs(%{{.*}} : tensor<f32>)
// CHECK:           %[[LOG:.*]] = math.log
// CHECK:           %[[LSE:.*]] = arith.addf %{{.*}}, %[[LOG]] : f32
// CHECK:           arith.mulf %[[LSE]], %[[LSE]] : f32
// CHECK:         %[[TOTAL:.*]] = tensor.extract %[[SQ]][]
// CHECK:         %[[MEAN:.*]] = arith.divf %[[TOTAL]], %{{.*}} : f32
// CHECK:         tensor.from_elements %[[MEAN]] : tensor<f32>
func.func @aux_z_loss(%logits: tensor<?x8xf32>) -> tensor<f32> {
  %loss = moe.aux_loss z_loss %logits : tensor<?x8xf32> -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// cap · tanh(l / cap), elementwise in f32.
// CHECK-LABEL: func.func @softcap
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<?x8xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[CAP:.*]] = arith.constant 2.500000e+00 : f32
// CHECK:         linalg.generic {{.*}} ins(%[[L]] : tensor<?x8xf32>)
// CHECK:           %[[D:.*]] = arith.divf %{{.*}}, %[[CAP]] : f32
// CHECK:           %[[T:.*]] = math.tanh %[[D]] : f32
// CHECK:           %[[M:.*]] = arith.mulf %[[CAP]], %[[T]] : f32
// CHECK:           linalg.yield %[[M]] : f32
func.func @softcap(%logits: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %c = moe.softcap %logits cap(2.5) : tensor<?x8xf32>
  return %c : tensor<?x8xf32>
}

// -----

// Sum of squares per row in j order, then x · w / sqrt(ss / D + eps).
// CHECK-LABEL: func.func @rms_norm
// CHECK-SAME:    %[[X:[a-zA-Z0-9_]+]]: tensor<?x64xf32>, %[[W:[a-zA-Z0-9_]+]]: tensor<64xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[SS:.*]] = linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]{{.*}} ins(%[[X]] : tensor<?x64xf32>)
// CHECK:           arith.mulf
// CHECK:           arith.addf
// CHECK:         linalg.generic {{.*}} ins(%[[X]], %[[SS]], %[[W]] : tensor<?x64xf32>, tensor<?xf32>, tensor<64xf32>)
// CHECK:           arith.divf
// CHECK:           arith.addf
// CHECK:           math.sqrt
// CHECK:           arith.divf
// CHECK:           arith.mulf
// CHECK:           arith.mulf
func.func @rms_norm(%x: tensor<?x64xf32>, %w: tensor<64xf32>) -> tensor<?x64xf32> {
  %xr = moe.rms_norm %x, %w : tensor<?x64xf32>, tensor<64xf32>
  return %xr : tensor<?x64xf32>
}
