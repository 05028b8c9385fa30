// RUN: moe-opt %s --moe-lower-to-cpu | mlir-runner -e main -entry-point-result=void -shared-libs=%mlir_runner_utils,%mlir_c_runner_utils,%moe_runtime | FileCheck %s
// The CUDA target's tensor-level lowerings (combine by a counting sort), run on the CPU: the same numbers.
// RUN: moe-opt %s --convert-moe-to-gpu --moe-lower-to-cpu=reference=true | mlir-runner -e main -entry-point-result=void -shared-libs=%mlir_runner_utils,%mlir_c_runner_utils,%moe_runtime | FileCheck %s

// moe.gather, moe.combine, moe.token_split / moe.token_merge end to end;
// expected values worked by hand.

func.func private @printMemrefF32(tensor<*xf32> {bufferization.access = "read"})

// Slots 2 and 4 are unused (-1): their rows are 0 whatever the init held.
func.func @gather() {
  %x = arith.constant dense<[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]> : tensor<3x2xf32>
  %tokens = arith.constant dense<[2, 0, -1, 1, -1]> : tensor<5xi32>
  %init = arith.constant dense<9.0> : tensor<5x2xf32>
  %dx = tensor.cast %x : tensor<3x2xf32> to tensor<?x2xf32>
  %dt = tensor.cast %tokens : tensor<5xi32> to tensor<?xi32>
  %di = tensor.cast %init : tensor<5x2xf32> to tensor<?x2xf32>
  %rows = moe.gather ins(%dx, %dt : tensor<?x2xf32>, tensor<?xi32>)
                     outs(%di : tensor<?x2xf32>) -> tensor<?x2xf32>
  %u = tensor.cast %rows : tensor<?x2xf32> to tensor<*xf32>
  call @printMemrefF32(%u) : (tensor<*xf32>) -> ()
  return
}
// CHECK:      sizes = [5, 2]
// CHECK-NEXT: {{\[}}[5, 6],
// CHECK-NEXT:  [1, 2],
// CHECK-NEXT:  [0, 0],
// CHECK-NEXT:  [3, 4],
// CHECK-NEXT:  [0, 0]]

// token 0 = init + 2 * row 1; token 1 = init + .5 * row 0 + .25 * row 2;
// token 2 keeps its init; slot 3 is unused and its weight ignored.
func.func @combine() {
  %rows = arith.constant dense<[[2.0, 4.0], [1.0, 3.0], [8.0, 16.0], [5.0, 5.0]]> : tensor<4x2xf32>
  %tokens = arith.constant dense<[1, 0, 1, -1]> : tensor<4xi32>
  %w = arith.constant dense<[0.5, 2.0, 0.25, 7.0]> : tensor<4xf32>
  %init = arith.constant dense<[[1.0, 1.0], [10.0, 10.0], [100.0, 100.0]]> : tensor<3x2xf32>
  %out = moe.combine ins(%rows, %tokens, %w : tensor<4x2xf32>, tensor<4xi32>, tensor<4xf32>)
                     outs(%init : tensor<3x2xf32>) -> tensor<3x2xf32>
  %u = tensor.cast %out : tensor<3x2xf32> to tensor<*xf32>
  call @printMemrefF32(%u) : (tensor<*xf32>) -> ()
  return
}
// CHECK:      sizes = [3, 2]
// CHECK-NEXT: {{\[}}[3, 7],
// CHECK-NEXT:  [13, 16],
// CHECK-NEXT:  [100, 100]]

// Split into 2 heads ([2, 4] -> [4, 2], row-major), then merge back.
func.func @split_merge() {
  %x = arith.constant dense<[[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]> : tensor<2x4xf32>
  %dx = tensor.cast %x : tensor<2x4xf32> to tensor<?x4xf32>
  %sub = moe.token_split %dx heads(2) : tensor<?x4xf32> -> tensor<?x2xf32>
  %u = tensor.cast %sub : tensor<?x2xf32> to tensor<*xf32>
  call @printMemrefF32(%u) : (tensor<*xf32>) -> ()
  // Double the sub-tokens so the merge is not folded away.
  %c4 = arith.constant 4 : index
  %e = tensor.empty(%c4) : tensor<?x2xf32>
  %twice = linalg.add ins(%sub, %sub : tensor<?x2xf32>, tensor<?x2xf32>)
                      outs(%e : tensor<?x2xf32>) -> tensor<?x2xf32>
  %merged = moe.token_merge %twice heads(2) : tensor<?x2xf32> -> tensor<?x4xf32>
  %v = tensor.cast %merged : tensor<?x4xf32> to tensor<*xf32>
  call @printMemrefF32(%v) : (tensor<*xf32>) -> ()
  %s2 = moe.token_split %x heads(4) : tensor<2x4xf32> -> tensor<8x1xf32>
  %m2 = moe.token_merge %s2 heads(4) : tensor<8x1xf32> -> tensor<2x4xf32>
  %w = tensor.cast %m2 : tensor<2x4xf32> to tensor<*xf32>
  call @printMemrefF32(%w) : (tensor<*xf32>) -> ()
  return
}
// CHECK:      sizes = [4, 2]
// CHECK-NEXT: {{\[}}[1, 2],
// CHECK-NEXT:  [3, 4],
// CHECK-NEXT:  [5, 6],
// CHECK-NEXT:  [7, 8]]
// CHECK:      sizes = [2, 4]
// CHECK-NEXT: {{\[}}[2, 4, 6, 8],
// CHECK-NEXT:  [10, 12, 14, 16]]
// CHECK:      sizes = [2, 4]
// CHECK-NEXT: {{\[}}[1, 2, 3, 4],
// CHECK-NEXT:  [5, 6, 7, 8]]

func.func @main() {
  call @gather() : () -> ()
  call @combine() : () -> ()
  call @split_merge() : () -> ()
  return
}
