// RUN: moe-opt --moe-tile-token-ops -split-input-file %s | FileCheck %s

// The router features of issue 9 are token-parallel and fuse into the
// route's loop: GPT-OSS's logit bias (a linalg.broadcast init), Gemma 4's
// input RMSNorm (its weight read whole) and Laguna's soft-cap.

// CHECK-LABEL: func.func @router_features
// CHECK-SAME:    (%[[X:.*]]: tensor<?x64xf32>, %[[NORM:.*]]: tensor<64xf32>, %[[GATE:.*]]: tensor<8x64xf32>, %[[BIAS:.*]]: tensor<8xf32>)
// CHECK-NOT:     linalg.broadcast
// CHECK:         %[[R:.*]]:2 = scf.forall (%[[I:.*]]) = (0) to (%{{.*}}) step (16) shared_outs(%[[WO:.*]] = %{{.*}}, %[[IO:.*]] = %{{.*}})
// CHECK:           %[[XT:.*]] = tensor.extract_slice %[[X]][%[[I]], 0]
// CHECK:           %[[XR:.*]] = moe.rms_norm %[[XT]], %[[NORM]] : tensor<?x64xf32>, tensor<64xf32>
// CHECK:           %[[BS:.*]] = tensor.extract_slice %[[BIAS]][0] [8] [1]
// CHECK:           %[[B:.*]] = linalg.broadcast ins(%[[BS]] : tensor<8xf32>) outs(%{{.*}} : tensor<?x8xf32>) dimensions = [0]
// CHECK:           %[[L:.*]] = moe.linear ins(%[[XR]], %[[GATE]] : tensor<?x64xf32>, tensor<8x64xf32>) outs(%[[B]] : tensor<?x8xf32>)
// CHECK:           %[[C:.*]] = moe.softcap %[[L]] cap(3.000000e+01) : tensor<?x8xf32>
// CHECK:           %[[W:.*]], %[[IDS:.*]] = moe.route %[[C]] top_k(2)
// CHECK:             tensor.parallel_insert_slice %[[W]] into %[[WO]]
// CHECK:             tensor.parallel_insert_slice %[[IDS]] into %[[IO]]
// CHECK:         moe.dispatch_plan %[[R]]#1, %[[R]]#0
// CHECK-NOT:     moe.softcap
// CHECK-NOT:     linalg.broadcast

func.func @router_features(%x: tensor<?x64xf32>, %norm: tensor<64xf32>, %gate: tensor<8x64xf32>,
                           %bias: tensor<8xf32>) -> (tensor<?x2xf32>, tensor<?x2xi32>, tensor<8xi32>) {
  %c0 = arith.constant 0 : index
  %t = tensor.dim %x, %c0 : tensor<?x64xf32>
  %e = tensor.empty(%t) : tensor<?x8xf32>
  %init = linalg.broadcast ins(%bias : tensor<8xf32>) outs(%e : tensor<?x8xf32>) dimensions = [0]
  %xr = moe.rms_norm %x, %norm : tensor<?x64xf32>, tensor<64xf32>
  %logits = moe.linear ins(%xr, %gate : tensor<?x64xf32>, tensor<8x64xf32>) outs(%init : tensor<?x8xf32>) -> tensor<?x8xf32>
  %capped = moe.softcap %logits cap(30.0) : tensor<?x8xf32>
  %w, %ids = moe.route %capped top_k(2) score(sigmoid) order(score_then_topk) {normalize = true}
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  %counts, %offsets, %tokens, %slot_w, %dropped = moe.dispatch_plan %ids, %w experts(8) top_k(2)
      : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return %w, %ids, %counts : tensor<?x2xf32>, tensor<?x2xi32>, tensor<8xi32>
}
