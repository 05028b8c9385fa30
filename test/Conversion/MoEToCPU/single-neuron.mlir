// RUN: moe-opt --convert-moe-to-cpu="vector-width=8 col-tile=4" -split-input-file %s | FileCheck %s

// PEER, two phases. Phase 1, an scf.forall over (token, block of 16 choices):
// coef = w · gelu(u_i · x_t) from vectorised dot tiles of 4 expert rows (bf16
// widened in registers). Phase 2, an scf.forall over (token, chunk of 256
// model columns): the chunk of the output row starts at 0, every valid choice
// m = (h, j) in order adds coef · v_i, four choices per pass over the chunk
// (rows prefetched a few choices ahead; an invalid id adds nothing), then
// init is added.
// CHECK-LABEL: func.func @peer_bf16
// CHECK-NOT:     moe.
// CHECK-DAG:     %[[V:.*]] = bufferization.to_buffer %{{.*}} read_only : tensor<4096x64xbf16> to memref<4096x64xbf16>
// CHECK-DAG:     %[[INIT:.*]] = bufferization.to_buffer %arg5 read_only : tensor<?x64xf32> to memref<?x64xf32>
// CHECK-DAG:     %[[IDS:.*]] = memref.collapse_shape %{{.*}} {{\[\[}}0], [1, 2]] : memref<?x8x16xi32> into memref<?x128xi32>
// CHECK-DAG:     %[[W:.*]] = memref.collapse_shape %{{.*}} {{\[\[}}0], [1, 2]] : memref<?x8x16xf32> into memref<?x128xf32>
// CHECK:         %[[COEF:.*]] = memref.alloc(%{{.*}}) : memref<?x128xf32>
// CHECK:         scf.forall (%{{.*}}, %{{.*}}) in (%{{.*}}, 8) {
// CHECK:           memref.load %[[IDS]]
// CHECK:           vector.load %{{.*}} : memref<4096x64xbf16>, vector<8xbf16>
// CHECK:           arith.shli %{{.*}} : vector<8xi32>
// CHECK:           vector.fma
// CHECK:           vector.reduction <add>
// CHECK:           memref.load %[[W]]
// CHECK:           math.erf
// CHECK:           memref.store %{{.*}}, %[[COEF]]
// CHECK:         %[[OUT:.*]] = memref.alloc(%{{.*}}) : memref<?x64xf32>
// CHECK:         scf.forall (%[[T:.*]], %{{.*}}) in (%{{.*}}, 1) {
// CHECK:           vector.store %{{.*}}, %[[OUT]]
// CHECK:           scf.for %[[M:.*]] = %{{.*}} to %c128 step %c4 {
// CHECK:             memref.load %[[IDS]][%[[T]], %[[M]]]
// CHECK:             memref.load %[[COEF]][%[[T]], %[[M]]]
// CHECK:             vector.broadcast
// CHECK:             scf.for
// CHECK-COUNT-4:       memref.prefetch %[[V]]
// CHECK:               vector.load %[[OUT]]
// CHECK-COUNT-4:       vector.load %[[V]]{{.*}} : memref<4096x64xbf16>, vector<8xbf16>
// CHECK:               arith.mulf %{{.*}} : vector<8xf32>
// CHECK:               arith.addf %{{.*}} : vector<8xf32>
// CHECK:               arith.select %{{.*}} : vector<8xf32>
// CHECK:               vector.store %{{.*}}, %[[OUT]]
// CHECK:           vector.load %[[INIT]]
// CHECK:           vector.load %[[OUT]]
// CHECK:           arith.addf %{{.*}} : vector<8xf32>
// CHECK:           vector.store %{{.*}}, %[[OUT]]
// CHECK:         %[[R:.*]] = bufferization.to_tensor %[[OUT]] restrict writable
// CHECK:         return %[[R]]
func.func @peer_bf16(%x: tensor<?x64xf32>, %ids: tensor<?x8x16xi32>, %w: tensor<?x8x16xf32>,
    %v: tensor<4096x64xbf16>, %u: tensor<4096x64xbf16>, %acc: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %out = moe.single_neuron_experts
      ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<4096x64xbf16>)
      in_proj(%u : tensor<4096x64xbf16>, gelu)
      outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %out : tensor<?x64xf32>
}

// -----

// PKM: the retrieval weights are the coefficients (no first phase). D = 300
// is a chunk of 256 columns and a chunk of 44 (5 vectors and 4 masked lanes).
// CHECK-LABEL: func.func @pkm_tail
// CHECK-NOT:     moe.
// CHECK-NOT:     memref.alloc(%{{.*}}) : memref<?x12xf32>
// CHECK:         %[[W:.*]] = memref.collapse_shape %{{.*}} {{\[\[}}0], [1, 2]] : memref<?x4x3xf32> into memref<?x12xf32>
// CHECK:         %[[OUT:.*]] = memref.alloc(%{{.*}}) : memref<?x300xf32>
// CHECK:         scf.forall (%{{.*}}, %[[C:.*]]) in (%{{.*}}, 2) {
// CHECK:           %[[FULL:.*]] = arith.cmpi ult, %[[C]], %c1
// CHECK:           scf.if %[[FULL]] {
// CHECK:             memref.load %[[W]]
// CHECK:             vector.load %{{.*}} : memref<25x300xf32>, vector<8xf32>
// CHECK-NOT:         vector.maskedload
// CHECK:           } else {
// CHECK:             vector.maskedstore %[[OUT]]
// CHECK:             memref.load %[[W]]
// CHECK:             vector.maskedload %{{.*}} : memref<25x300xf32>, vector<8xi1>, vector<8xf32> into vector<8xf32>
// CHECK:             vector.maskedstore %[[OUT]]
// CHECK-NOT:     moe.
// CHECK:         return
func.func @pkm_tail(%x: tensor<?x300xf32>, %ids: tensor<?x4x3xi32>, %w: tensor<?x4x3xf32>,
    %v: tensor<25x300xf32>, %acc: tensor<?x300xf32>) -> tensor<?x300xf32> {
  %out = moe.single_neuron_experts
      ins(%x, %ids, %w, %v : tensor<?x300xf32>, tensor<?x4x3xi32>, tensor<?x4x3xf32>, tensor<25x300xf32>)
      outs(%acc : tensor<?x300xf32>) -> tensor<?x300xf32>
  return %out : tensor<?x300xf32>
}
