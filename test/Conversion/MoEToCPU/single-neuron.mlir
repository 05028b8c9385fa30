// RUN: moe-opt --convert-moe-to-cpu="vector-width=8 col-tile=4 col-block=64" -split-input-file %s | FileCheck %s

// PEER: phase 1, an scf.forall over (token, block of 16 choices): the
// w · act(u_i · x_t) coefficients from vectorised dot tiles (bf16 rows
// widened in registers); phase 2, an scf.forall over (token, chunk of 64
// columns): init + Σ coef · v_i in 8 vector registers, invalid ids skipped.
// CHECK-LABEL: func.func @peer_bf16
// CHECK-NOT:     moe.
// CHECK-DAG:     %[[IDS:.*]] = memref.collapse_shape %{{.*}} {{\[\[}}0], [1, 2]] : memref<?x8x16xi32> into memref<?x128xi32>
// CHECK-DAG:     %[[COEF:.*]] = memref.alloc(%{{.*}}) : memref<?x128xf32>
// CHECK:         scf.forall (%[[T:.*]], %{{.*}}) in (%{{.*}}, 8)
// CHECK:           vector.load %{{.*}} : memref<4096x64xbf16>, vector<8xbf16>
// CHECK:           arith.shli
// CHECK:           vector.fma
// CHECK:           vector.reduction <add>
// CHECK:           math.erf
// CHECK:           memref.store %{{.*}}, %[[COEF]]
// CHECK:         %[[OUT:.*]] = memref.alloc(%{{.*}}) : memref<?x64xf32>
// CHECK:         scf.forall (%{{.*}}, %{{.*}}) in (%{{.*}}, 1)
// CHECK:           scf.for {{.*}} iter_args(
// CHECK:             memref.load %[[IDS]]
// CHECK:             scf.if
// CHECK:               memref.load %[[COEF]]
// CHECK:               vector.broadcast
// CHECK:               vector.load %{{.*}} : memref<4096x64xbf16>, vector<8xbf16>
// CHECK:               arith.mulf %{{.*}} : vector<8xf32>
// CHECK:               arith.addf %{{.*}} : vector<8xf32>
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

// PKM: the retrieval weights are the coefficients (no first phase); D = 100
// is one full chunk of 64 columns and a tail of 36 (4 vectors + 4 masked
// lanes).
// CHECK-LABEL: func.func @pkm_tail
// CHECK-NOT:     moe.
// CHECK-DAG:     %[[W:.*]] = memref.collapse_shape %{{.*}} {{\[\[}}0], [1, 2]] : memref<?x4x3xf32> into memref<?x12xf32>
// CHECK-NOT:     memref.alloc(%{{.*}}) : memref<?x12xf32>
// CHECK:         %[[OUT:.*]] = memref.alloc(%{{.*}}) : memref<?x100xf32>
// CHECK:         scf.forall (%{{.*}}, %{{.*}}) in (%{{.*}}, 2)
// CHECK:           scf.if
// CHECK:             memref.load %[[W]]
// CHECK:             vector.load %{{.*}} : memref<25x100xf32>, vector<8xf32>
// CHECK:           } else {
// CHECK:             vector.maskedload %{{.*}} : memref<25x100xf32>, vector<8xi1>, vector<8xf32> into vector<8xf32>
// CHECK:             vector.maskedstore %[[OUT]]
// CHECK-NOT:     moe.
// CHECK:         return
func.func @pkm_tail(%x: tensor<?x100xf32>, %ids: tensor<?x4x3xi32>, %w: tensor<?x4x3xf32>,
    %v: tensor<25x100xf32>, %acc: tensor<?x100xf32>) -> tensor<?x100xf32> {
  %out = moe.single_neuron_experts
      ins(%x, %ids, %w, %v : tensor<?x100xf32>, tensor<?x4x3xi32>, tensor<?x4x3xf32>, tensor<25x100xf32>)
      outs(%acc : tensor<?x100xf32>) -> tensor<?x100xf32>
  return %out : tensor<?x100xf32>
}
