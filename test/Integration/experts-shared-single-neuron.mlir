// RUN: moe-opt %s --moe-lower-to-cpu | mlir-runner -e main -entry-point-result=void -shared-libs=%mlir_runner_utils,%mlir_c_runner_utils,%moe_runtime | FileCheck %s

    // moe.shared_expert and moe.single_neuron_experts (PEER and PKM) end to end.
    // Expected values come from an independent NumPy model of the semantics
    // (float64); the patterns check 4 significant digits.

    func.func private @printMemrefF32(tensor<*xf32> {bufferization.access = "read"})
    
    // Qwen-style: swiglu, bf16 weights, sigmoid gate [1, D].
    func.func @shared_gated() {
      %x = arith.constant dense<[[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0]]> : tensor<3x2xf32>
      %w1 = arith.constant dense<[[0.5, -0.25], [1.0, 0.5], [-0.5, 0.75], [0.25, 0.25]]> : tensor<4x2xbf16>
      %w2 = arith.constant dense<[[1.0, -0.5, 0.25, 0.5], [0.5, 0.75, -1.0, 0.25]]> : tensor<2x4xbf16>
      %w3 = arith.constant dense<[[1.0, 0.5], [-0.25, 1.0], [0.5, 0.5], [0.75, -0.5]]> : tensor<4x2xbf16>
      %g = arith.constant dense<[[0.5, -1.5]]> : tensor<1x2xbf16>
      %init = arith.constant dense<[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]> : tensor<3x2xf32>
      %dx = tensor.cast %x : tensor<3x2xf32> to tensor<?x2xf32>
      %dinit = tensor.cast %init : tensor<3x2xf32> to tensor<?x2xf32>
      %y = moe.shared_expert swiglu
          ins(%dx, %w1, %w2 : tensor<?x2xf32>, tensor<4x2xbf16>, tensor<2x4xbf16>)
          up(%w3 : tensor<4x2xbf16>) gate(%g : tensor<1x2xbf16>)
          outs(%dinit : tensor<?x2xf32>) -> tensor<?x2xf32>
      %u = tensor.cast %y : tensor<?x2xf32> to tensor<*xf32>
      call @printMemrefF32(%u) : (tensor<*xf32>) -> ()
      return
    }
    // CHECK:      sizes = [3, 2]
// CHECK-NEXT: {{\[}}[0.9924{{[0-9]*}}, 1.931{{[0-9]*}}],
// CHECK-NEXT:  [3.543{{[0-9]*}}, 4.290{{[0-9]*}}],
// CHECK-NEXT:  [4.996{{[0-9]*}}, 5.970{{[0-9]*}}]]

    // gelu, no gate, f32 weights.
    func.func @shared_plain() {
      %x = arith.constant dense<[[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0]]> : tensor<3x2xf32>
      %w1 = arith.constant dense<[[0.5, -0.25], [1.0, 0.5], [-0.5, 0.75], [0.25, 0.25]]> : tensor<4x2xf32>
      %w2 = arith.constant dense<[[1.0, -0.5, 0.25, 0.5], [0.5, 0.75, -1.0, 0.25]]> : tensor<2x4xf32>
      %init = arith.constant dense<[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]> : tensor<3x2xf32>
      %y = moe.shared_expert gelu
          ins(%x, %w1, %w2 : tensor<3x2xf32>, tensor<4x2xf32>, tensor<2x4xf32>)
          outs(%init : tensor<3x2xf32>) -> tensor<3x2xf32>
      %u = tensor.cast %y : tensor<3x2xf32> to tensor<*xf32>
      call @printMemrefF32(%u) : (tensor<*xf32>) -> ()
      return
    }
    // CHECK:      sizes = [3, 2]
// CHECK-NEXT: {{\[}}[1.277{{[0-9]*}}, 2.317{{[0-9]*}}],
// CHECK-NEXT:  [2.854{{[0-9]*}}, 5.649{{[0-9]*}}],
// CHECK-NEXT:  [5.31{{[0-9]*}}, 4.259{{[0-9]*}}]]
    
    // PEER, gelu, f32 expert weights. Expert 3 is retrieved by two heads of token 0.
    func.func @peer_gelu() {
      %x = arith.constant dense<[[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]]> : tensor<2x3xf32>
      %ids = arith.constant dense<[[[3, 0], [1, 3]], [[2, 1], [0, 2]]]> : tensor<2x2x2xi32>
      %w = arith.constant dense<[[[0.5, 0.25], [0.125, 0.75]], [[1.0, 0.5], [0.25, 0.375]]]> : tensor<2x2x2xf32>
      %u = arith.constant dense<[[0.5, 0.25, -0.5], [1.0, -1.0, 0.5], [-0.25, 0.75, 0.5], [0.125, 0.5, 1.0]]> : tensor<4x3xf32>
      %v = arith.constant dense<[[1.0, 0.0, -1.0], [0.5, 2.0, 0.25], [-1.5, 0.5, 1.0], [0.25, -0.25, 0.75]]> : tensor<4x3xf32>
      %init = arith.constant dense<[[1.0, -1.0, 0.5], [0.0, 2.0, -2.0]]> : tensor<2x3xf32>
      %dx = tensor.cast %x : tensor<2x3xf32> to tensor<?x3xf32>
      %dids = tensor.cast %ids : tensor<2x2x2xi32> to tensor<?x2x2xi32>
      %dw = tensor.cast %w : tensor<2x2x2xf32> to tensor<?x2x2xf32>
      %dinit = tensor.cast %init : tensor<2x3xf32> to tensor<?x3xf32>
      %y = moe.single_neuron_experts
          ins(%dx, %dids, %dw, %v : tensor<?x3xf32>, tensor<?x2x2xi32>, tensor<?x2x2xf32>, tensor<4x3xf32>)
          in_proj(%u : tensor<4x3xf32>, gelu)
          outs(%dinit : tensor<?x3xf32>) -> tensor<?x3xf32>
      %p = tensor.cast %y : tensor<?x3xf32> to tensor<*xf32>
      call @printMemrefF32(%p) : (tensor<*xf32>) -> ()
      return
    }
    // CHECK:      sizes = [2, 3]
// CHECK-NEXT: {{\[}}[1.575{{[0-9]*}}, -0.8383{{[0-9]*}}, 1.995{{[0-9]*}}],
// CHECK-NEXT:  [0.7362{{[0-9]*}}, 2.741{{[0-9]*}}, -2.321{{[0-9]*}}]]
    
    // PEER, relu, bf16 expert weights. Expert 3 is retrieved by two heads of token 0.
    func.func @peer_relu() {
      %x = arith.constant dense<[[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]]> : tensor<2x3xf32>
      %ids = arith.constant dense<[[[3, 0], [1, 3]], [[2, 1], [0, 2]]]> : tensor<2x2x2xi32>
      %w = arith.constant dense<[[[0.5, 0.25], [0.125, 0.75]], [[1.0, 0.5], [0.25, 0.375]]]> : tensor<2x2x2xf32>
      %u = arith.constant dense<[[0.5, 0.25, -0.5], [1.0, -1.0, 0.5], [-0.25, 0.75, 0.5], [0.125, 0.5, 1.0]]> : tensor<4x3xbf16>
      %v = arith.constant dense<[[1.0, 0.0, -1.0], [0.5, 2.0, 0.25], [-1.5, 0.5, 1.0], [0.25, -0.25, 0.75]]> : tensor<4x3xbf16>
      %init = arith.constant dense<[[1.0, -1.0, 0.5], [0.0, 2.0, -2.0]]> : tensor<2x3xf32>
      %dx = tensor.cast %x : tensor<2x3xf32> to tensor<?x3xf32>
      %dids = tensor.cast %ids : tensor<2x2x2xi32> to tensor<?x2x2xi32>
      %dw = tensor.cast %w : tensor<2x2x2xf32> to tensor<?x2x2xf32>
      %dinit = tensor.cast %init : tensor<2x3xf32> to tensor<?x3xf32>
      %y = moe.single_neuron_experts
          ins(%dx, %dids, %dw, %v : tensor<?x3xf32>, tensor<?x2x2xi32>, tensor<?x2x2xf32>, tensor<4x3xbf16>)
          in_proj(%u : tensor<4x3xbf16>, relu)
          outs(%dinit : tensor<?x3xf32>) -> tensor<?x3xf32>
      %p = tensor.cast %y : tensor<?x3xf32> to tensor<*xf32>
      call @printMemrefF32(%p) : (tensor<*xf32>) -> ()
      return
    }
    // CHECK:      sizes = [2, 3]
// CHECK-NEXT: {{\[}}[1.644{{[0-9]*}}, -0.8632{{[0-9]*}}, 2.042{{[0-9]*}}],
// CHECK-NEXT:  [0.5156{{[0-9]*}}, 3, -2.140{{[0-9]*}}]]
    
    // PEER, silu, f16 expert weights. Expert 3 is retrieved by two heads of token 0.
    func.func @peer_silu() {
      %x = arith.constant dense<[[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]]> : tensor<2x3xf32>
      %ids = arith.constant dense<[[[3, 0], [1, 3]], [[2, 1], [0, 2]]]> : tensor<2x2x2xi32>
      %w = arith.constant dense<[[[0.5, 0.25], [0.125, 0.75]], [[1.0, 0.5], [0.25, 0.375]]]> : tensor<2x2x2xf32>
      %u = arith.constant dense<[[0.5, 0.25, -0.5], [1.0, -1.0, 0.5], [-0.25, 0.75, 0.5], [0.125, 0.5, 1.0]]> : tensor<4x3xf16>
      %v = arith.constant dense<[[1.0, 0.0, -1.0], [0.5, 2.0, 0.25], [-1.5, 0.5, 1.0], [0.25, -0.25, 0.75]]> : tensor<4x3xf16>
      %init = arith.constant dense<[[1.0, -1.0, 0.5], [0.0, 2.0, -2.0]]> : tensor<2x3xf32>
      %dx = tensor.cast %x : tensor<2x3xf32> to tensor<?x3xf32>
      %dids = tensor.cast %ids : tensor<2x2x2xi32> to tensor<?x2x2xi32>
      %dw = tensor.cast %w : tensor<2x2x2xf32> to tensor<?x2x2xf32>
      %dinit = tensor.cast %init : tensor<2x3xf32> to tensor<?x3xf32>
      %y = moe.single_neuron_experts
          ins(%dx, %dids, %dw, %v : tensor<?x3xf32>, tensor<?x2x2xi32>, tensor<?x2x2xf32>, tensor<4x3xf16>)
          in_proj(%u : tensor<4x3xf16>, silu)
          outs(%dinit : tensor<?x3xf32>) -> tensor<?x3xf32>
      %p = tensor.cast %y : tensor<?x3xf32> to tensor<*xf32>
      call @printMemrefF32(%p) : (tensor<*xf32>) -> ()
      return
    }
    // CHECK:      sizes = [2, 3]
// CHECK-NEXT: {{\[}}[1.480{{[0-9]*}}, -0.8260{{[0-9]*}}, 1.850{{[0-9]*}}],
// CHECK-NEXT:  [0.7341{{[0-9]*}}, 2.613{{[0-9]*}}, -2.342{{[0-9]*}}]]
    
    // PKM: result = init + sum of w * v_i.
    func.func @pkm() {
      %x = arith.constant dense<[[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]]> : tensor<2x3xf32>
      %ids = arith.constant dense<[[[3, 0], [1, 3]], [[2, 1], [0, 2]]]> : tensor<2x2x2xi32>
      %w = arith.constant dense<[[[0.5, 0.25], [0.125, 0.75]], [[1.0, 0.5], [0.25, 0.375]]]> : tensor<2x2x2xf32>
      %v = arith.constant dense<[[1.0, 0.0, -1.0], [0.5, 2.0, 0.25], [-1.5, 0.5, 1.0], [0.25, -0.25, 0.75]]> : tensor<4x3xf32>
      %init = arith.constant dense<[[1.0, -1.0, 0.5], [0.0, 2.0, -2.0]]> : tensor<2x3xf32>
      %y = moe.single_neuron_experts
          ins(%x, %ids, %w, %v : tensor<2x3xf32>, tensor<2x2x2xi32>, tensor<2x2x2xf32>, tensor<4x3xf32>)
          outs(%init : tensor<2x3xf32>) -> tensor<2x3xf32>
      %p = tensor.cast %y : tensor<2x3xf32> to tensor<*xf32>
      call @printMemrefF32(%p) : (tensor<*xf32>) -> ()
      return
    }
    // CHECK:      sizes = [2, 3]
// CHECK-NEXT: {{\[}}[1.625, -1.062{{[0-9]*}}, 1.218{{[0-9]*}}],
// CHECK-NEXT:  [-1.562{{[0-9]*}}, 3.687{{[0-9]*}}, -0.75]]

    func.func @main() {
      call @shared_gated() : () -> ()
      call @shared_plain() : () -> ()
      call @peer_gelu() : () -> ()
      call @peer_relu() : () -> ()
      call @peer_silu() : () -> ()
      call @pkm() : () -> ()
      return
    }
    