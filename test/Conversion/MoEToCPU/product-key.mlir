// RUN: moe-opt --convert-moe-to-cpu="vector-width=8 row-tile=3 token-block=8" -split-input-file %s | FileCheck %s

// Product-key retrieval. First both sub-key tables are packed, once per call,
// into f32 panels [2, n/8, d_k/2, 8] (an scf.forall over (table, 8 sub-keys);
// bf16 rows widened in registers, read element by element when shorter than
// a vector, and transposed by shuffles). Then an
// scf.forall over (token block, head): the sub-key scores of 3 tokens x 3
// vectors of sub-keys per register tile (vector.fma, no horizontal sums), a
// branch-free lower bound of the k'-th score (lane-wise top-m), the scan in
// sub-key order that skips whole vectors below it and inserts the rest into
// the sorted top-k' lists (scf.while), the top-k of the k' x k' candidates
// straight into the result buffers, and the softmax of the k scores.
// CHECK-LABEL: func.func @product_key_bf16
// CHECK-NOT:     moe.
// CHECK-DAG:     %[[Q:.*]] = bufferization.to_buffer %{{.*}} read_only : tensor<?x16xf32> to memref<?x16xf32>
// CHECK-DAG:     %[[WOUT:.*]] = memref.alloc(%{{.*}}) : memref<?x2x8xf32>
// CHECK-DAG:     %[[IOUT:.*]] = memref.alloc(%{{.*}}) : memref<?x2x8xi32>
// CHECK:         %[[PACKED:.*]] = memref.alloc() : memref<2x4x4x8xf32>
// CHECK:         scf.forall (%{{.*}}, %{{.*}}) in (2, 4) {
// CHECK:           memref.load %{{.*}} : memref<32x4xbf16>
// CHECK:           arith.bitcast %{{.*}} : bf16 to i16
// CHECK:           vector.insert
// CHECK:           arith.shli %{{.*}} : vector<8xi32>
// CHECK:           vector.shuffle
// CHECK:           vector.store %{{.*}}, %[[PACKED]]
// CHECK:         scf.forall (%{{.*}}, %{{.*}}) in (%{{.*}}, 2) {
// CHECK:           %[[SCORES:.*]] = memref.alloca() : memref<2x3x32xf32>
// CHECK:           %[[LISTV:.*]] = memref.alloca() : memref<2x3x8xf32>
// CHECK:           %[[LISTI:.*]] = memref.alloca() : memref<2x3x8xi32>
// CHECK:           memref.load %[[Q]]
// CHECK:           vector.broadcast %{{.*}} : f32 to vector<8xf32>
// CHECK:           vector.load %[[PACKED]]
// CHECK:           vector.fma
// CHECK:           vector.store %{{.*}}, %[[SCORES]]
// CHECK:           arith.maximumf %{{.*}} : vector<8xf32>
// CHECK:           vector.reduction <minimumf>
// CHECK:           vector.reduction <or>
// CHECK:           scf.while
// CHECK:           memref.store %{{.*}}, %[[LISTV]]
// CHECK:           scf.while
// CHECK:           memref.store %{{.*}}, %[[WOUT]]
// CHECK:           memref.store %{{.*}}, %[[IOUT]]
// CHECK:           arith.maximumf %{{.*}} : f32
// CHECK:           math.exp
// CHECK:           arith.divf
// CHECK-NOT:     moe.
// CHECK:         %[[W:.*]] = bufferization.to_tensor %[[WOUT]] restrict writable
// CHECK:         %[[I:.*]] = bufferization.to_tensor %[[IOUT]] restrict writable
// CHECK:         return %[[W]], %[[I]]
func.func @product_key_bf16(%q: tensor<?x16xf32>, %k1: tensor<32x4xbf16>,
                            %k2: tensor<32x4xbf16>, %w0: tensor<?x2x8xf32>,
                            %i0: tensor<?x2x8xi32>)
    -> (tensor<?x2x8xf32>, tensor<?x2x8xi32>) {
  %w, %i = moe.product_key_topk heads(2) top_k(8) score(softmax)
      ins(%q, %k1, %k2 : tensor<?x16xf32>, tensor<32x4xbf16>, tensor<32x4xbf16>)
      outs(%w0, %i0 : tensor<?x2x8xf32>, tensor<?x2x8xi32>)
      -> tensor<?x2x8xf32>, tensor<?x2x8xi32>
  return %w, %i : tensor<?x2x8xf32>, tensor<?x2x8xi32>
}

// -----

// f32 keys: sub-key width 16 (two unmasked vectors per packed row), n = 6
// (one vector of sub-keys, two of its lanes padding), top_k > n (k' = n) and
// sigmoid weights (no max, no sum).
// CHECK-LABEL: func.func @product_key_sigmoid
// CHECK-NOT:     moe.
// CHECK:         %[[PACKED:.*]] = memref.alloc() : memref<2x1x16x8xf32>
// CHECK:         scf.forall (%{{.*}}, %{{.*}}) in (2, 1) {
// CHECK:           vector.load %{{.*}} : memref<6x16xf32>, vector<8xf32>
// CHECK:           vector.shuffle
// CHECK:         scf.forall (%{{.*}}, %{{.*}}) in (%{{.*}}, 1) {
// CHECK:           memref.alloca() : memref<2x3x8xf32>
// CHECK:           memref.alloca() : memref<2x3x6xf32>
// CHECK:           memref.alloca() : memref<2x3x6xi32>
// CHECK:           vector.fma
// CHECK:           scf.while
// CHECK-NOT:       arith.maximumf %{{.*}} : f32
// CHECK:           arith.negf
// CHECK:           math.exp
// CHECK:           arith.divf
// CHECK-NOT:     moe.
// CHECK:         return
func.func @product_key_sigmoid(%q: tensor<5x32xf32>, %k1: tensor<6x16xf32>,
                               %k2: tensor<6x16xf32>, %w0: tensor<5x1x9xf32>,
                               %i0: tensor<5x1x9xi32>)
    -> (tensor<5x1x9xf32>, tensor<5x1x9xi32>) {
  %w, %i = moe.product_key_topk heads(1) top_k(9) score(sigmoid)
      ins(%q, %k1, %k2 : tensor<5x32xf32>, tensor<6x16xf32>, tensor<6x16xf32>)
      outs(%w0, %i0 : tensor<5x1x9xf32>, tensor<5x1x9xi32>)
      -> tensor<5x1x9xf32>, tensor<5x1x9xi32>
  return %w, %i : tensor<5x1x9xf32>, tensor<5x1x9xi32>
}

// -----

// A sub-key table pair per head: each table [heads, n, d_k/2] is collapsed
// to [heads·n, d_k/2] and packed into panels [2·heads, n/8, d_k/2, 8]
// (panel 2h + s holds head h's half s, rows h·n + j); head h's scores read
// its own panels, the rest is the shared-keys kernel.
// CHECK-LABEL: func.func @product_key_keys_per_head
// CHECK-NOT:     moe.
// CHECK:         %[[K1:.*]] = memref.collapse_shape %{{.*}} {{\[\[}}0, 1], [2]] : memref<3x20x4xf32> into memref<60x4xf32>
// CHECK:         %[[K2:.*]] = memref.collapse_shape %{{.*}} {{\[\[}}0, 1], [2]] : memref<3x20x4xf32> into memref<60x4xf32>
// CHECK:         %[[PACKED:.*]] = memref.alloc() : memref<6x3x4x8xf32>
// CHECK:         scf.forall (%[[P:.*]], %{{.*}}) in (6, 3) {
// CHECK:           %[[HALF:.*]] = arith.remui %[[P]], %c2
// CHECK:           arith.select %{{.*}}, %[[K1]], %[[K2]]
// CHECK:           %[[HEAD:.*]] = arith.divui %[[P]], %c2
// CHECK:           arith.muli %[[HEAD]], %c20
// CHECK:           vector.store %{{.*}}, %[[PACKED]]
// CHECK:         scf.forall (%{{.*}}, %[[H:.*]]) in (%{{.*}}, 3) {
// CHECK:           %[[H2:.*]] = arith.muli %[[H]], %c2
// CHECK:           vector.load %[[PACKED]][%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}]
// CHECK:           vector.fma
func.func @product_key_keys_per_head(%q: tensor<?x24xf32>, %k1: tensor<3x20x4xf32>,
                                     %k2: tensor<3x20x4xf32>, %w0: tensor<?x3x4xf32>,
                                     %i0: tensor<?x3x4xi32>)
    -> (tensor<?x3x4xf32>, tensor<?x3x4xi32>) {
  %w, %i = moe.product_key_topk heads(3) top_k(4) score(softmax)
      ins(%q, %k1, %k2 : tensor<?x24xf32>, tensor<3x20x4xf32>, tensor<3x20x4xf32>)
      outs(%w0, %i0 : tensor<?x3x4xf32>, tensor<?x3x4xi32>)
      -> tensor<?x3x4xf32>, tensor<?x3x4xi32>
  return %w, %i : tensor<?x3x4xf32>, tensor<?x3x4xi32>
}
