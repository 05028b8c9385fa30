// moe.product_key_topk (PEER/PKM retrieval) lowered to the CPU and run.
// Expected values: NumPy (float64) from the semantics, printed to 6 digits.
// RUN: moe-opt %s --moe-lower-to-cpu \
// RUN: | mlir-runner -e main -entry-point-result=void \
// RUN:     -shared-libs=%mlir_runner_utils,%mlir_c_runner_utils,%moe_runtime \
// RUN: | FileCheck %s

func.func private @printMemrefF32(tensor<*xf32>)
func.func private @printMemrefI32(tensor<*xi32>)

// Two heads of d_k = 4 over 3x3 product keys, top-2, softmax over each
// head's two scores. Candidate sums tie (e.g. 1 + 0 = 0 + 1): the lower
// expert id i*n + j wins. Dynamic token count.
// CHECK: rank = 3 offset = 0 sizes = [2, 2, 2]
// CHECK-NEXT: {{\[\[\[}}0.5, 0.5],
// CHECK-NEXT: [0.6224{{[0-9]*}}, 0.377541]],
// CHECK-NEXT: {{\[\[}}0.5, 0.5],
// CHECK-NEXT: [0.5, 0.5]]]
// CHECK: rank = 3 offset = 0 sizes = [2, 2, 2]
// CHECK-NEXT: {{\[\[\[}}0, 6],
// CHECK-NEXT: [7, 1]],
// CHECK-NEXT: {{\[\[}}3, 4],
// CHECK-NEXT: [6, 7]]]
func.func @softmax_two_heads(%q: tensor<?x8xf32>, %k1: tensor<3x2xf32>, %k2: tensor<3x2xf32>) {
  %c0 = arith.constant 0 : index
  %t = tensor.dim %q, %c0 : tensor<?x8xf32>
  %w0 = tensor.empty(%t) : tensor<?x2x2xf32>
  %i0 = tensor.empty(%t) : tensor<?x2x2xi32>
  %w, %ids = moe.product_key_topk heads(2) top_k(2) score(softmax)
      ins(%q, %k1, %k2 : tensor<?x8xf32>, tensor<3x2xf32>, tensor<3x2xf32>)
      outs(%w0, %i0 : tensor<?x2x2xf32>, tensor<?x2x2xi32>) -> tensor<?x2x2xf32>, tensor<?x2x2xi32>
  %w_u = tensor.cast %w : tensor<?x2x2xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<?x2x2xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

// bf16 sub-keys (widened exactly), sigmoid scores, n = 4, top-3.
// CHECK: rank = 3 offset = 0 sizes = [1, 1, 3]
// CHECK-NEXT: {{\[\[\[}}0.952574, 0.8933{{[0-9]*}}, 0.880797]]]
// CHECK: rank = 3 offset = 0 sizes = [1, 1, 3]
// CHECK-NEXT: {{\[\[\[}}9, 8, 1]]]
func.func @sigmoid_bf16(%q: tensor<1x4xf32>, %k1: tensor<4x2xbf16>, %k2: tensor<4x2xbf16>) {
  %w0 = tensor.empty() : tensor<1x1x3xf32>
  %i0 = tensor.empty() : tensor<1x1x3xi32>
  %w, %ids = moe.product_key_topk heads(1) top_k(3) score(sigmoid)
      ins(%q, %k1, %k2 : tensor<1x4xf32>, tensor<4x2xbf16>, tensor<4x2xbf16>)
      outs(%w0, %i0 : tensor<1x1x3xf32>, tensor<1x1x3xi32>) -> tensor<1x1x3xf32>, tensor<1x1x3xi32>
  %w_u = tensor.cast %w : tensor<1x1x3xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<1x1x3xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

// top_k = 3 > n = 2: each stage keeps min(k, n) = 2 sub-keys, the 2x2 candidate
// sums rank by score then id.
// CHECK: rank = 3 offset = 0 sizes = [1, 1, 3]
// CHECK-NEXT: {{\[\[\[}}0.46831{{[0-9]*}}, 0.46831{{[0-9]*}}, 0.06337{{[0-9]*}}]]]
// CHECK: rank = 3 offset = 0 sizes = [1, 1, 3]
// CHECK-NEXT: {{\[\[\[}}0, 1, 2]]]
func.func @top_k_above_n(%q: tensor<1x4xf32>, %k1: tensor<2x2xf32>, %k2: tensor<2x2xf32>) {
  %w0 = tensor.empty() : tensor<1x1x3xf32>
  %i0 = tensor.empty() : tensor<1x1x3xi32>
  %w, %ids = moe.product_key_topk heads(1) top_k(3) score(softmax)
      ins(%q, %k1, %k2 : tensor<1x4xf32>, tensor<2x2xf32>, tensor<2x2xf32>)
      outs(%w0, %i0 : tensor<1x1x3xf32>, tensor<1x1x3xi32>) -> tensor<1x1x3xf32>, tensor<1x1x3xi32>
  %w_u = tensor.cast %w : tensor<1x1x3xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<1x1x3xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

// Every sub-key score equal: the top-3 are ids 0, 1, 2 (i = 0, j = 0..2).
// CHECK: rank = 3 offset = 0 sizes = [2, 1, 3]
// CHECK-NEXT: {{\[\[\[}}0.333333, 0.333333, 0.333333]],
// CHECK-NEXT: {{\[\[}}0.333333, 0.333333, 0.333333]]]
// CHECK: rank = 3 offset = 0 sizes = [2, 1, 3]
// CHECK-NEXT: {{\[\[\[}}0, 1, 2]],
// CHECK-NEXT: {{\[\[}}0, 1, 2]]]
func.func @all_ties(%q: tensor<2x2xf32>, %k1: tensor<3x1xf32>, %k2: tensor<3x1xf32>) {
  %w0 = tensor.empty() : tensor<2x1x3xf32>
  %i0 = tensor.empty() : tensor<2x1x3xi32>
  %w, %ids = moe.product_key_topk heads(1) top_k(3) score(softmax)
      ins(%q, %k1, %k2 : tensor<2x2xf32>, tensor<3x1xf32>, tensor<3x1xf32>)
      outs(%w0, %i0 : tensor<2x1x3xf32>, tensor<2x1x3xi32>) -> tensor<2x1x3xf32>, tensor<2x1x3xi32>
  %w_u = tensor.cast %w : tensor<2x1x3xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<2x1x3xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

func.func @main() {
  %softmax_two_heads_0 = arith.constant dense<[[1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]> : tensor<2x8xf32>
  %softmax_two_heads_0d = tensor.cast %softmax_two_heads_0 : tensor<2x8xf32> to tensor<?x8xf32>
  %softmax_two_heads_1 = arith.constant dense<[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]> : tensor<3x2xf32>
  %softmax_two_heads_2 = arith.constant dense<[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]> : tensor<3x2xf32>
  call @softmax_two_heads(%softmax_two_heads_0d, %softmax_two_heads_1, %softmax_two_heads_2) : (tensor<?x8xf32>, tensor<3x2xf32>, tensor<3x2xf32>) -> ()
  %sigmoid_bf16_0 = arith.constant dense<[[0.5, -1.0, 2.0, 0.25]]> : tensor<1x4xf32>
  %sigmoid_bf16_1 = arith.constant dense<[[1.0, 0.5], [-0.5, 0.25], [0.0, -1.0], [0.75, 0.75]]> : tensor<4x2xbf16>
  %sigmoid_bf16_2 = arith.constant dense<[[0.5, 0.5], [1.0, 0.0], [-1.0, 2.0], [0.25, -0.25]]> : tensor<4x2xbf16>
  call @sigmoid_bf16(%sigmoid_bf16_0, %sigmoid_bf16_1, %sigmoid_bf16_2) : (tensor<1x4xf32>, tensor<4x2xbf16>, tensor<4x2xbf16>) -> ()
  %top_k_above_n_0 = arith.constant dense<[[1.0, -1.0, 0.5, 0.5]]> : tensor<1x4xf32>
  %top_k_above_n_1 = arith.constant dense<[[1.0, 0.0], [0.0, 1.0]]> : tensor<2x2xf32>
  %top_k_above_n_2 = arith.constant dense<[[1.0, 1.0], [0.0, 2.0]]> : tensor<2x2xf32>
  call @top_k_above_n(%top_k_above_n_0, %top_k_above_n_1, %top_k_above_n_2) : (tensor<1x4xf32>, tensor<2x2xf32>, tensor<2x2xf32>) -> ()
  %all_ties_0 = arith.constant dense<[[1.0, 1.0], [0.0, 0.0]]> : tensor<2x2xf32>
  %all_ties_1 = arith.constant dense<[[1.0], [1.0], [1.0]]> : tensor<3x1xf32>
  %all_ties_2 = arith.constant dense<[[2.0], [2.0], [2.0]]> : tensor<3x1xf32>
  call @all_ties(%all_ties_0, %all_ties_1, %all_ties_2) : (tensor<2x2xf32>, tensor<3x1xf32>, tensor<3x1xf32>) -> ()
  return
}
