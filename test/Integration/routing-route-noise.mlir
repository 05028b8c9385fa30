// moe.route noisy top-k: Philox4x32-10 normals keyed by seed, token, expert.
// Expected values: NumPy (float64) from the semantics, printed to 6 digits.
// RUN: moe-opt %s --moe-lower-to-cpu \
// RUN: | mlir-runner -e main -entry-point-result=void \
// RUN:     -shared-libs=%mlir_runner_utils,%mlir_c_runner_utils,%moe_runtime \
// RUN: | FileCheck %s

func.func private @printMemrefF32(tensor<*xf32>)
func.func private @printMemrefI32(tensor<*xi32>)

// Noise only (zero logits, zero noise logits: softplus = ln 2), so the weights
// are sigmoid(ln2 · n) with n the Philox/Box-Muller normals, ranked. Seed 0,
// token 0, expert 0 is the Philox4x32-10 known answer for counter 0, key 0
// (0x6627e8d5, 0xe169c58d, ...): n = 0.99113774, weight sigmoid(ln2 · n) = 0.6653.
// CHECK: rank = 2 offset = 0 sizes = [2, 4]
// CHECK-NEXT: {{\[\[}}0.6653, 0.473402, 0.398264, 0.30527{{[0-9]*}}],
// CHECK-NEXT: [0.687331, 0.67004{{[0-9]*}}, 0.484113, 0.18482{{[0-9]*}}]]
// CHECK: rank = 2 offset = 0 sizes = [2, 4]
// CHECK-NEXT: {{\[\[}}0, 1, 3, 2],
// CHECK-NEXT: [0, 1, 3, 2]]
func.func @noise_seed0(%logits: tensor<2x4xf32>, %noise: tensor<2x4xf32>, %seed: i64) {
  %w, %ids = moe.route %logits top_k(4) score(sigmoid) order(topk_then_score) noise(%noise, %seed : tensor<2x4xf32>)
      : tensor<2x4xf32> -> tensor<2x4xf32>, tensor<2x4xi32>
  %w_u = tensor.cast %w : tensor<2x4xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<2x4xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

// A seed with both 32-bit halves set: key (0xa4093822, 0x299f31d0).
// CHECK: rank = 2 offset = 0 sizes = [2, 4]
// CHECK-NEXT: {{\[\[}}0.61592{{[0-9]*}}, 0.539223, 0.47914, 0.328426],
// CHECK-NEXT: [0.76846{{[0-9]*}}, 0.53345{{[0-9]*}}, 0.43581{{[0-9]*}}, 0.36338{{[0-9]*}}]]
// CHECK: rank = 2 offset = 0 sizes = [2, 4]
// CHECK-NEXT: {{\[\[}}2, 3, 1, 0],
// CHECK-NEXT: [2, 1, 3, 0]]
func.func @noise_seed_hi(%logits: tensor<2x4xf32>, %noise: tensor<2x4xf32>, %seed: i64) {
  %w, %ids = moe.route %logits top_k(4) score(sigmoid) order(topk_then_score) noise(%noise, %seed : tensor<2x4xf32>)
      : tensor<2x4xf32> -> tensor<2x4xf32>, tensor<2x4xi32>
  %w_u = tensor.cast %w : tensor<2x4xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<2x4xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

// Seed -1 is the u64 0xffffffffffffffff: key (0xffffffff, 0xffffffff).
// CHECK: rank = 2 offset = 0 sizes = [2, 4]
// CHECK-NEXT: {{\[\[}}0.681677, 0.421813, 0.399005, 0.199418],
// CHECK-NEXT: [0.78982{{[0-9]*}}, 0.676248, 0.478638, 0.432894]]
// CHECK: rank = 2 offset = 0 sizes = [2, 4]
// CHECK-NEXT: {{\[\[}}0, 3, 1, 2],
// CHECK-NEXT: [2, 0, 1, 3]]
func.func @noise_seed_neg(%logits: tensor<?x4xf32>, %noise: tensor<?x4xf32>, %seed: i64) {
  %w, %ids = moe.route %logits top_k(4) score(sigmoid) order(topk_then_score) noise(%noise, %seed : tensor<?x4xf32>)
      : tensor<?x4xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
  %w_u = tensor.cast %w : tensor<?x4xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<?x4xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

// Noisy top-2 on real logits, softmax after the selection; a NaN noise logit
// makes its expert NaN (never selected).
// CHECK: rank = 2 offset = 0 sizes = [2, 3]
// CHECK-NEXT: {{\[\[}}0.62854, 0.37146, 0.323239],
// CHECK-NEXT: [0.857559, 0.142441, 0.130756]]
// CHECK: rank = 2 offset = 0 sizes = [2, 3]
// CHECK-NEXT: {{\[\[}}2, 1, 0],
// CHECK-NEXT: [5, 4, 1]]
func.func @noisy_softmax(%logits: tensor<2x6xf32>, %noise: tensor<2x6xf32>, %seed: i64) {
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(topk_then_score) noise(%noise, %seed : tensor<2x6xf32>)
      : tensor<2x6xf32> -> tensor<2x3xf32>, tensor<2x3xi32>
  %w_u = tensor.cast %w : tensor<2x3xf32> to tensor<*xf32>
  call @printMemrefF32(%w_u) : (tensor<*xf32>) -> ()
  %ids_u = tensor.cast %ids : tensor<2x3xi32> to tensor<*xi32>
  call @printMemrefI32(%ids_u) : (tensor<*xi32>) -> ()
  return
}

func.func @main() {
  %noise_seed0_l = arith.constant dense<[[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]> : tensor<2x4xf32>
  %noise_seed0_z = arith.constant dense<[[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]> : tensor<2x4xf32>
  %noise_seed0_s = arith.constant 0 : i64
  call @noise_seed0(%noise_seed0_l, %noise_seed0_z, %noise_seed0_s) : (tensor<2x4xf32>, tensor<2x4xf32>, i64) -> ()
  %noise_seed_hi_l = arith.constant dense<[[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]> : tensor<2x4xf32>
  %noise_seed_hi_z = arith.constant dense<[[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]> : tensor<2x4xf32>
  %noise_seed_hi_s = arith.constant 2999170649027065890 : i64
  call @noise_seed_hi(%noise_seed_hi_l, %noise_seed_hi_z, %noise_seed_hi_s) : (tensor<2x4xf32>, tensor<2x4xf32>, i64) -> ()
  %noise_seed_neg_l = arith.constant dense<[[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]> : tensor<2x4xf32>
  %noise_seed_neg_d = tensor.cast %noise_seed_neg_l : tensor<2x4xf32> to tensor<?x4xf32>
  %noise_seed_neg_z = arith.constant dense<[[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]> : tensor<2x4xf32>
  %noise_seed_neg_zd = tensor.cast %noise_seed_neg_z : tensor<2x4xf32> to tensor<?x4xf32>
  %noise_seed_neg_s = arith.constant -1 : i64
  call @noise_seed_neg(%noise_seed_neg_d, %noise_seed_neg_zd, %noise_seed_neg_s) : (tensor<?x4xf32>, tensor<?x4xf32>, i64) -> ()
  %noisy_softmax_l = arith.constant dense<[[1.0, 0.8, 0.9, -0.5, 0.2, 0.0], [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]]> : tensor<2x6xf32>
  %noisy_softmax_z = arith.constant dense<[[-1.0, 0.5, 0.0, 2.0, 0x7FC00000, -3.0], [0.0, 1.0, -1.0, 0.3, 0.2, 0.1]]> : tensor<2x6xf32>
  %noisy_softmax_s = arith.constant 1234 : i64
  call @noisy_softmax(%noisy_softmax_l, %noisy_softmax_z, %noisy_softmax_s) : (tensor<2x6xf32>, tensor<2x6xf32>, i64) -> ()
  return
}
