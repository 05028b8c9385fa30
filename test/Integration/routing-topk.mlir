// moe.topk lowered to the CPU and run.
// Expected values: NumPy (float64) from the semantics, printed to 6 digits.
// RUN: moe-opt %s --moe-lower-to-cpu \
// RUN: | mlir-runner -e main -entry-point-result=void \
// RUN:     -shared-libs=%mlir_runner_utils,%mlir_c_runner_utils,%moe_runtime \
// RUN: | FileCheck %s

func.func private @printMemrefF32(tensor<*xf32>)
func.func private @printMemrefI32(tensor<*xi32>)

// Rows of 6, k = 3: ties pick the lower index, NaN ranks below -inf, two
// NaNs rank by index. Dynamic row count.
// CHECK: rank = 2 offset = 0 sizes = [4, 3]
// CHECK-NEXT: {{\[\[}}3, 3, 2],
// CHECK-NEXT: [-1, -2, -inf],
// CHECK-NEXT: [0.5, 0.5, 0.5],
// CHECK-NEXT: [2, {{-?}}nan, {{-?}}nan]]
// CHECK: rank = 2 offset = 0 sizes = [4, 3]
// CHECK-NEXT: {{\[\[}}2, 3, 5],
// CHECK-NEXT: [3, 5, 1],
// CHECK-NEXT: [0, 1, 2],
// CHECK-NEXT: [2, 0, 1]]
func.func @rows_ties_nan(%x: tensor<?x6xf32>) {
  %c0 = arith.constant 0 : index
  %t = tensor.dim %x, %c0 : tensor<?x6xf32>
  %v0 = tensor.empty(%t) : tensor<?x3xf32>
  %i0 = tensor.empty(%t) : tensor<?x3xi32>
  %v, %i = moe.topk ins(%x : tensor<?x6xf32>) outs(%v0, %i0 : tensor<?x3xf32>, tensor<?x3xi32>)
      -> tensor<?x3xf32>, tensor<?x3xi32>
  %v_u = tensor.cast %v : tensor<?x3xf32> to tensor<*xf32>
  call @printMemrefF32(%v_u) : (tensor<*xf32>) -> ()
  %i_u = tensor.cast %i : tensor<?x3xi32> to tensor<*xi32>
  call @printMemrefI32(%i_u) : (tensor<*xi32>) -> ()
  return
}

// Rank 1, k = n: the whole vector sorted descending.
// CHECK: rank = 1 offset = 0 sizes = [7]
// CHECK-NEXT: [4, 4, 2.5, 0.25, {{-?}}0, -1, {{-?}}nan]
// CHECK: rank = 1 offset = 0 sizes = [7]
// CHECK-NEXT: [2, 5, 6, 0, 3, 1, 4]
func.func @vector_full(%x: tensor<7xf32>) {
  %v0 = tensor.empty() : tensor<7xf32>
  %i0 = tensor.empty() : tensor<7xi32>
  %v, %i = moe.topk ins(%x : tensor<7xf32>) outs(%v0, %i0 : tensor<7xf32>, tensor<7xi32>)
      -> tensor<7xf32>, tensor<7xi32>
  %v_u = tensor.cast %v : tensor<7xf32> to tensor<*xf32>
  call @printMemrefF32(%v_u) : (tensor<*xf32>) -> ()
  %i_u = tensor.cast %i : tensor<7xi32> to tensor<*xi32>
  call @printMemrefI32(%i_u) : (tensor<*xi32>) -> ()
  return
}

// Rank 3, k = 1: the arg-max of each innermost row.
// CHECK: rank = 3 offset = 0 sizes = [2, 2, 1]
// CHECK-NEXT: {{\[\[\[}}3],
// CHECK-NEXT: [5]],
// CHECK-NEXT: {{\[\[}}-inf],
// CHECK-NEXT: [{{-?}}0]]]
// CHECK: rank = 3 offset = 0 sizes = [2, 2, 1]
// CHECK-NEXT: {{\[\[\[}}2],
// CHECK-NEXT: [0]],
// CHECK-NEXT: {{\[\[}}0],
// CHECK-NEXT: [2]]]
func.func @rank3_top1(%x: tensor<2x2x4xf32>) {
  %v0 = tensor.empty() : tensor<2x2x1xf32>
  %i0 = tensor.empty() : tensor<2x2x1xi32>
  %v, %i = moe.topk ins(%x : tensor<2x2x4xf32>) outs(%v0, %i0 : tensor<2x2x1xf32>, tensor<2x2x1xi32>)
      -> tensor<2x2x1xf32>, tensor<2x2x1xi32>
  %v_u = tensor.cast %v : tensor<2x2x1xf32> to tensor<*xf32>
  call @printMemrefF32(%v_u) : (tensor<*xf32>) -> ()
  %i_u = tensor.cast %i : tensor<2x2x1xi32> to tensor<*xi32>
  call @printMemrefI32(%i_u) : (tensor<*xi32>) -> ()
  return
}

// Rank 3, k = 2.
// CHECK: rank = 3 offset = 0 sizes = [2, 2, 2]
// CHECK-NEXT: {{\[\[\[}}3, 2],
// CHECK-NEXT: [5, 5]],
// CHECK-NEXT: {{\[\[}}-inf, -inf],
// CHECK-NEXT: [{{-?}}0, {{-?}}nan]]]
// CHECK: rank = 3 offset = 0 sizes = [2, 2, 2]
// CHECK-NEXT: {{\[\[\[}}2, 1],
// CHECK-NEXT: [0, 1]],
// CHECK-NEXT: {{\[\[}}0, 1],
// CHECK-NEXT: [2, 0]]]
func.func @rank3_top2(%x: tensor<2x2x4xf32>) {
  %v0 = tensor.empty() : tensor<2x2x2xf32>
  %i0 = tensor.empty() : tensor<2x2x2xi32>
  %v, %i = moe.topk ins(%x : tensor<2x2x4xf32>) outs(%v0, %i0 : tensor<2x2x2xf32>, tensor<2x2x2xi32>)
      -> tensor<2x2x2xf32>, tensor<2x2x2xi32>
  %v_u = tensor.cast %v : tensor<2x2x2xf32> to tensor<*xf32>
  call @printMemrefF32(%v_u) : (tensor<*xf32>) -> ()
  %i_u = tensor.cast %i : tensor<2x2x2xi32> to tensor<*xi32>
  call @printMemrefI32(%i_u) : (tensor<*xi32>) -> ()
  return
}

func.func @main() {
  %rows_ties_nan_0 = arith.constant dense<[[1.0, 0x7FC00000, 3.0, 3.0, 0xFF800000, 2.0], [0x7FC00000, 0xFF800000, 0x7FC00000, -1.0, 0xFF800000, -2.0], [0.5, 0.5, 0.5, 0.5, 0.5, 0.5], [0x7FC00000, 0x7FC00000, 2.0, 0x7FC00000, 0x7FC00000, 0x7FC00000]]> : tensor<4x6xf32>
  %rows_ties_nan_0d = tensor.cast %rows_ties_nan_0 : tensor<4x6xf32> to tensor<?x6xf32>
  call @rows_ties_nan(%rows_ties_nan_0d) : (tensor<?x6xf32>) -> ()
  %vector_full_0 = arith.constant dense<[0.25, -1.0, 4.0, 0.0, 0x7FC00000, 4.0, 2.5]> : tensor<7xf32>
  call @vector_full(%vector_full_0) : (tensor<7xf32>) -> ()
  %rank3_top1_0 = arith.constant dense<[[[1.0, 2.0, 3.0, 0.0], [5.0, 5.0, -1.0, 0x7FC00000]], [[0xFF800000, 0xFF800000, 0xFF800000, 0xFF800000], [0x7FC00000, 0x7FC00000, 0.0, 0x7FC00000]]]> : tensor<2x2x4xf32>
  call @rank3_top1(%rank3_top1_0) : (tensor<2x2x4xf32>) -> ()
  %rank3_top2_0 = arith.constant dense<[[[1.0, 2.0, 3.0, 0.0], [5.0, 5.0, -1.0, 0x7FC00000]], [[0xFF800000, 0xFF800000, 0xFF800000, 0xFF800000], [0x7FC00000, 0x7FC00000, 0.0, 0x7FC00000]]]> : tensor<2x2x4xf32>
  call @rank3_top2(%rank3_top2_0) : (tensor<2x2x4xf32>) -> ()
  return
}
