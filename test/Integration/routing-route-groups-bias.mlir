// moe.route with group-limited routing and selection bias, run on the CPU.
// Expected values: NumPy (float64) from the semantics, printed to 6 digits.
// RUN: moe-opt %s --moe-lower-to-cpu \
// RUN: | mlir-runner -e main -entry-point-result=void \
// RUN:     -shared-libs=%mlir_runner_utils,%mlir_c_runner_utils,%moe_runtime \
// RUN: | FileCheck %s

func.func private @printMemrefF32(tensor<*xf32>)
func.func private @printMemrefI32(tensor<*xi32>)

// Group-limited routing, 4 groups of 2, keep 2, group score = max: groups
// {0,1} (0.95) and {6,7} (0.88) are kept; expert 2 (0.73) is outside them.
// The fallback column stays inside the kept groups.
// CHECK: rank = 2 offset = 0 sizes = [2, 3]
// CHECK-NEXT: {{\[\[}}0.952574, 0.880797, 0.0474259],
// CHECK-NEXT: [0.880797, 0.81757{{[0-9]*}}, 0.73105{{[0-9]*}}]]
// CHECK: rank = 2 offset = 0 sizes = [2, 3]
// CHECK-NEXT: {{\[\[}}0, 6, 1],
// CHECK-NEXT: [5, 3, 2]]
func.func @groups_max(%logits: tensor<2x8xf32>) {
  %w, %ids = moe.route %logits top_k(2) score(sigmoid) order(score_then_topk) groups(4, keep 2, max)
      : tensor<2x8xf32> -> tensor<2x3xf32>, tensor<2x3xi32>
  %w_u = tensor.cast %w : tensor<2x3xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<2x3xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

// Same logits, group score = sum of the top 2: groups {2,3} (1.46) and {0,1}
// (1.0) are kept; experts 2 and 3 tie and the lower index ranks first.
// CHECK: rank = 2 offset = 0 sizes = [2, 3]
// CHECK-NEXT: {{\[\[}}0.952574, 0.73105{{[0-9]*}}, 0.73105{{[0-9]*}}],
// CHECK-NEXT: [0.880797, 0.81757{{[0-9]*}}, 0.73105{{[0-9]*}}]]
// CHECK: rank = 2 offset = 0 sizes = [2, 3]
// CHECK-NEXT: {{\[\[}}0, 2, 3],
// CHECK-NEXT: [5, 3, 2]]
func.func @groups_top2_sum(%logits: tensor<2x8xf32>) {
  %w, %ids = moe.route %logits top_k(2) score(sigmoid) order(score_then_topk) groups(4, keep 2, top2_sum)
      : tensor<2x8xf32> -> tensor<2x3xf32>, tensor<2x3xi32>
  %w_u = tensor.cast %w : tensor<2x3xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<2x3xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

// Selection bias: experts chosen by softmax + bias, weighted by the softmax.
// CHECK: rank = 2 offset = 0 sizes = [2, 2]
// CHECK-NEXT: {{\[\[}}0.12925, 0.213097],
// CHECK-NEXT: [0.25, 0.25]]
// CHECK: rank = 2 offset = 0 sizes = [2, 2]
// CHECK-NEXT: {{\[\[}}2, 0],
// CHECK-NEXT: [2, 3]]
func.func @softmax_bias(%logits: tensor<2x4xf32>, %bias: tensor<4xf32>) {
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(score_then_topk) bias(%bias : tensor<4xf32>)
      : tensor<2x4xf32> -> tensor<2x2xf32>, tensor<2x2xi32>
  %w_u = tensor.cast %w : tensor<2x2xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<2x2xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

// DeepSeek-V3: sigmoid, selection bias, 4 groups keep 2 by top-2 sum,
// normalised and scaled by 2.5, with fallback columns. Dynamic token count.
// CHECK: rank = 2 offset = 0 sizes = [2, 4]
// CHECK-NEXT: {{\[\[}}0.86263{{[0-9]*}}, 0.8888{{[0-9]*}}, 0.748505, 0.53205],
// CHECK-NEXT: [0.83333{{[0-9]*}}, 0.83333{{[0-9]*}}, 0.83333{{[0-9]*}}, 0.83333{{[0-9]*}}]]
// CHECK: rank = 2 offset = 0 sizes = [2, 4]
// CHECK-NEXT: {{\[\[}}3, 7, 6, 2],
// CHECK-NEXT: [3, 5, 2, 4]]
func.func @deepseek_v3(%logits: tensor<?x8xf32>, %bias: tensor<8xf32>) {
  %w, %ids = moe.route %logits top_k(3) score(sigmoid) order(score_then_topk) groups(4, keep 2, top2_sum) bias(%bias : tensor<8xf32>) {normalize = true, scaling = 2.500000e+00 : f64}
      : tensor<?x8xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
  %w_u = tensor.cast %w : tensor<?x4xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<?x4xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

// Groups on the logits (topk_then_score): 2 groups of 3, keep 1.
// CHECK: rank = 2 offset = 0 sizes = [2, 3]
// CHECK-NEXT: {{\[\[}}0.952574, 0.0474259, 0.017447],
// CHECK-NEXT: [{{-?}}nan, {{-?}}nan, {{-?}}nan]]
// CHECK: rank = 2 offset = 0 sizes = [2, 3]
// CHECK-NEXT: {{\[\[}}3, 4, 5],
// CHECK-NEXT: [3, 4, 5]]
func.func @topk_then_score_groups(%logits: tensor<2x6xf32>) {
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(topk_then_score) groups(2, keep 1, max)
      : tensor<2x6xf32> -> tensor<2x3xf32>, tensor<2x3xi32>
  %w_u = tensor.cast %w : tensor<2x3xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<2x3xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

func.func @main() {
  %groups_max_l = arith.constant dense<[[3.0, -3.0, 1.0, 1.0, -1.0, -2.0, 2.0, -4.0], [0.0, 0.5, 1.0, 1.5, -0.5, 2.0, 0x7FC00000, 0.25]]> : tensor<2x8xf32>
  call @groups_max(%groups_max_l) : (tensor<2x8xf32>) -> ()
  %groups_top2_sum_l = arith.constant dense<[[3.0, -3.0, 1.0, 1.0, -1.0, -2.0, 2.0, -4.0], [0.0, 0.5, 1.0, 1.5, -0.5, 2.0, 0x7FC00000, 0.25]]> : tensor<2x8xf32>
  call @groups_top2_sum(%groups_top2_sum_l) : (tensor<2x8xf32>) -> ()
  %softmax_bias_l = arith.constant dense<[[1.0, 2.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]]> : tensor<2x4xf32>
  %softmax_bias_b = arith.constant dense<[0.0, -0.5, 0.3, 0.1]> : tensor<4xf32>
  call @softmax_bias(%softmax_bias_l, %softmax_bias_b) : (tensor<2x4xf32>, tensor<4xf32>) -> ()
  %deepseek_v3_l = arith.constant dense<[[0.2, 1.5, -0.3, 0.8, 1.1, -1.0, 0.4, 0.9], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]> : tensor<2x8xf32>
  %deepseek_v3_d = tensor.cast %deepseek_v3_l : tensor<2x8xf32> to tensor<?x8xf32>
  %deepseek_v3_b = arith.constant dense<[0.1, -0.2, 0.0, 0.3, -0.1, 0.2, 0.0, 0.05]> : tensor<8xf32>
  call @deepseek_v3(%deepseek_v3_d, %deepseek_v3_b) : (tensor<?x8xf32>, tensor<8xf32>) -> ()
  %topk_then_score_groups_l = arith.constant dense<[[0.1, 0.9, 0.2, 1.0, -2.0, -3.0], [0x7FC00000, 0x7FC00000, 0x7FC00000, -1.0, 0x7FC00000, 0x7FC00000]]> : tensor<2x6xf32>
  call @topk_then_score_groups(%topk_then_score_groups_l) : (tensor<2x6xf32>) -> ()
  return
}
