// RUN: moe-opt %s --moe-lower-to-cpu | mlir-runner -e main -entry-point-result=void -shared-libs=%mlir_runner_utils,%mlir_c_runner_utils,%moe_runtime | FileCheck %s
// RUN: moe-opt %s --moe-lower-to-cpu=reference=true | mlir-runner -e main -entry-point-result=void -shared-libs=%mlir_runner_utils,%mlir_c_runner_utils,%moe_runtime | FileCheck %s

// A whole routed-expert layer from given routing decisions: dispatch_plan,
// gather, expert_ffn (swiglu), combine into the residual x. T = 5, D = 2,
// E = 3, F = 2, top-2. Expected values come from an independent NumPy model
// of the semantics (float64); the patterns check 4 significant digits.

func.func private @printMemrefF32(tensor<*xf32> {bufferization.access = "read"})
func.func private @printMemrefI32(tensor<*xi32> {bufferization.access = "read"})

func.func @layer(%x: tensor<?x2xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>,
                 %w1: tensor<3x2x2xf32>, %w2: tensor<3x2x2xf32>, %w3: tensor<3x2x2xf32>,
                 %counts: tensor<3xi32>, %offsets: tensor<4xi32>, %tokens: tensor<?xi32>,
                 %slot_w: tensor<?xf32>, %dropped: tensor<i32>) {
  %c0 = arith.constant 0 : index
  %slots = tensor.dim %tokens, %c0 : tensor<?xi32>
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty(%slots) : tensor<?x2xf32>
  %r0 = linalg.fill ins(%zero : f32) outs(%e : tensor<?x2xf32>) -> tensor<?x2xf32>
  %rows = moe.gather ins(%x, %tokens : tensor<?x2xf32>, tensor<?xi32>)
                     outs(%r0 : tensor<?x2xf32>) -> tensor<?x2xf32>
  %y = moe.expert_ffn swiglu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x2xf32>, tensor<4xi32>, tensor<3x2x2xf32>, tensor<3x2x2xf32>)
      up(%w3 : tensor<3x2x2xf32>)
      outs(%r0 : tensor<?x2xf32>) -> tensor<?x2xf32>
  %out = moe.combine ins(%y, %tokens, %slot_w : tensor<?x2xf32>, tensor<?xi32>, tensor<?xf32>)
                     outs(%x : tensor<?x2xf32>) -> tensor<?x2xf32>
  %d = tensor.cast %dropped : tensor<i32> to tensor<*xi32>
  call @printMemrefI32(%d) : (tensor<*xi32>) -> ()
  %u = tensor.cast %out : tensor<?x2xf32> to tensor<*xf32>
  call @printMemrefF32(%u) : (tensor<*xf32>) -> ()
  return
}

func.func @main() {
  %x0 = arith.constant dense<[[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0], [1.0, 1.0], [0.25, -0.5]]> : tensor<5x2xf32>
  %ids0 = arith.constant dense<[[2, 0], [0, 1], [2, 1], [0, 2], [1, 0]]> : tensor<5x2xi32>
  %w0 = arith.constant dense<[[0.625, 0.375], [0.5, 0.5], [0.75, 0.25], [0.875, 0.125], [0.5625, 0.4375]]> : tensor<5x2xf32>
  %w1 = arith.constant dense<[[[0.5, -0.25], [1.0, 0.5]], [[0.25, 0.5], [-1.0, 0.125]], [[0.75, -0.5], [0.5, 0.5]]]> : tensor<3x2x2xf32>
  %w2 = arith.constant dense<[[[1.0, -0.5], [0.5, 0.75]], [[-0.25, 1.0], [0.75, 0.5]], [[0.5, 0.25], [-1.0, 0.5]]]> : tensor<3x2x2xf32>
  %w3 = arith.constant dense<[[[1.0, 0.5], [-0.25, 1.0]], [[-0.5, 1.0], [0.25, 0.25]], [[1.0, -0.75], [0.5, 0.25]]]> : tensor<3x2x2xf32>
  %x = tensor.cast %x0 : tensor<5x2xf32> to tensor<?x2xf32>
  %ids = tensor.cast %ids0 : tensor<5x2xi32> to tensor<?x2xi32>
  %w = tensor.cast %w0 : tensor<5x2xf32> to tensor<?x2xf32>

  // Dropless.
  %c, %o, %t, %sw, %d = moe.dispatch_plan %ids, %w experts(3) top_k(2)
      : tensor<?x2xi32>, tensor<?x2xf32>
      -> tensor<3xi32>, tensor<4xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  call @layer(%x, %ids, %w, %w1, %w2, %w3, %c, %o, %t, %sw, %d)
      : (tensor<?x2xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<3x2x2xf32>, tensor<3x2x2xf32>, tensor<3x2x2xf32>,
         tensor<3xi32>, tensor<4xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>) -> ()

  // Capacity ceil(0.5 * 5 * 2 / 3) = 2: some contributions are dropped and
  // their tokens keep only the residual and the kept experts.
  %c2, %o2, %t2, %sw2, %d2 = moe.dispatch_plan %ids, %w experts(3) top_k(2)
      capacity(0.5) overflow(drop) priority(token_order)
      : tensor<?x2xi32>, tensor<?x2xf32>
      -> tensor<3xi32>, tensor<4xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  call @layer(%x, %ids, %w, %w1, %w2, %w3, %c2, %o2, %t2, %sw2, %d2)
      : (tensor<?x2xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<3x2x2xf32>, tensor<3x2x2xf32>, tensor<3x2x2xf32>,
         tensor<3xi32>, tensor<4xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>) -> ()
  return
}
// CHECK:      [0]
// CHECK:      sizes = [5, 2]
// CHECK-NEXT: {{\[}}[0.7412{{[0-9]*}}, -1.482{{[0-9]*}}],
// CHECK-NEXT:  [1.873{{[0-9]*}}, 0.2837{{[0-9]*}}],
// CHECK-NEXT:  [-0.5384{{[0-9]*}}, 1.841{{[0-9]*}}],
// CHECK-NEXT:  [0.8013{{[0-9]*}}, 1.725{{[0-9]*}}],
// CHECK-NEXT:  [0.2471{{[0-9]*}}, -0.4752{{[0-9]*}}]]
// CHECK:      [4]
// CHECK:      sizes = [5, 2]
// CHECK-NEXT: {{\[}}[0.7412{{[0-9]*}}, -1.482{{[0-9]*}}],
// CHECK-NEXT:  [1.873{{[0-9]*}}, 0.2837{{[0-9]*}}],
// CHECK-NEXT:  [-0.5120{{[0-9]*}}, 1.562{{[0-9]*}}],
// CHECK-NEXT:  [0.7820{{[0-9]*}}, 1.695{{[0-9]*}}],
// CHECK-NEXT:  [0.2471{{[0-9]*}}, -0.4752{{[0-9]*}}]]
