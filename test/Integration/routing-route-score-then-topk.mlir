// moe.route with order(score_then_topk), lowered to the CPU and run.
// Expected values: NumPy (float64) from the semantics, printed to 6 digits.
// RUN: moe-opt %s --moe-lower-to-cpu \
// RUN: | mlir-runner -e main -entry-point-result=void \
// RUN:     -shared-libs=%mlir_runner_utils,%mlir_c_runner_utils,%moe_runtime \
// RUN: | FileCheck %s

func.func private @printMemrefF32(tensor<*xf32>)
func.func private @printMemrefI32(tensor<*xi32>)

// Softmax over all experts, then the top-2. Row 0: a tie between experts 1
// and 2 at the top (the lower index ranks first). Row 1: a NaN logit makes
// the whole softmax row NaN, so all keys tie as NaN and rank by index.
// Row 2: -inf scores 0. Dynamic token count.
// CHECK: rank = 2 offset = 0 sizes = [4, 2]
// CHECK-NEXT: {{\[\[}}0.45097{{[0-9]*}}, 0.45097{{[0-9]*}}],
// CHECK-NEXT: [{{-?}}nan, {{-?}}nan],
// CHECK-NEXT: [0.333333, 0.333333],
// CHECK-NEXT: [0.532071, 0.32271{{[0-9]*}}]]
// CHECK: rank = 2 offset = 0 sizes = [4, 2]
// CHECK-NEXT: {{\[\[}}1, 2],
// CHECK-NEXT: [0, 1],
// CHECK-NEXT: [1, 2],
// CHECK-NEXT: [2, 3]]
func.func @softmax_top2(%logits: tensor<?x4xf32>) {
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(score_then_topk)
      : tensor<?x4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  %w_u = tensor.cast %w : tensor<?x2xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<?x2xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

// Top-1 (Switch): the single best expert and its softmax probability.
// CHECK: rank = 2 offset = 0 sizes = [4, 1]
// CHECK-NEXT: {{\[\[}}0.45097{{[0-9]*}}],
// CHECK-NEXT: [{{-?}}nan],
// CHECK-NEXT: [0.333333],
// CHECK-NEXT: [0.532071]]
// CHECK: rank = 2 offset = 0 sizes = [4, 1]
// CHECK-NEXT: {{\[\[}}1],
// CHECK-NEXT: [0],
// CHECK-NEXT: [1],
// CHECK-NEXT: [2]]
func.func @softmax_top1(%logits: tensor<4x4xf32>) {
  %w, %ids = moe.route %logits top_k(1) score(softmax) order(score_then_topk)
      : tensor<4x4xf32> -> tensor<4x1xf32>, tensor<4x1xi32>
  %w_u = tensor.cast %w : tensor<4x1xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<4x1xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

// k = E: every expert, in rank order.
// CHECK: rank = 2 offset = 0 sizes = [2, 4]
// CHECK-NEXT: {{\[\[}}0.45097{{[0-9]*}}, 0.45097{{[0-9]*}}, 0.061032{{[0-9]*}}, 0.037018{{[0-9]*}}],
// CHECK-NEXT: [0.532071, 0.32271{{[0-9]*}}, 0.118721, 0.0264903]]
// CHECK: rank = 2 offset = 0 sizes = [2, 4]
// CHECK-NEXT: {{\[\[}}1, 2, 0, 3],
// CHECK-NEXT: [2, 3, 0, 1]]
func.func @softmax_dense(%logits: tensor<2x4xf32>) {
  %w, %ids = moe.route %logits top_k(4) score(softmax) order(score_then_topk)
      : tensor<2x4xf32> -> tensor<2x4xf32>, tensor<2x4xi32>
  %w_u = tensor.cast %w : tensor<2x4xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<2x4xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

// Top-2 renormalised to sum 1, then scaled by 2.5.
// CHECK: rank = 2 offset = 0 sizes = [4, 2]
// CHECK-NEXT: {{\[\[}}1.25, 1.25],
// CHECK-NEXT: [{{-?}}nan, {{-?}}nan],
// CHECK-NEXT: [1.25, 1.25],
// CHECK-NEXT: [1.55615, 0.94385{{[0-9]*}}]]
// CHECK: rank = 2 offset = 0 sizes = [4, 2]
// CHECK-NEXT: {{\[\[}}1, 2],
// CHECK-NEXT: [0, 1],
// CHECK-NEXT: [1, 2],
// CHECK-NEXT: [2, 3]]
func.func @softmax_normalize_scaling(%logits: tensor<4x4xf32>) {
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(score_then_topk) {normalize = true, scaling = 2.500000e+00 : f64}
      : tensor<4x4xf32> -> tensor<4x2xf32>, tensor<4x2xi32>
  %w_u = tensor.cast %w : tensor<4x2xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<4x2xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

// Fallback columns (C = 4 > k = 2): the next-ranked experts, weighted with
// the top-2 normaliser and the scaling like a selected slot.
// CHECK: rank = 2 offset = 0 sizes = [2, 4]
// CHECK-NEXT: {{\[\[}}1.04996, 0.95004{{[0-9]*}}, 0.859633, 0.77782{{[0-9]*}}],
// CHECK-NEXT: [1, 1, 1, 0.3678{{[0-9]*}}]]
// CHECK: rank = 2 offset = 0 sizes = [2, 4]
// CHECK-NEXT: {{\[\[}}1, 5, 3, 0],
// CHECK-NEXT: [0, 1, 2, 3]]
func.func @softmax_fallbacks(%logits: tensor<2x6xf32>) {
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(score_then_topk) {normalize = true, scaling = 2.000000e+00 : f64}
      : tensor<2x6xf32> -> tensor<2x4xf32>, tensor<2x4xi32>
  %w_u = tensor.cast %w : tensor<2x4xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<2x4xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

// Sigmoid scores: a NaN logit scores NaN and ranks below every number, -inf
// (score 0) included; the fallback column reaches it only after -inf.
// CHECK: rank = 2 offset = 0 sizes = [2, 4]
// CHECK-NEXT: {{\[\[}}0.880797, 0.6224{{[0-9]*}}, {{-?}}0, {{-?}}nan],
// CHECK-NEXT: [0.5, 0.5, {{-?}}nan, {{-?}}nan]]
// CHECK: rank = 2 offset = 0 sizes = [2, 4]
// CHECK-NEXT: {{\[\[}}3, 1, 2, 0],
// CHECK-NEXT: [0, 3, 1, 2]]
func.func @sigmoid_nan(%logits: tensor<?x4xf32>) {
  %w, %ids = moe.route %logits top_k(2) score(sigmoid) order(score_then_topk)
      : tensor<?x4xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
  %w_u = tensor.cast %w : tensor<?x4xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<?x4xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

func.func @main() {
  %softmax_top2_l = arith.constant dense<[[1.0, 3.0, 3.0, 0.5], [0x7FC00000, 1.0, 2.0, 3.0], [0xFF800000, 0.0, 0.0, 0.0], [0.5, -1.0, 2.0, 1.5]]> : tensor<4x4xf32>
  %softmax_top2_d = tensor.cast %softmax_top2_l : tensor<4x4xf32> to tensor<?x4xf32>
  call @softmax_top2(%softmax_top2_d) : (tensor<?x4xf32>) -> ()
  %softmax_top1_l = arith.constant dense<[[1.0, 3.0, 3.0, 0.5], [0x7FC00000, 1.0, 2.0, 3.0], [0xFF800000, 0.0, 0.0, 0.0], [0.5, -1.0, 2.0, 1.5]]> : tensor<4x4xf32>
  call @softmax_top1(%softmax_top1_l) : (tensor<4x4xf32>) -> ()
  %softmax_dense_l = arith.constant dense<[[1.0, 3.0, 3.0, 0.5], [0.5, -1.0, 2.0, 1.5]]> : tensor<2x4xf32>
  call @softmax_dense(%softmax_dense_l) : (tensor<2x4xf32>) -> ()
  %softmax_normalize_scaling_l = arith.constant dense<[[1.0, 3.0, 3.0, 0.5], [0x7FC00000, 1.0, 2.0, 3.0], [0xFF800000, 0.0, 0.0, 0.0], [0.5, -1.0, 2.0, 1.5]]> : tensor<4x4xf32>
  call @softmax_normalize_scaling(%softmax_normalize_scaling_l) : (tensor<4x4xf32>) -> ()
  %softmax_fallbacks_l = arith.constant dense<[[0.1, 0.4, -0.3, 0.2, 0.0, 0.3], [1.0, 1.0, 1.0, 0.0, 0.0, -1.0]]> : tensor<2x6xf32>
  call @softmax_fallbacks(%softmax_fallbacks_l) : (tensor<2x6xf32>) -> ()
  %sigmoid_nan_l = arith.constant dense<[[0x7FC00000, 0.5, 0xFF800000, 2.0], [0.0, 0x7FC00000, 0x7FC00000, 0.0]]> : tensor<2x4xf32>
  %sigmoid_nan_d = tensor.cast %sigmoid_nan_l : tensor<2x4xf32> to tensor<?x4xf32>
  call @sigmoid_nan(%sigmoid_nan_d) : (tensor<?x4xf32>) -> ()
  return
}
