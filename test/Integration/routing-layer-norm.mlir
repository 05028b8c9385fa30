// moe.layer_norm lowered to the CPU (both pipelines) and run.
// Expected values: NumPy (float64) from the semantics, printed to 6 digits.
// RUN: moe-opt %s --moe-lower-to-cpu \
// RUN: | mlir-runner -e main -entry-point-result=void \
// RUN:     -shared-libs=%mlir_runner_utils,%mlir_c_runner_utils,%moe_runtime \
// RUN: | FileCheck %s
// RUN: moe-opt %s --moe-lower-to-cpu=reference=true \
// RUN: | mlir-runner -e main -entry-point-result=void \
// RUN:     -shared-libs=%mlir_runner_utils,%mlir_c_runner_utils,%moe_runtime \
// RUN: | FileCheck %s

func.func private @printMemrefF32(tensor<*xf32>)

// Each row normalised over its 4 channels; the constant row has variance 0
// and gives the shift exactly. Dynamic token count.
// CHECK: rank = 2 offset = 0 sizes = [3, 4]
// CHECK-NEXT: {{\[\[}}-1.34164, -0.394424, -0.776394, 0.658365],
// CHECK-NEXT: [0, 0.5, -1, 2],
// CHECK-NEXT: [-1.09686, -0.718728, -0.225237, 1.84331]]
func.func @layer_norm(%x: tensor<?x4xf32>, %scale: tensor<4xf32>, %shift: tensor<4xf32>) {
  %y = moe.layer_norm %x, %scale, %shift : tensor<?x4xf32>, tensor<4xf32>
  %y_u = tensor.cast %y : tensor<?x4xf32> to tensor<*xf32>
  call @printMemrefF32(%y_u) : (tensor<*xf32>) -> ()
  return
}

// A large epsilon: (x - 2) / sqrt(1 + 0.5).
// CHECK: rank = 2 offset = 0 sizes = [1, 2]
// CHECK-NEXT: {{\[\[}}-0.816497, 0.816497]]
func.func @layer_norm_eps(%x: tensor<1x2xf32>, %scale: tensor<2xf32>, %shift: tensor<2xf32>) {
  %y = moe.layer_norm %x, %scale, %shift {epsilon = 5.000000e-01 : f64} : tensor<1x2xf32>, tensor<2xf32>
  %y_u = tensor.cast %y : tensor<1x2xf32> to tensor<*xf32>
  call @printMemrefF32(%y_u) : (tensor<*xf32>) -> ()
  return
}

func.func @main() {
  %x = arith.constant dense<[[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0], [-1.5, 0.25, 8.0, 3.0]]> : tensor<3x4xf32>
  %xd = tensor.cast %x : tensor<3x4xf32> to tensor<?x4xf32>
  %scale = arith.constant dense<[1.0, 2.0, 0.5, -1.0]> : tensor<4xf32>
  %shift = arith.constant dense<[0.0, 0.5, -1.0, 2.0]> : tensor<4xf32>
  call @layer_norm(%xd, %scale, %shift) : (tensor<?x4xf32>, tensor<4xf32>, tensor<4xf32>) -> ()
  %x2 = arith.constant dense<[[1.0, 3.0]]> : tensor<1x2xf32>
  %one = arith.constant dense<[1.0, 1.0]> : tensor<2xf32>
  %zero = arith.constant dense<[0.0, 0.0]> : tensor<2xf32>
  call @layer_norm_eps(%x2, %one, %zero) : (tensor<1x2xf32>, tensor<2xf32>, tensor<2xf32>) -> ()
  return
}
