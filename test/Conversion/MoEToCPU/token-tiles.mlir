// RUN: moe-opt --moe-tile-token-ops="token-tile=4" --convert-moe-to-cpu="vector-width=8" -split-input-file %s | FileCheck %s

// The fast kernels inside a token tile loop (moe-tile-token-ops): the router
// matmul still takes the row-dot kernel, reading the tile of x in place (a
// strided view at the tile's offset, no copy), and writes a buffer the route
// (reference lowering) reads.

// CHECK-LABEL: func.func @router
// CHECK:         scf.forall (%{{.*}}) = (0) to (%{{.*}}) step (4) shared_outs
// CHECK:           %[[XT:.*]] = tensor.extract_slice %arg0
// CHECK:           bufferization.to_buffer %[[XT]] read_only : tensor<?x32xf32> to memref<?x32xf32, strided<[32, 1], offset: ?>>
// CHECK:           scf.forall
// CHECK:             vector.fma
// CHECK:           moe.route
// CHECK-NOT:     moe.linear
func.func @router(%x: tensor<?x32xf32>, %gate: tensor<8x32xf32>) -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %c0 = arith.constant 0 : index
  %t = tensor.dim %x, %c0 : tensor<?x32xf32>
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty(%t) : tensor<?x8xf32>
  %init = linalg.fill ins(%zero : f32) outs(%e : tensor<?x8xf32>) -> tensor<?x8xf32>
  %logits = moe.linear ins(%x, %gate : tensor<?x32xf32>, tensor<8x32xf32>) outs(%init : tensor<?x8xf32>) -> tensor<?x8xf32>
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(score_then_topk)
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %w, %ids : tensor<?x2xf32>, tensor<?x2xi32>
}

// -----

// PEER in one loop over token tiles: the sub-key tables are packed once,
// before the loop, not once per tile; the retrieval and the expert sum of a
// tile run on the tile (x read in place).

// CHECK-LABEL: func.func @peer
// CHECK:         %[[K1:.*]] = bufferization.to_buffer %arg2 read_only : tensor<4x4xbf16> to memref<4x4xbf16>
// CHECK:         %[[K2:.*]] = bufferization.to_buffer %arg3 read_only : tensor<4x4xbf16> to memref<4x4xbf16>
// CHECK:         %[[PACKED:.*]] = memref.alloc() : memref<2x1x4x8xf32>
// CHECK:         scf.forall (%{{.*}}, %{{.*}}) in (2, 1) {
// CHECK:           vector.store %{{.*}}, %[[PACKED]][
// CHECK:         scf.forall (%{{.*}}) = (0) to (%{{.*}}) step (4) shared_outs
// CHECK-NOT:       memref.alloc() : memref<2x1x4x8xf32>
// CHECK:           %[[XT:.*]] = tensor.extract_slice %arg0
// CHECK:           %[[QT:.*]] = tensor.extract_slice %arg1
// CHECK:           bufferization.to_buffer %[[QT]] read_only : tensor<?x16xf32> to memref<?x16xf32, strided<[16, 1], offset: ?>>
// CHECK:           scf.forall
// CHECK:             vector.load %[[PACKED]][
// CHECK:           bufferization.to_buffer %[[XT]] read_only : tensor<?x16xf32> to memref<?x16xf32, strided<[16, 1], offset: ?>>
// CHECK:           scf.forall
// CHECK:             math.erf
// CHECK:         scf.forall.in_parallel
// CHECK-NOT:     moe.product_key_topk
// CHECK-NOT:     moe.single_neuron_experts
func.func @peer(%x: tensor<?x16xf32>, %q: tensor<?x16xf32>, %k1: tensor<4x4xbf16>, %k2: tensor<4x4xbf16>,
    %u: tensor<16x16xf32>, %v: tensor<16x16xf32>) -> tensor<?x16xf32> {
  %c0 = arith.constant 0 : index
  %t = tensor.dim %x, %c0 : tensor<?x16xf32>
  %zero = arith.constant 0.0 : f32
  %w0 = tensor.empty(%t) : tensor<?x2x3xf32>
  %i0 = tensor.empty(%t) : tensor<?x2x3xi32>
  %w, %ids = moe.product_key_topk heads(2) top_k(3) score(softmax)
      ins(%q, %k1, %k2 : tensor<?x16xf32>, tensor<4x4xbf16>, tensor<4x4xbf16>)
      outs(%w0, %i0 : tensor<?x2x3xf32>, tensor<?x2x3xi32>) -> tensor<?x2x3xf32>, tensor<?x2x3xi32>
  %e = tensor.empty(%t) : tensor<?x16xf32>
  %acc = linalg.fill ins(%zero : f32) outs(%e : tensor<?x16xf32>) -> tensor<?x16xf32>
  %out = moe.single_neuron_experts
      ins(%x, %ids, %w, %v : tensor<?x16xf32>, tensor<?x2x3xi32>, tensor<?x2x3xf32>, tensor<16x16xf32>)
      in_proj(%u : tensor<16x16xf32>, gelu)
      outs(%acc : tensor<?x16xf32>) -> tensor<?x16xf32>
  return %out : tensor<?x16xf32>
}
