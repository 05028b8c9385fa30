// moe.route with order(topk_then_score), lowered to the CPU and run.
// Expected values: NumPy (float64) from the semantics, printed to 6 digits.
// RUN: moe-opt %s --moe-lower-to-cpu \
// RUN: | mlir-runner -e main -entry-point-result=void \
// RUN:     -shared-libs=%mlir_runner_utils,%mlir_c_runner_utils,%moe_runtime \
// RUN: | FileCheck %s

func.func private @printMemrefF32(tensor<*xf32>)
func.func private @printMemrefI32(tensor<*xi32>)

// Mixtral: the top-2 logits, softmax over those two. Row 1: NaN logits never
// rank ahead of a finite one. Dynamic token count.
// CHECK: rank = 2 offset = 0 sizes = [3, 2]
// CHECK-NEXT: {{\[\[}}0.5, 0.5],
// CHECK-NEXT: [0.6224{{[0-9]*}}, 0.377541],
// CHECK-NEXT: [0.73105{{[0-9]*}}, 0.26894{{[0-9]*}}]]
// CHECK: rank = 2 offset = 0 sizes = [3, 2]
// CHECK-NEXT: {{\[\[}}1, 3],
// CHECK-NEXT: [3, 1],
// CHECK-NEXT: [0, 3]]
func.func @mixtral(%logits: tensor<?x4xf32>) {
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(topk_then_score)
      : tensor<?x4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  %w_u = tensor.cast %w : tensor<?x2xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<?x2xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

// Fallback columns share the top-k softmax max and denominator; -inf weighs 0
// and ranks ahead of NaN.
// CHECK: rank = 2 offset = 0 sizes = [2, 4]
// CHECK-NEXT: {{\[\[}}0.6224{{[0-9]*}}, 0.377541, 0.279689, {{-?}}0],
// CHECK-NEXT: [0.56217{{[0-9]*}}, 0.43782{{[0-9]*}}, 0.340977, 0.26555{{[0-9]*}}]]
// CHECK: rank = 2 offset = 0 sizes = [2, 4]
// CHECK-NEXT: {{\[\[}}4, 1, 5, 3],
// CHECK-NEXT: [5, 4, 3, 2]]
func.func @softmax_fallbacks(%logits: tensor<2x6xf32>) {
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(topk_then_score)
      : tensor<2x6xf32> -> tensor<2x4xf32>, tensor<2x4xi32>
  %w_u = tensor.cast %w : tensor<2x4xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<2x4xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

// Fewer finite logits than k: a NaN is chosen last and poisons the softmax.
// CHECK: rank = 2 offset = 0 sizes = [1, 2]
// CHECK-NEXT: {{\[\[}}{{-?}}nan, {{-?}}nan]]
// CHECK: rank = 2 offset = 0 sizes = [1, 2]
// CHECK-NEXT: {{\[\[}}1, 0]]
func.func @softmax_nan_in_topk(%logits: tensor<1x4xf32>) {
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(topk_then_score)
      : tensor<1x4xf32> -> tensor<1x2xf32>, tensor<1x2xi32>
  %w_u = tensor.cast %w : tensor<1x2xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<1x2xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

// Top-1: the softmax of one logit is 1.
// CHECK: rank = 2 offset = 0 sizes = [2, 1]
// CHECK-NEXT: {{\[\[}}1],
// CHECK-NEXT: [1]]
// CHECK: rank = 2 offset = 0 sizes = [2, 1]
// CHECK-NEXT: {{\[\[}}1],
// CHECK-NEXT: [2]]
func.func @softmax_top1(%logits: tensor<2x4xf32>) {
  %w, %ids = moe.route %logits top_k(1) score(softmax) order(topk_then_score)
      : tensor<2x4xf32> -> tensor<2x1xf32>, tensor<2x1xi32>
  %w_u = tensor.cast %w : tensor<2x1xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<2x1xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

// k = E: a full softmax in rank order.
// CHECK: rank = 2 offset = 0 sizes = [1, 4]
// CHECK-NEXT: {{\[\[}}0.397883, 0.360019, 0.161767, 0.080331{{[0-9]*}}]]
// CHECK: rank = 2 offset = 0 sizes = [1, 4]
// CHECK-NEXT: {{\[\[}}1, 3, 0, 2]]
func.func @softmax_dense(%logits: tensor<1x4xf32>) {
  %w, %ids = moe.route %logits top_k(4) score(softmax) order(topk_then_score)
      : tensor<1x4xf32> -> tensor<1x4xf32>, tensor<1x4xi32>
  %w_u = tensor.cast %w : tensor<1x4xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<1x4xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

// Sigmoid after the top-k, chosen by logit + bias, weighted by sigmoid(logit);
// normalised over the top-2 and scaled, fallback columns alike.
// CHECK: rank = 2 offset = 0 sizes = [2, 3]
// CHECK-NEXT: {{\[\[}}0.933689, 0.566311, 1.3212],
// CHECK-NEXT: [0.75, 0.75, 0.75]]
// CHECK: rank = 2 offset = 0 sizes = [2, 3]
// CHECK-NEXT: {{\[\[}}1, 2, 4],
// CHECK-NEXT: [2, 1, 0]]
func.func @sigmoid_bias(%logits: tensor<2x5xf32>, %bias: tensor<5xf32>) {
  %w, %ids = moe.route %logits top_k(2) score(sigmoid) order(topk_then_score) bias(%bias : tensor<5xf32>) {normalize = true, scaling = 1.500000e+00 : f64}
      : tensor<2x5xf32> -> tensor<2x3xf32>, tensor<2x3xi32>
  %w_u = tensor.cast %w : tensor<2x3xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<2x3xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

func.func @main() {
  %mixtral_l = arith.constant dense<[[0.3, 1.2, -0.4, 1.2], [0x7FC00000, 0.5, 0x7FC00000, 1.0], [2.0, -1.0, 0.0, 1.0]]> : tensor<3x4xf32>
  %mixtral_d = tensor.cast %mixtral_l : tensor<3x4xf32> to tensor<?x4xf32>
  call @mixtral(%mixtral_d) : (tensor<?x4xf32>) -> ()
  %softmax_fallbacks_l = arith.constant dense<[[0x7FC00000, 0.5, 0x7FC00000, 0xFF800000, 1.0, 0.2], [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]]> : tensor<2x6xf32>
  call @softmax_fallbacks(%softmax_fallbacks_l) : (tensor<2x6xf32>) -> ()
  %softmax_nan_in_topk_l = arith.constant dense<[[0x7FC00000, 1.0, 0x7FC00000, 0x7FC00000]]> : tensor<1x4xf32>
  call @softmax_nan_in_topk(%softmax_nan_in_topk_l) : (tensor<1x4xf32>) -> ()
  %softmax_top1_l = arith.constant dense<[[0.3, 1.2, -0.4, 1.1], [-2.0, -3.0, -1.0, -1.5]]> : tensor<2x4xf32>
  call @softmax_top1(%softmax_top1_l) : (tensor<2x4xf32>) -> ()
  %softmax_dense_l = arith.constant dense<[[0.3, 1.2, -0.4, 1.1]]> : tensor<1x4xf32>
  call @softmax_dense(%softmax_dense_l) : (tensor<1x4xf32>) -> ()
  %sigmoid_bias_l = arith.constant dense<[[1.0, 0.5, -0.5, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0, 0.0]]> : tensor<2x5xf32>
  %sigmoid_bias_b = arith.constant dense<[0.0, 1.0, 2.0, -1.0, -0.5]> : tensor<5xf32>
  call @sigmoid_bias(%sigmoid_bias_l, %sigmoid_bias_b) : (tensor<2x5xf32>, tensor<5xf32>) -> ()
  return
}
