// RUN: moe-opt --moe-tile-token-ops -split-input-file %s | FileCheck %s
// RUN: moe-opt --moe-tile-token-ops="max-fused-weight-bytes=1024" -split-input-file %s | FileCheck %s --check-prefix=CUT
// RUN: moe-opt --moe-tile-token-ops="token-tile=8" -split-input-file %s | FileCheck %s --check-prefix=T8
// The CUDA pipeline's setting: one token per tile, routing chains only, no
// producer with weights inside.
// RUN: moe-opt --moe-tile-token-ops="token-tile=1 max-fused-weight-bytes=0 routing-only" -split-input-file %s | FileCheck %s --check-prefix=GPU
// RUN: not moe-opt --moe-tile-token-ops="routing-only=maybe" %s 2>&1 | FileCheck %s --check-prefix=BAD-ROUTING
// BAD-ROUTING: for the --routing-only option: 'maybe' is invalid value for boolean argument

// The router chain: the router matmul (and its zero init) fuses into the
// route's loop over tiles of 16 tokens; the dispatch plan, which reduces
// over tokens, stays outside and reads the loop's results.

// CHECK-LABEL: func.func @router
// CHECK-SAME:    (%[[X:.*]]: tensor<?x64xf32>, %[[GATE:.*]]: tensor<8x64xf32>)
// CHECK:         %[[T:.*]] = tensor.dim %[[X]]
// CHECK:         %[[E:.*]] = tensor.empty(%[[T]]) : tensor<?x8xf32>
// CHECK:         %[[R:.*]]:2 = scf.forall (%[[I:.*]]) = (0) to (%[[T]]) step (16) shared_outs(%[[WO:.*]] = %{{.*}}, %[[IO:.*]] = %{{.*}})
// CHECK:           %[[SZ:.*]] = affine.min #{{.*}}(%[[I]])[%[[T]]]
// CHECK:           %[[XT:.*]] = tensor.extract_slice %[[X]][%[[I]], 0] [%[[SZ]], 64] [1, 1]
// CHECK:           %[[ET:.*]] = tensor.extract_slice %[[E]][%[[I]], 0] [%[[SZ]], 8] [1, 1]
// CHECK:           %[[Z:.*]] = linalg.fill ins(%{{.*}} : f32) outs(%[[ET]] : tensor<?x8xf32>)
// CHECK:           %[[L:.*]] = moe.linear ins(%[[XT]], %[[GATE]] : tensor<?x64xf32>, tensor<8x64xf32>) outs(%[[Z]] : tensor<?x8xf32>)
// CHECK:           %[[W:.*]], %[[IDS:.*]] = moe.route %[[L]] top_k(2)
// CHECK:             tensor.parallel_insert_slice %[[W]] into %[[WO]][%[[I]], 0] [%[[SZ]], 2] [1, 1]
// CHECK:             tensor.parallel_insert_slice %[[IDS]] into %[[IO]][%[[I]], 0] [%[[SZ]], 2] [1, 1]
// CHECK:         moe.dispatch_plan %[[R]]#1, %[[R]]#0
// CHECK-NOT:     moe.linear

// A router weight over max-fused-weight-bytes stays outside the loop.
// CUT-LABEL: func.func @router
// CUT:         %[[L:.*]] = moe.linear
// CUT:         scf.forall
// CUT:           %[[LT:.*]] = tensor.extract_slice %[[L]]
// CUT-NOT:       moe.linear
// CUT:           moe.route %[[LT]]

// T8-LABEL: func.func @router
// T8:         scf.forall (%{{.*}}) = (0) to (%{{.*}}) step (8)

// GPU-LABEL: func.func @router
// GPU:         %[[L:.*]] = moe.linear
// GPU:         scf.forall (%{{.*}}) in (%{{.*}})
// GPU:           tensor.extract_slice %[[L]]
// GPU-NOT:       moe.linear
// GPU:           moe.route
// GPU:         moe.dispatch_plan

func.func @router(%x: tensor<?x64xf32>, %gate: tensor<8x64xf32>) -> (tensor<?x2xf32>, tensor<?x2xi32>, tensor<8xi32>) {
  %c0 = arith.constant 0 : index
  %t = tensor.dim %x, %c0 : tensor<?x64xf32>
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty(%t) : tensor<?x8xf32>
  %init = linalg.fill ins(%zero : f32) outs(%e : tensor<?x8xf32>) -> tensor<?x8xf32>
  %logits = moe.linear ins(%x, %gate : tensor<?x64xf32>, tensor<8x64xf32>) outs(%init : tensor<?x8xf32>) -> tensor<?x8xf32>
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(score_then_topk) {normalize = true}
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  %counts, %offsets, %tokens, %slot_w, %dropped = moe.dispatch_plan %ids, %w experts(8) top_k(2)
      : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return %w, %ids, %counts : tensor<?x2xf32>, tensor<?x2xi32>, tensor<8xi32>
}

// -----

// PEER: the query projection, its BatchNorm, the retrieval and the expert sum
// in one loop; the retrieval's ids and weights, results of the layer too,
// are written by the loop's single retrieval into two more shared outputs.

// CHECK-LABEL: func.func @peer
// CHECK:         %[[R:.*]]:3 = scf.forall (%[[I:.*]]) = (0) to (%{{.*}}) step (16) shared_outs(%[[OUT:.*]] = %{{.*}}, %[[PWO:.*]] = %{{.*}}, %[[PIO:.*]] = %{{.*}})
// CHECK:           %[[XT:.*]] = tensor.extract_slice %arg0
// CHECK:           %[[Q:.*]] = moe.linear ins(%[[XT]], %arg1
// CHECK:           %[[QN:.*]] = moe.batch_norm %[[Q]], %arg2, %arg3, %arg4, %arg5 : tensor<?x64xf32>, tensor<64xf32>
// CHECK:           %[[PW:.*]], %[[PI:.*]] = moe.product_key_topk heads(2) top_k(4) score(softmax) ins(%[[QN]], %arg6, %arg7
// CHECK-NOT:       moe.product_key_topk
// CHECK:           %[[N:.*]] = moe.single_neuron_experts ins(%[[XT]], %[[PI]], %[[PW]], %arg9 : {{.*}}) in_proj(%arg8
// CHECK:             tensor.parallel_insert_slice %[[N]] into %[[OUT]]
// CHECK:             tensor.parallel_insert_slice %[[PW]] into %[[PWO]]
// CHECK:             tensor.parallel_insert_slice %[[PI]] into %[[PIO]]
// CHECK:         return %[[R]]#0, %[[R]]#2, %[[R]]#1

// The 8 KiB query projection is over a 1 KiB budget; the BatchNorm
// statistics (1 KiB) and the sub-keys (512 B) are not.
// CUT-LABEL: func.func @peer
// CUT:         %[[Q:.*]] = moe.linear
// CUT:         scf.forall
// CUT:           %[[QT:.*]] = tensor.extract_slice %[[Q]]
// CUT:           moe.batch_norm %[[QT]]
// CUT:           moe.product_key_topk
// CUT:           moe.single_neuron_experts

// Too much work for one thread per token: PEER is not tiled for the GPU.
// GPU-LABEL: func.func @peer
// GPU-NOT:     scf.forall
// GPU:         return

func.func @peer(%x: tensor<?x64xf32>, %wq: tensor<64x64xbf16>, %m: tensor<64xf32>, %v: tensor<64xf32>,
    %s: tensor<64xf32>, %b: tensor<64xf32>, %k1: tensor<8x16xbf16>, %k2: tensor<8x16xbf16>,
    %u: tensor<64x64xbf16>, %vo: tensor<64x64xbf16>) -> (tensor<?x64xf32>, tensor<?x2x4xi32>, tensor<?x2x4xf32>) {
  %c0 = arith.constant 0 : index
  %t = tensor.dim %x, %c0 : tensor<?x64xf32>
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty(%t) : tensor<?x64xf32>
  %qi = linalg.fill ins(%zero : f32) outs(%e : tensor<?x64xf32>) -> tensor<?x64xf32>
  %q = moe.linear ins(%x, %wq : tensor<?x64xf32>, tensor<64x64xbf16>) outs(%qi : tensor<?x64xf32>) -> tensor<?x64xf32>
  %qn = moe.batch_norm %q, %m, %v, %s, %b : tensor<?x64xf32>, tensor<64xf32>
  %w0 = tensor.empty(%t) : tensor<?x2x4xf32>
  %i0 = tensor.empty(%t) : tensor<?x2x4xi32>
  %pw, %pi = moe.product_key_topk heads(2) top_k(4) score(softmax)
      ins(%qn, %k1, %k2 : tensor<?x64xf32>, tensor<8x16xbf16>, tensor<8x16xbf16>)
      outs(%w0, %i0 : tensor<?x2x4xf32>, tensor<?x2x4xi32>) -> tensor<?x2x4xf32>, tensor<?x2x4xi32>
  %e2 = tensor.empty(%t) : tensor<?x64xf32>
  %acc = linalg.fill ins(%zero : f32) outs(%e2 : tensor<?x64xf32>) -> tensor<?x64xf32>
  %out = moe.single_neuron_experts
      ins(%x, %pi, %pw, %vo : tensor<?x64xf32>, tensor<?x2x4xi32>, tensor<?x2x4xf32>, tensor<64x64xbf16>)
      in_proj(%u : tensor<64x64xbf16>, gelu)
      outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %out, %pi, %pw : tensor<?x64xf32>, tensor<?x2x4xi32>, tensor<?x2x4xf32>
}

// -----

// T = 20 static, not a multiple of 16: the last tile holds 4 tokens.
// DeepSeek-style group routing with a selection bias (read whole). The
// logits also feed the z-loss, which reduces over tokens and stays outside:
// the loop writes the logits tile it computes into one more shared output.

// CHECK-LABEL: func.func @static_tail
// CHECK:         %[[L0:.*]] = linalg.fill {{.*}} -> tensor<20x8xf32>
// CHECK:         %[[R:.*]]:3 = scf.forall (%[[I:.*]]) = (0) to (20) step (16) shared_outs(%{{.*}} = %{{.*}}, %{{.*}} = %{{.*}}, %[[LO:.*]] = %[[L0]])
// CHECK:           %[[SZ:.*]] = affine.min #{{.*}}(%[[I]])
// CHECK:           %[[XT:.*]] = tensor.extract_slice %arg0[%[[I]], 0] [%[[SZ]], 32] [1, 1] : tensor<20x32xf32> to tensor<?x32xf32>
// CHECK:           %[[L:.*]] = moe.linear ins(%[[XT]], %arg1
// CHECK:           moe.route %[[L]] top_k(3) score(sigmoid) order(score_then_topk) groups(4, keep 2, max) bias(%arg2 : tensor<8xf32>) : tensor<?x8xf32> -> tensor<?x3xf32>, tensor<?x3xi32>
// CHECK:             tensor.parallel_insert_slice %[[L]] into %[[LO]][%[[I]], 0] [%[[SZ]], 8] [1, 1]
// CHECK:         moe.aux_loss z_loss %[[R]]#2
// CHECK-NOT:     moe.linear

func.func @static_tail(%x: tensor<20x32xf32>, %gate: tensor<8x32xf32>, %bias: tensor<8xf32>) -> (tensor<20x3xf32>, tensor<20x3xi32>, tensor<f32>) {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<20x8xf32>
  %init = linalg.fill ins(%zero : f32) outs(%e : tensor<20x8xf32>) -> tensor<20x8xf32>
  %logits = moe.linear ins(%x, %gate : tensor<20x32xf32>, tensor<8x32xf32>) outs(%init : tensor<20x8xf32>) -> tensor<20x8xf32>
  %w, %ids = moe.route %logits top_k(3) score(sigmoid) order(score_then_topk) groups(4, keep 2, max) bias(%bias : tensor<8xf32>)
      : tensor<20x8xf32> -> tensor<20x3xf32>, tensor<20x3xi32>
  %z = moe.aux_loss z_loss %logits {coefficient = 1.0e-03 : f64} : tensor<20x8xf32> -> tensor<f32>
  return %w, %ids, %z : tensor<20x3xf32>, tensor<20x3xi32>, tensor<f32>
}

// -----

// A noisy route (noise keyed by the token's position) and a rank-1 top-k (its
// only dim is the one it reduces) are not tiled.

// CHECK-LABEL: func.func @not_tiled
// CHECK-NOT:     scf.forall
// CHECK:         moe.route
// CHECK:         moe.topk
// CHECK-NOT:     scf.forall

func.func @not_tiled(%l: tensor<?x8xf32>, %n: tensor<?x8xf32>, %seed: i64, %row: tensor<64xf32>) -> (tensor<?x2xf32>, tensor<?x2xi32>, tensor<4xf32>, tensor<4xi32>) {
  %w, %ids = moe.route %l top_k(2) score(softmax) order(topk_then_score) noise(%n, %seed : tensor<?x8xf32>)
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  %v0 = tensor.empty() : tensor<4xf32>
  %i0 = tensor.empty() : tensor<4xi32>
  %v, %i = moe.topk ins(%row : tensor<64xf32>) outs(%v0, %i0 : tensor<4xf32>, tensor<4xi32>) -> tensor<4xf32>, tensor<4xi32>
  return %w, %ids, %v, %i : tensor<?x2xf32>, tensor<?x2xi32>, tensor<4xf32>, tensor<4xi32>
}
