// RUN: moe-opt %s --transform-interpreter --canonicalize --cse -split-input-file | FileCheck %s

// TilingInterface of the token-parallel ops: one parallel dim (tokens; for
// moe.gather, slots). A tile is the same op on rows [off, off + 4) of the
// token-indexed operands; weights, sub-keys, BatchNorm statistics and the
// selection bias are read whole.

// CHECK-LABEL: func.func @linear
// CHECK-SAME:    (%[[X:.*]]: tensor<16x64xf32>, %[[W:.*]]: tensor<8x64xbf16>, %[[INIT:.*]]: tensor<16x8xf32>)
// CHECK:         scf.forall (%[[I:.*]]) in (4) shared_outs(%[[OUT:.*]] = %[[INIT]])
// CHECK:           %[[OFF:.*]] = affine.apply #{{.*}}(%[[I]])
// CHECK:           %[[XT:.*]] = tensor.extract_slice %[[X]][%[[OFF]], 0] [4, 64] [1, 1] : tensor<16x64xf32> to tensor<4x64xf32>
// CHECK:           %[[OT:.*]] = tensor.extract_slice %[[OUT]][%[[OFF]], 0] [4, 8] [1, 1]
// CHECK:           %[[R:.*]] = moe.linear ins(%[[XT]], %[[W]] : tensor<4x64xf32>, tensor<8x64xbf16>) outs(%[[OT]] : tensor<4x8xf32>)
// CHECK:           tensor.parallel_insert_slice %[[R]] into %[[OUT]][%[[OFF]], 0] [4, 8] [1, 1]
func.func @linear(%x: tensor<16x64xf32>, %w: tensor<8x64xbf16>, %init: tensor<16x8xf32>) -> tensor<16x8xf32> {
  %r = moe.linear ins(%x, %w : tensor<16x64xf32>, tensor<8x64xbf16>) outs(%init : tensor<16x8xf32>) -> tensor<16x8xf32>
  return %r : tensor<16x8xf32>
}

module attributes {transform.with_named_sequence} {
  transform.named_sequence @__transform_main(%root: !transform.any_op {transform.readonly}) {
    %op = transform.structured.match ops{["moe.linear"]} in %root : (!transform.any_op) -> !transform.any_op
    %tiled, %loop = transform.structured.tile_using_forall %op tile_sizes [4] : (!transform.any_op) -> (!transform.any_op, !transform.any_op)
    transform.yield
  }
}

// -----

// moe.route has no destinations: the loop's come from its reified shape.
// The router matmul fuses into the route's loop (generateResultTileValue).

// CHECK-LABEL: func.func @route_fuses_linear
// CHECK-SAME:    (%[[X:.*]]: tensor<?x64xf32>, %[[W:.*]]: tensor<8x64xf32>, %[[BIAS:.*]]: tensor<8xf32>)
// CHECK:         %[[T:.*]] = tensor.dim %[[X]], %c0
// CHECK-DAG:     %[[W0:.*]] = tensor.empty(%[[T]]) : tensor<?x2xf32>
// CHECK-DAG:     %[[I0:.*]] = tensor.empty(%[[T]]) : tensor<?x2xi32>
// CHECK:         scf.forall (%[[I:.*]]) in (%{{.*}}) shared_outs(%[[WO:.*]] = %[[W0]], %[[IO:.*]] = %[[I0]])
// CHECK:           %[[OFF:.*]] = affine.apply #{{.*}}(%[[I]])
// CHECK:           %[[SZ:.*]] = affine.min #{{.*}}(%[[I]])[%[[T]]]
// CHECK:           %[[XT:.*]] = tensor.extract_slice %[[X]][%[[OFF]], 0] [%[[SZ]], 64] [1, 1]
// CHECK:           %[[L:.*]] = moe.linear ins(%[[XT]], %[[W]] : tensor<?x64xf32>, tensor<8x64xf32>)
// CHECK:           %[[RW:.*]], %[[RI:.*]] = moe.route %[[L]] top_k(2) score(softmax) order(score_then_topk) bias(%[[BIAS]] : tensor<8xf32>)
// CHECK-SAME:        : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
// CHECK:           tensor.parallel_insert_slice %[[RW]] into %[[WO]][%[[OFF]], 0] [%[[SZ]], 2] [1, 1]
// CHECK:           tensor.parallel_insert_slice %[[RI]] into %[[IO]][%[[OFF]], 0] [%[[SZ]], 2] [1, 1]
// CHECK:         return
func.func @route_fuses_linear(%x: tensor<?x64xf32>, %w: tensor<8x64xf32>, %bias: tensor<8xf32>) -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %c0 = arith.constant 0 : index
  %t = tensor.dim %x, %c0 : tensor<?x64xf32>
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty(%t) : tensor<?x8xf32>
  %init = linalg.fill ins(%zero : f32) outs(%e : tensor<?x8xf32>) -> tensor<?x8xf32>
  %logits = moe.linear ins(%x, %w : tensor<?x64xf32>, tensor<8x64xf32>) outs(%init : tensor<?x8xf32>) -> tensor<?x8xf32>
  %wts, %ids = moe.route %logits top_k(2) score(softmax) order(score_then_topk) bias(%bias : tensor<8xf32>)
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %wts, %ids : tensor<?x2xf32>, tensor<?x2xi32>
}

module attributes {transform.with_named_sequence} {
  transform.named_sequence @__transform_main(%root: !transform.any_op {transform.readonly}) {
    %route = transform.structured.match ops{["moe.route"]} in %root : (!transform.any_op) -> !transform.any_op
    %linear = transform.structured.match ops{["moe.linear"]} in %root : (!transform.any_op) -> !transform.any_op
    %fill = transform.structured.match ops{["linalg.fill"]} in %root : (!transform.any_op) -> !transform.any_op
    %tiled, %loop = transform.structured.tile_using_forall %route tile_sizes [16] : (!transform.any_op) -> (!transform.any_op, !transform.any_op)
    %f1, %l1 = transform.structured.fuse_into_containing_op %linear into %loop : (!transform.any_op, !transform.any_op) -> (!transform.any_op, !transform.any_op)
    %f2, %l2 = transform.structured.fuse_into_containing_op %fill into %l1 : (!transform.any_op, !transform.any_op) -> (!transform.any_op, !transform.any_op)
    transform.yield
  }
}

// -----

// CHECK-LABEL: func.func @topk_and_batch_norm
// CHECK:         scf.forall (%[[I:.*]]) in (2) shared_outs(%[[VO:.*]] = %{{.*}}, %[[IO:.*]] = %{{.*}})
// CHECK:           %[[OFF:.*]] = affine.apply
// CHECK:           %[[QT:.*]] = tensor.extract_slice %{{.*}}[%[[OFF]], 0] [4, 32] [1, 1] : tensor<8x32xf32> to tensor<4x32xf32>
// CHECK:           %[[N:.*]] = moe.batch_norm %[[QT]], %{{.*}} : tensor<4x32xf32>, tensor<32xf32>
// CHECK:           moe.topk ins(%[[N]] : tensor<4x32xf32>) outs(%{{.*}}, %{{.*}} : tensor<4x3xf32>, tensor<4x3xi32>)
func.func @topk_and_batch_norm(%q: tensor<8x32xf32>, %m: tensor<32xf32>, %v: tensor<32xf32>,
    %s: tensor<32xf32>, %b: tensor<32xf32>, %v0: tensor<8x3xf32>, %i0: tensor<8x3xi32>) -> (tensor<8x3xf32>, tensor<8x3xi32>) {
  %n = moe.batch_norm %q, %m, %v, %s, %b : tensor<8x32xf32>, tensor<32xf32>
  %vals, %idx = moe.topk ins(%n : tensor<8x32xf32>) outs(%v0, %i0 : tensor<8x3xf32>, tensor<8x3xi32>)
      -> tensor<8x3xf32>, tensor<8x3xi32>
  return %vals, %idx : tensor<8x3xf32>, tensor<8x3xi32>
}

module attributes {transform.with_named_sequence} {
  transform.named_sequence @__transform_main(%root: !transform.any_op {transform.readonly}) {
    %topk = transform.structured.match ops{["moe.topk"]} in %root : (!transform.any_op) -> !transform.any_op
    %bn = transform.structured.match ops{["moe.batch_norm"]} in %root : (!transform.any_op) -> !transform.any_op
    %tiled, %loop = transform.structured.tile_using_forall %topk tile_sizes [4] : (!transform.any_op) -> (!transform.any_op, !transform.any_op)
    %f, %l = transform.structured.fuse_into_containing_op %bn into %loop : (!transform.any_op, !transform.any_op) -> (!transform.any_op, !transform.any_op)
    transform.yield
  }
}

// -----

// PEER: the retrieval fuses into the expert sum's loop (once per result it
// feeds, which CSE merges); the sub-key tables and the expert tables are
// read whole.

// CHECK-LABEL: func.func @peer
// CHECK-SAME:    (%[[X:.*]]: tensor<8x16xf32>, %[[Q:.*]]: tensor<8x16xf32>, %[[K1:.*]]: tensor<4x4xf32>, %[[K2:.*]]: tensor<4x4xf32>, %{{.*}}: tensor<8x2x3xf32>, %{{.*}}: tensor<8x2x3xi32>, %[[U:.*]]: tensor<16x16xbf16>, %[[V:.*]]: tensor<16x16xbf16>, %{{.*}}: tensor<8x16xf32>)
// CHECK:         scf.forall (%[[I:.*]]) in (4) shared_outs(%[[OUT:.*]] = %{{.*}})
// CHECK:           %[[OFF:.*]] = affine.apply
// CHECK-DAG:       %[[XT:.*]] = tensor.extract_slice %[[X]][%[[OFF]], 0] [2, 16] [1, 1]
// CHECK-DAG:       %[[QT:.*]] = tensor.extract_slice %[[Q]][%[[OFF]], 0] [2, 16] [1, 1]
// CHECK:           %[[PW:.*]], %[[PI:.*]] = moe.product_key_topk heads(2) top_k(3) score(softmax) ins(%[[QT]], %[[K1]], %[[K2]] : tensor<2x16xf32>, tensor<4x4xf32>, tensor<4x4xf32>)
// CHECK-SAME:        -> tensor<2x2x3xf32>, tensor<2x2x3xi32>
// CHECK-NOT:       moe.product_key_topk
// CHECK:           moe.single_neuron_experts ins(%[[XT]], %[[PI]], %[[PW]], %[[V]] : tensor<2x16xf32>, tensor<2x2x3xi32>, tensor<2x2x3xf32>, tensor<16x16xbf16>) in_proj(%[[U]] : tensor<16x16xbf16>, gelu)
func.func @peer(%x: tensor<8x16xf32>, %q: tensor<8x16xf32>, %k1: tensor<4x4xf32>, %k2: tensor<4x4xf32>,
    %w0: tensor<8x2x3xf32>, %i0: tensor<8x2x3xi32>, %u: tensor<16x16xbf16>, %v: tensor<16x16xbf16>,
    %acc: tensor<8x16xf32>) -> tensor<8x16xf32> {
  %w, %ids = moe.product_key_topk heads(2) top_k(3) score(softmax)
      ins(%q, %k1, %k2 : tensor<8x16xf32>, tensor<4x4xf32>, tensor<4x4xf32>)
      outs(%w0, %i0 : tensor<8x2x3xf32>, tensor<8x2x3xi32>) -> tensor<8x2x3xf32>, tensor<8x2x3xi32>
  %out = moe.single_neuron_experts
      ins(%x, %ids, %w, %v : tensor<8x16xf32>, tensor<8x2x3xi32>, tensor<8x2x3xf32>, tensor<16x16xbf16>)
      in_proj(%u : tensor<16x16xbf16>, gelu)
      outs(%acc : tensor<8x16xf32>) -> tensor<8x16xf32>
  return %out : tensor<8x16xf32>
}

module attributes {transform.with_named_sequence} {
  transform.named_sequence @__transform_main(%root: !transform.any_op {transform.readonly}) {
    %sne = transform.structured.match ops{["moe.single_neuron_experts"]} in %root : (!transform.any_op) -> !transform.any_op
    %pk = transform.structured.match ops{["moe.product_key_topk"]} in %root : (!transform.any_op) -> !transform.any_op
    %tiled, %loop = transform.structured.tile_using_forall %sne tile_sizes [2] : (!transform.any_op) -> (!transform.any_op, !transform.any_op)
    %f, %l = transform.structured.fuse_into_containing_op %pk into %loop : (!transform.any_op, !transform.any_op) -> (!transform.any_op, !transform.any_op)
    transform.yield
  }
}

// -----

// moe.gather is parallel over slots: the token rows it reads are whole.

// CHECK-LABEL: func.func @gather
// CHECK-SAME:    (%[[X:.*]]: tensor<?x16xf32>, %[[TOK:.*]]: tensor<12xi32>, %[[INIT:.*]]: tensor<12x16xf32>)
// CHECK:         scf.forall (%[[I:.*]]) in (3) shared_outs(%[[OUT:.*]] = %[[INIT]])
// CHECK:           %[[OFF:.*]] = affine.apply
// CHECK:           %[[TT:.*]] = tensor.extract_slice %[[TOK]][%[[OFF]]] [4] [1] : tensor<12xi32> to tensor<4xi32>
// CHECK:           %[[OT:.*]] = tensor.extract_slice %[[OUT]][%[[OFF]], 0] [4, 16] [1, 1]
// CHECK:           moe.gather ins(%[[X]], %[[TT]] : tensor<?x16xf32>, tensor<4xi32>) outs(%[[OT]] : tensor<4x16xf32>)
func.func @gather(%x: tensor<?x16xf32>, %tokens: tensor<12xi32>, %init: tensor<12x16xf32>) -> tensor<12x16xf32> {
  %r = moe.gather ins(%x, %tokens : tensor<?x16xf32>, tensor<12xi32>) outs(%init : tensor<12x16xf32>) -> tensor<12x16xf32>
  return %r : tensor<12x16xf32>
}

module attributes {transform.with_named_sequence} {
  transform.named_sequence @__transform_main(%root: !transform.any_op {transform.readonly}) {
    %op = transform.structured.match ops{["moe.gather"]} in %root : (!transform.any_op) -> !transform.any_op
    %tiled, %loop = transform.structured.tile_using_forall %op tile_sizes [4] : (!transform.any_op) -> (!transform.any_op, !transform.any_op)
    transform.yield
  }
}
