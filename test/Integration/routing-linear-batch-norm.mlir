// moe.linear and moe.batch_norm lowered to the CPU and run.
// Expected values: NumPy (float64) from the semantics, printed to 6 digits.
// RUN: moe-opt %s --moe-lower-to-cpu \
// RUN: | mlir-runner -e main -entry-point-result=void \
// RUN:     -shared-libs=%mlir_runner_utils,%mlir_c_runner_utils,%moe_runtime \
// RUN: | FileCheck %s

func.func private @printMemrefF32(tensor<*xf32>)
func.func private @printMemrefI32(tensor<*xi32>)

// init + x · wᵀ with w in the [out, in] layout. Dynamic token count.
// CHECK: rank = 2 offset = 0 sizes = [2, 2]
// CHECK-NEXT: {{\[\[}}1.9, {{-?}}0],
// CHECK-NEXT: [1.075, 0.625]]
func.func @linear_f32(%x: tensor<?x3xf32>, %w: tensor<2x3xf32>, %init: tensor<?x2xf32>) {
  %y = moe.linear ins(%x, %w : tensor<?x3xf32>, tensor<2x3xf32>) outs(%init : tensor<?x2xf32>) -> tensor<?x2xf32>
  %y_u = tensor.cast %y : tensor<?x2xf32> to tensor<*xf32>
  call @printMemrefF32(%y_u) : (tensor<*xf32>) -> ()
  return
}

// bf16 weight: 0.1 is stored as 0.10009765625 and widened exactly.
// CHECK: rank = 2 offset = 0 sizes = [2, 2]
// CHECK-NEXT: {{\[\[}}1.40283, 0.5],
// CHECK-NEXT: [0.0751953, -1.375]]
func.func @linear_bf16(%x: tensor<2x3xf32>, %w: tensor<2x3xbf16>, %init: tensor<2x2xf32>) {
  %y = moe.linear ins(%x, %w : tensor<2x3xf32>, tensor<2x3xbf16>) outs(%init : tensor<2x2xf32>) -> tensor<2x2xf32>
  %y_u = tensor.cast %y : tensor<2x2xf32> to tensor<*xf32>
  call @printMemrefF32(%y_u) : (tensor<*xf32>) -> ()
  return
}

// f16 weight.
// CHECK: rank = 2 offset = 0 sizes = [1, 3]
// CHECK-NEXT: {{\[\[}}1.40002, 0.5, -2]]
func.func @linear_f16(%x: tensor<1x3xf32>, %w: tensor<3x3xf16>, %init: tensor<1x3xf32>) {
  %y = moe.linear ins(%x, %w : tensor<1x3xf32>, tensor<3x3xf16>) outs(%init : tensor<1x3xf32>) -> tensor<1x3xf32>
  %y_u = tensor.cast %y : tensor<1x3xf32> to tensor<*xf32>
  call @printMemrefF32(%y_u) : (tensor<*xf32>) -> ()
  return
}

// (x - mean) / sqrt(var + eps) · scale + shift, per channel. Dynamic tokens.
// CHECK: rank = 2 offset = 0 sizes = [2, 3]
// CHECK-NEXT: {{\[\[}}0.499999, -1.49996, -2.49999],
// CHECK-NEXT: [{{-?}}0, 2.49996, 0.99999]]
func.func @batch_norm(%x: tensor<?x3xf32>, %mean: tensor<3xf32>, %var: tensor<3xf32>, %scale: tensor<3xf32>, %shift: tensor<3xf32>) {
  %y = moe.batch_norm %x, %mean, %var, %scale, %shift {epsilon = 1.000000e-05 : f64} : tensor<?x3xf32>, tensor<3xf32>
  %y_u = tensor.cast %y : tensor<?x3xf32> to tensor<*xf32>
  call @printMemrefF32(%y_u) : (tensor<*xf32>) -> ()
  return
}

// A large epsilon: sqrt(0 + 0.5) for a zero-variance channel.
// CHECK: rank = 2 offset = 0 sizes = [1, 2]
// CHECK-NEXT: {{\[\[}}1.41421, 1.41421]]
func.func @batch_norm_eps(%x: tensor<1x2xf32>, %mean: tensor<2xf32>, %var: tensor<2xf32>, %scale: tensor<2xf32>, %shift: tensor<2xf32>) {
  %y = moe.batch_norm %x, %mean, %var, %scale, %shift {epsilon = 5.000000e-01 : f64} : tensor<1x2xf32>, tensor<2xf32>
  %y_u = tensor.cast %y : tensor<1x2xf32> to tensor<*xf32>
  call @printMemrefF32(%y_u) : (tensor<*xf32>) -> ()
  return
}

func.func @main() {
  %linear_f32_0 = arith.constant dense<[[1.0, 2.0, 3.0], [-1.0, 0.5, 0.25]]> : tensor<2x3xf32>
  %linear_f32_0d = tensor.cast %linear_f32_0 : tensor<2x3xf32> to tensor<?x3xf32>
  %linear_f32_1 = arith.constant dense<[[0.1, 0.2, 0.3], [1.0, -1.0, 0.5]]> : tensor<2x3xf32>
  %linear_f32_2 = arith.constant dense<[[0.5, -0.5], [1.0, 2.0]]> : tensor<2x2xf32>
  %linear_f32_2d = tensor.cast %linear_f32_2 : tensor<2x2xf32> to tensor<?x2xf32>
  call @linear_f32(%linear_f32_0d, %linear_f32_1, %linear_f32_2d) : (tensor<?x3xf32>, tensor<2x3xf32>, tensor<?x2xf32>) -> ()
  %linear_bf16_0 = arith.constant dense<[[1.0, 2.0, 3.0], [-1.0, 0.5, 0.25]]> : tensor<2x3xf32>
  %linear_bf16_1 = arith.constant dense<[[0.100097656, 0.20019531, 0.30078125], [1.0, -1.0, 0.5]]> : tensor<2x3xbf16>
  %linear_bf16_2 = arith.constant dense<[[0.0, 0.0], [0.0, 0.0]]> : tensor<2x2xf32>
  call @linear_bf16(%linear_bf16_0, %linear_bf16_1, %linear_bf16_2) : (tensor<2x3xf32>, tensor<2x3xbf16>, tensor<2x2xf32>) -> ()
  %linear_f16_0 = arith.constant dense<[[1.0, 2.0, 3.0]]> : tensor<1x3xf32>
  %linear_f16_1 = arith.constant dense<[[0.099975586, 0.19995117, 0.30004883], [1.0, -1.0, 0.5], [3.0, 0.0, -2.0]]> : tensor<3x3xf16>
  %linear_f16_2 = arith.constant dense<[[0.0, 0.0, 1.0]]> : tensor<1x3xf32>
  call @linear_f16(%linear_f16_0, %linear_f16_1, %linear_f16_2) : (tensor<1x3xf32>, tensor<3x3xf16>, tensor<1x3xf32>) -> ()
  %batch_norm_0 = arith.constant dense<[[1.0, 2.0, -3.0], [0.5, 0.0, 4.0]]> : tensor<2x3xf32>
  %batch_norm_0d = tensor.cast %batch_norm_0 : tensor<2x3xf32> to tensor<?x3xf32>
  %batch_norm_1 = arith.constant dense<[0.5, 1.0, 0.0]> : tensor<3xf32>
  %batch_norm_2 = arith.constant dense<[4.0, 0.25, 1.0]> : tensor<3xf32>
  %batch_norm_3 = arith.constant dense<[2.0, -1.0, 0.5]> : tensor<3xf32>
  %batch_norm_4 = arith.constant dense<[0.0, 0.5, -1.0]> : tensor<3xf32>
  call @batch_norm(%batch_norm_0d, %batch_norm_1, %batch_norm_2, %batch_norm_3, %batch_norm_4) : (tensor<?x3xf32>, tensor<3xf32>, tensor<3xf32>, tensor<3xf32>, tensor<3xf32>) -> ()
  %batch_norm_eps_0 = arith.constant dense<[[1.0, 3.0]]> : tensor<1x2xf32>
  %batch_norm_eps_1 = arith.constant dense<[0.0, 1.0]> : tensor<2xf32>
  %batch_norm_eps_2 = arith.constant dense<[0.0, 1.5]> : tensor<2xf32>
  %batch_norm_eps_3 = arith.constant dense<[1.0, 1.0]> : tensor<2xf32>
  %batch_norm_eps_4 = arith.constant dense<[0.0, 0.0]> : tensor<2xf32>
  call @batch_norm_eps(%batch_norm_eps_0, %batch_norm_eps_1, %batch_norm_eps_2, %batch_norm_eps_3, %batch_norm_eps_4) : (tensor<1x2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> ()
  return
}
