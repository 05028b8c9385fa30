// RUN: moe-opt %s --moe-lower-to-cpu | mlir-runner -e main -entry-point-result=void -shared-libs=%mlir_runner_utils,%mlir_c_runner_utils,%moe_runtime | FileCheck %s
// RUN: moe-opt %s --moe-lower-to-cpu=reference=true | mlir-runner -e main -entry-point-result=void -shared-libs=%mlir_runner_utils,%mlir_c_runner_utils,%moe_runtime | FileCheck %s
// The GPU lowering of moe.expert_ffn (row-parallel, experts found by bisection), run on the CPU: the same numbers.
// RUN: moe-opt %s --convert-moe-to-gpu --moe-lower-to-cpu=reference=true | mlir-runner -e main -entry-point-result=void -shared-libs=%mlir_runner_utils,%mlir_c_runner_utils,%moe_runtime | FileCheck %s
// Its tensor-core tiles for the bf16 weights (emulated lane by lane; f32 and f16 stay as above): the same numbers to the digits checked.
// RUN: moe-opt %s --convert-moe-to-gpu=tensor-cores=emulate --moe-lower-to-cpu=reference=true | mlir-runner -e main -entry-point-result=void -shared-libs=%mlir_runner_utils,%mlir_c_runner_utils,%moe_runtime | FileCheck %s

    // moe.expert_ffn end to end. E = 3, D = 2, F = 3: expert 0 owns rows 0-1,
    // expert 1 none (its weights would show up as large values), expert 2 rows
    // 2-4; row 5 lies past offsets[E] and keeps its init. Weights are exact in
    // bf16 and f16, so every weight type gives the same numbers. Expected values
    // come from an independent NumPy model of the semantics (float64); the
    // patterns check 4 significant digits.

    func.func private @printMemrefF32(tensor<*xf32> {bufferization.access = "read"})
    
    // swiglu, f32 weights.
    func.func @ffn_swiglu_f32() {
      %rows = arith.constant dense<[[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0], [1.0, 1.0], [0.0, -0.5], [3.0, 3.0]]> : tensor<6x2xf32>
      %offsets = arith.constant dense<[0, 2, 2, 5]> : tensor<4xi32>
      %w1 = arith.constant dense<[[[0.5, -0.25], [1.0, 0.5], [-0.5, 0.75]], [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]], [[0.25, 0.5], [-1.0, 0.125], [0.75, -0.5]]]> : tensor<3x3x2xf32>
      %w2 = arith.constant dense<[[[1.0, -0.5, 0.25], [0.5, 0.75, -1.0]], [[4.0, 4.0, 4.0], [4.0, 4.0, 4.0]], [[-0.25, 1.0, 0.5], [0.75, 0.5, 0.25]]]> : tensor<3x2x3xf32>
  %w3 = arith.constant dense<[[[1.0, 0.5], [-0.25, 1.0], [0.5, 0.5]], [[3.0, 3.0], [3.0, 3.0], [3.0, 3.0]], [[-0.5, 1.0], [0.25, 0.25], [1.0, -0.75]]]> : tensor<3x3x2xf32>
      %init = arith.constant dense<[[0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [7.0, 8.0]]> : tensor<6x2xf32>
      %drows = tensor.cast %rows : tensor<6x2xf32> to tensor<?x2xf32>
      %dinit = tensor.cast %init : tensor<6x2xf32> to tensor<?x2xf32>
      %y = moe.expert_ffn swiglu
          ins(%drows, %offsets, %w1, %w2 : tensor<?x2xf32>, tensor<4xi32>, tensor<3x3x2xf32>, tensor<3x2x3xf32>)
      up(%w3 : tensor<3x3x2xf32>)
          outs(%dinit : tensor<?x2xf32>) -> tensor<?x2xf32>
      %u = tensor.cast %y : tensor<?x2xf32> to tensor<*xf32>
      call @printMemrefF32(%u) : (tensor<*xf32>) -> ()
      return
    }
    // CHECK:      sizes = [6, 2]
// CHECK-NEXT: {{\[}}[0.2668{{[0-9]*}}, -0.3172{{[0-9]*}}],
// CHECK-NEXT:  [1.033{{[0-9]*}}, 0.1730{{[0-9]*}}],
// CHECK-NEXT:  [0.4489{{[0-9]*}}, 1.018{{[0-9]*}}],
// CHECK-NEXT:  [0.07517{{[0-9]*}}, -0.1145{{[0-9]*}}],
// CHECK-NEXT:  [0.2664{{[0-9]*}}, -0.1938{{[0-9]*}}],
// CHECK-NEXT:  [7, 8]]
    
    // geglu, f32 weights.
    func.func @ffn_geglu_f32() {
      %rows = arith.constant dense<[[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0], [1.0, 1.0], [0.0, -0.5], [3.0, 3.0]]> : tensor<6x2xf32>
      %offsets = arith.constant dense<[0, 2, 2, 5]> : tensor<4xi32>
      %w1 = arith.constant dense<[[[0.5, -0.25], [1.0, 0.5], [-0.5, 0.75]], [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]], [[0.25, 0.5], [-1.0, 0.125], [0.75, -0.5]]]> : tensor<3x3x2xf32>
      %w2 = arith.constant dense<[[[1.0, -0.5, 0.25], [0.5, 0.75, -1.0]], [[4.0, 4.0, 4.0], [4.0, 4.0, 4.0]], [[-0.25, 1.0, 0.5], [0.75, 0.5, 0.25]]]> : tensor<3x2x3xf32>
  %w3 = arith.constant dense<[[[1.0, 0.5], [-0.25, 1.0], [0.5, 0.5]], [[3.0, 3.0], [3.0, 3.0], [3.0, 3.0]], [[-0.5, 1.0], [0.25, 0.25], [1.0, -0.75]]]> : tensor<3x3x2xf32>
      %init = arith.constant dense<[[0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [7.0, 8.0]]> : tensor<6x2xf32>
      %drows = tensor.cast %rows : tensor<6x2xf32> to tensor<?x2xf32>
      %dinit = tensor.cast %init : tensor<6x2xf32> to tensor<?x2xf32>
      %y = moe.expert_ffn geglu
          ins(%drows, %offsets, %w1, %w2 : tensor<?x2xf32>, tensor<4xi32>, tensor<3x3x2xf32>, tensor<3x2x3xf32>)
      up(%w3 : tensor<3x3x2xf32>)
          outs(%dinit : tensor<?x2xf32>) -> tensor<?x2xf32>
      %u = tensor.cast %y : tensor<?x2xf32> to tensor<*xf32>
      call @printMemrefF32(%u) : (tensor<*xf32>) -> ()
      return
    }
    // CHECK:      sizes = [6, 2]
// CHECK-NEXT: {{\[}}[0.2599{{[0-9]*}}, -0.2896{{[0-9]*}}],
// CHECK-NEXT:  [1.153{{[0-9]*}}, 0.1680{{[0-9]*}}],
// CHECK-NEXT:  [0.2348{{[0-9]*}}, 1.079{{[0-9]*}}],
// CHECK-NEXT:  [0.1127{{[0-9]*}}, -0.06486{{[0-9]*}}],
// CHECK-NEXT:  [0.2692{{[0-9]*}}, -0.1964{{[0-9]*}}],
// CHECK-NEXT:  [7, 8]]
    
    // gelu, f32 weights.
    func.func @ffn_gelu_f32() {
      %rows = arith.constant dense<[[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0], [1.0, 1.0], [0.0, -0.5], [3.0, 3.0]]> : tensor<6x2xf32>
      %offsets = arith.constant dense<[0, 2, 2, 5]> : tensor<4xi32>
      %w1 = arith.constant dense<[[[0.5, -0.25], [1.0, 0.5], [-0.5, 0.75]], [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]], [[0.25, 0.5], [-1.0, 0.125], [0.75, -0.5]]]> : tensor<3x3x2xf32>
      %w2 = arith.constant dense<[[[1.0, -0.5, 0.25], [0.5, 0.75, -1.0]], [[4.0, 4.0, 4.0], [4.0, 4.0, 4.0]], [[-0.25, 1.0, 0.5], [0.75, 0.5, 0.25]]]> : tensor<3x2x3xf32>
      %init = arith.constant dense<[[0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [7.0, 8.0]]> : tensor<6x2xf32>
      %drows = tensor.cast %rows : tensor<6x2xf32> to tensor<?x2xf32>
      %dinit = tensor.cast %init : tensor<6x2xf32> to tensor<?x2xf32>
      %y = moe.expert_ffn gelu
          ins(%drows, %offsets, %w1, %w2 : tensor<?x2xf32>, tensor<4xi32>, tensor<3x3x2xf32>, tensor<3x2x3xf32>)
          outs(%dinit : tensor<?x2xf32>) -> tensor<?x2xf32>
      %u = tensor.cast %y : tensor<?x2xf32> to tensor<*xf32>
      call @printMemrefF32(%u) : (tensor<*xf32>) -> ()
      return
    }
    // CHECK:      sizes = [6, 2]
// CHECK-NEXT: {{\[}}[0.5560{{[0-9]*}}, 0.08152{{[0-9]*}}],
// CHECK-NEXT:  [-0.04207{{[0-9]*}}, 1.325{{[0-9]*}}],
// CHECK-NEXT:  [0.8843{{[0-9]*}}, 0.6300{{[0-9]*}}],
// CHECK-NEXT:  [0.01289{{[0-9]*}}, 0.1389{{[0-9]*}}],
// CHECK-NEXT:  [0.3202{{[0-9]*}}, -0.3026{{[0-9]*}}],
// CHECK-NEXT:  [7, 8]]
    
    // relu, f32 weights.
    func.func @ffn_relu_f32() {
      %rows = arith.constant dense<[[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0], [1.0, 1.0], [0.0, -0.5], [3.0, 3.0]]> : tensor<6x2xf32>
      %offsets = arith.constant dense<[0, 2, 2, 5]> : tensor<4xi32>
      %w1 = arith.constant dense<[[[0.5, -0.25], [1.0, 0.5], [-0.5, 0.75]], [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]], [[0.25, 0.5], [-1.0, 0.125], [0.75, -0.5]]]> : tensor<3x3x2xf32>
      %w2 = arith.constant dense<[[[1.0, -0.5, 0.25], [0.5, 0.75, -1.0]], [[4.0, 4.0, 4.0], [4.0, 4.0, 4.0]], [[-0.25, 1.0, 0.5], [0.75, 0.5, 0.25]]]> : tensor<3x2x3xf32>
      %init = arith.constant dense<[[0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [7.0, 8.0]]> : tensor<6x2xf32>
      %drows = tensor.cast %rows : tensor<6x2xf32> to tensor<?x2xf32>
      %dinit = tensor.cast %init : tensor<6x2xf32> to tensor<?x2xf32>
      %y = moe.expert_ffn relu
          ins(%drows, %offsets, %w1, %w2 : tensor<?x2xf32>, tensor<4xi32>, tensor<3x3x2xf32>, tensor<3x2x3xf32>)
          outs(%dinit : tensor<?x2xf32>) -> tensor<?x2xf32>
      %u = tensor.cast %y : tensor<?x2xf32> to tensor<*xf32>
      call @printMemrefF32(%u) : (tensor<*xf32>) -> ()
      return
    }
    // CHECK:      sizes = [6, 2]
// CHECK-NEXT: {{\[}}[0.75, 0],
// CHECK-NEXT:  [0.125, 1.312{{[0-9]*}}],
// CHECK-NEXT:  [1.046{{[0-9]*}}, 0.8593{{[0-9]*}}],
// CHECK-NEXT:  [0.1875, 0.375],
// CHECK-NEXT:  [0.375, -0.1875],
// CHECK-NEXT:  [7, 8]]
    
    // silu, f32 weights.
    func.func @ffn_silu_f32() {
      %rows = arith.constant dense<[[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0], [1.0, 1.0], [0.0, -0.5], [3.0, 3.0]]> : tensor<6x2xf32>
      %offsets = arith.constant dense<[0, 2, 2, 5]> : tensor<4xi32>
      %w1 = arith.constant dense<[[[0.5, -0.25], [1.0, 0.5], [-0.5, 0.75]], [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]], [[0.25, 0.5], [-1.0, 0.125], [0.75, -0.5]]]> : tensor<3x3x2xf32>
      %w2 = arith.constant dense<[[[1.0, -0.5, 0.25], [0.5, 0.75, -1.0]], [[4.0, 4.0, 4.0], [4.0, 4.0, 4.0]], [[-0.25, 1.0, 0.5], [0.75, 0.5, 0.25]]]> : tensor<3x2x3xf32>
      %init = arith.constant dense<[[0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [7.0, 8.0]]> : tensor<6x2xf32>
      %drows = tensor.cast %rows : tensor<6x2xf32> to tensor<?x2xf32>
      %dinit = tensor.cast %init : tensor<6x2xf32> to tensor<?x2xf32>
      %y = moe.expert_ffn silu
          ins(%drows, %offsets, %w1, %w2 : tensor<?x2xf32>, tensor<4xi32>, tensor<3x3x2xf32>, tensor<3x2x3xf32>)
          outs(%dinit : tensor<?x2xf32>) -> tensor<?x2xf32>
      %u = tensor.cast %y : tensor<?x2xf32> to tensor<*xf32>
      call @printMemrefF32(%u) : (tensor<*xf32>) -> ()
      return
    }
    // CHECK:      sizes = [6, 2]
// CHECK-NEXT: {{\[}}[0.4939{{[0-9]*}}, 0.1745{{[0-9]*}}],
// CHECK-NEXT:  [-0.02240{{[0-9]*}}, 1.201{{[0-9]*}}],
// CHECK-NEXT:  [0.7049{{[0-9]*}}, 0.4699{{[0-9]*}}],
// CHECK-NEXT:  [-0.06451{{[0-9]*}}, 0.03845{{[0-9]*}}],
// CHECK-NEXT:  [0.3173{{[0-9]*}}, -0.3120{{[0-9]*}}],
// CHECK-NEXT:  [7, 8]]
    
    // swiglu, bf16 weights.
    func.func @ffn_swiglu_bf16() {
      %rows = arith.constant dense<[[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0], [1.0, 1.0], [0.0, -0.5], [3.0, 3.0]]> : tensor<6x2xf32>
      %offsets = arith.constant dense<[0, 2, 2, 5]> : tensor<4xi32>
      %w1 = arith.constant dense<[[[0.5, -0.25], [1.0, 0.5], [-0.5, 0.75]], [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]], [[0.25, 0.5], [-1.0, 0.125], [0.75, -0.5]]]> : tensor<3x3x2xbf16>
      %w2 = arith.constant dense<[[[1.0, -0.5, 0.25], [0.5, 0.75, -1.0]], [[4.0, 4.0, 4.0], [4.0, 4.0, 4.0]], [[-0.25, 1.0, 0.5], [0.75, 0.5, 0.25]]]> : tensor<3x2x3xbf16>
  %w3 = arith.constant dense<[[[1.0, 0.5], [-0.25, 1.0], [0.5, 0.5]], [[3.0, 3.0], [3.0, 3.0], [3.0, 3.0]], [[-0.5, 1.0], [0.25, 0.25], [1.0, -0.75]]]> : tensor<3x3x2xbf16>
      %init = arith.constant dense<[[0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [7.0, 8.0]]> : tensor<6x2xf32>
      %drows = tensor.cast %rows : tensor<6x2xf32> to tensor<?x2xf32>
      %dinit = tensor.cast %init : tensor<6x2xf32> to tensor<?x2xf32>
      %y = moe.expert_ffn swiglu
          ins(%drows, %offsets, %w1, %w2 : tensor<?x2xf32>, tensor<4xi32>, tensor<3x3x2xbf16>, tensor<3x2x3xbf16>)
      up(%w3 : tensor<3x3x2xbf16>)
          outs(%dinit : tensor<?x2xf32>) -> tensor<?x2xf32>
      %u = tensor.cast %y : tensor<?x2xf32> to tensor<*xf32>
      call @printMemrefF32(%u) : (tensor<*xf32>) -> ()
      return
    }
    // CHECK:      sizes = [6, 2]
// CHECK-NEXT: {{\[}}[0.2668{{[0-9]*}}, -0.3172{{[0-9]*}}],
// CHECK-NEXT:  [1.033{{[0-9]*}}, 0.1730{{[0-9]*}}],
// CHECK-NEXT:  [0.4489{{[0-9]*}}, 1.018{{[0-9]*}}],
// CHECK-NEXT:  [0.07517{{[0-9]*}}, -0.1145{{[0-9]*}}],
// CHECK-NEXT:  [0.2664{{[0-9]*}}, -0.1938{{[0-9]*}}],
// CHECK-NEXT:  [7, 8]]
    
    // gelu, f16 weights.
    func.func @ffn_gelu_f16() {
      %rows = arith.constant dense<[[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0], [1.0, 1.0], [0.0, -0.5], [3.0, 3.0]]> : tensor<6x2xf32>
      %offsets = arith.constant dense<[0, 2, 2, 5]> : tensor<4xi32>
      %w1 = arith.constant dense<[[[0.5, -0.25], [1.0, 0.5], [-0.5, 0.75]], [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]], [[0.25, 0.5], [-1.0, 0.125], [0.75, -0.5]]]> : tensor<3x3x2xf16>
      %w2 = arith.constant dense<[[[1.0, -0.5, 0.25], [0.5, 0.75, -1.0]], [[4.0, 4.0, 4.0], [4.0, 4.0, 4.0]], [[-0.25, 1.0, 0.5], [0.75, 0.5, 0.25]]]> : tensor<3x2x3xf16>
      %init = arith.constant dense<[[0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [0.25, -0.25], [7.0, 8.0]]> : tensor<6x2xf32>
      %drows = tensor.cast %rows : tensor<6x2xf32> to tensor<?x2xf32>
      %dinit = tensor.cast %init : tensor<6x2xf32> to tensor<?x2xf32>
      %y = moe.expert_ffn gelu
          ins(%drows, %offsets, %w1, %w2 : tensor<?x2xf32>, tensor<4xi32>, tensor<3x3x2xf16>, tensor<3x2x3xf16>)
          outs(%dinit : tensor<?x2xf32>) -> tensor<?x2xf32>
      %u = tensor.cast %y : tensor<?x2xf32> to tensor<*xf32>
      call @printMemrefF32(%u) : (tensor<*xf32>) -> ()
      return
    }
    // CHECK:      sizes = [6, 2]
// CHECK-NEXT: {{\[}}[0.5560{{[0-9]*}}, 0.08152{{[0-9]*}}],
// CHECK-NEXT:  [-0.04207{{[0-9]*}}, 1.325{{[0-9]*}}],
// CHECK-NEXT:  [0.8843{{[0-9]*}}, 0.6300{{[0-9]*}}],
// CHECK-NEXT:  [0.01289{{[0-9]*}}, 0.1389{{[0-9]*}}],
// CHECK-NEXT:  [0.3202{{[0-9]*}}, -0.3026{{[0-9]*}}],
// CHECK-NEXT:  [7, 8]]
    
func.func @main() {
  call @ffn_swiglu_f32() : () -> ()
  call @ffn_geglu_f32() : () -> ()
  call @ffn_gelu_f32() : () -> ()
  call @ffn_relu_f32() : () -> ()
  call @ffn_silu_f32() : () -> ()
  call @ffn_swiglu_bf16() : () -> ()
  call @ffn_gelu_f16() : () -> ()
  return
}
