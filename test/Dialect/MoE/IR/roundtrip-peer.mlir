// Round-trip of the PEER/PKM ops (moe.batch_norm, moe.layer_norm,
// moe.product_key_topk, moe.single_neuron_experts) in every form of their assembly: custom form,
// generic form and bytecode print back to the same custom form, and
// print -> parse -> print is a fixed point.
// RUN: moe-opt %s | moe-opt | FileCheck %s
// RUN: moe-opt %s -mlir-print-op-generic | moe-opt | FileCheck %s
// RUN: moe-opt %s -emit-bytecode | moe-opt | FileCheck %s
// RUN: moe-opt %s > %t.once && moe-opt %t.once > %t.twice && diff %t.once %t.twice

//===----------------------------------------------------------------------===//
// moe.batch_norm
//===----------------------------------------------------------------------===//

// Default epsilon (elided) and an explicit one.
// CHECK-LABEL: func.func @batch_norm
// CHECK-SAME:    (%[[Q:.*]]: tensor<?x256xf32>, %[[M:.*]]: tensor<256xf32>, %[[V:.*]]: tensor<256xf32>, %[[S:.*]]: tensor<256xf32>, %[[B:.*]]: tensor<256xf32>)
// CHECK:         %[[N0:.*]] = moe.batch_norm %[[Q]], %[[M]], %[[V]], %[[S]], %[[B]] : tensor<?x256xf32>, tensor<256xf32>
// CHECK:         %[[N1:.*]] = moe.batch_norm %[[N0]], %[[M]], %[[V]], %[[S]], %[[B]] {epsilon = 1.000000e-03 : f64} : tensor<?x256xf32>, tensor<256xf32>
// CHECK:         return %[[N1]]
func.func @batch_norm(%q: tensor<?x256xf32>, %mean: tensor<256xf32>,
                      %var: tensor<256xf32>, %scale: tensor<256xf32>,
                      %shift: tensor<256xf32>) -> tensor<?x256xf32> {
  %n0 = moe.batch_norm %q, %mean, %var, %scale, %shift
      : tensor<?x256xf32>, tensor<256xf32>
  %n1 = moe.batch_norm %n0, %mean, %var, %scale, %shift {epsilon = 1.0e-03 : f64}
      : tensor<?x256xf32>, tensor<256xf32>
  return %n1 : tensor<?x256xf32>
}

// Static tokens, dynamic channel count.
// CHECK-LABEL: func.func @batch_norm_dynamic_channels
// CHECK:         moe.batch_norm %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : tensor<8x?xf32>, tensor<?xf32>
func.func @batch_norm_dynamic_channels(%q: tensor<8x?xf32>, %p: tensor<?xf32>)
    -> tensor<8x?xf32> {
  %n = moe.batch_norm %q, %p, %p, %p, %p : tensor<8x?xf32>, tensor<?xf32>
  return %n : tensor<8x?xf32>
}

//===----------------------------------------------------------------------===//
// moe.layer_norm
//===----------------------------------------------------------------------===//

// Default epsilon (elided), an explicit one, static tokens.
// CHECK-LABEL: func.func @layer_norm
// CHECK-SAME:    (%[[Q:.*]]: tensor<?x256xf32>, %[[S:.*]]: tensor<256xf32>, %[[B:.*]]: tensor<256xf32>, %[[Q4:.*]]: tensor<4x256xf32>)
// CHECK:         %[[N0:.*]] = moe.layer_norm %[[Q]], %[[S]], %[[B]] : tensor<?x256xf32>, tensor<256xf32>
// CHECK:         %[[N1:.*]] = moe.layer_norm %[[N0]], %[[S]], %[[B]] {epsilon = 1.000000e-03 : f64} : tensor<?x256xf32>, tensor<256xf32>
// CHECK:         %[[N2:.*]] = moe.layer_norm %[[Q4]], %[[S]], %[[B]] : tensor<4x256xf32>, tensor<256xf32>
// CHECK:         return %[[N1]], %[[N2]]
func.func @layer_norm(%q: tensor<?x256xf32>, %scale: tensor<256xf32>,
                      %shift: tensor<256xf32>, %q4: tensor<4x256xf32>)
    -> (tensor<?x256xf32>, tensor<4x256xf32>) {
  %n0 = moe.layer_norm %q, %scale, %shift : tensor<?x256xf32>, tensor<256xf32>
  %n1 = moe.layer_norm %n0, %scale, %shift {epsilon = 1.0e-03 : f64}
      : tensor<?x256xf32>, tensor<256xf32>
  %n2 = moe.layer_norm %q4, %scale, %shift : tensor<4x256xf32>, tensor<256xf32>
  return %n1, %n2 : tensor<?x256xf32>, tensor<4x256xf32>
}

//===----------------------------------------------------------------------===//
// moe.product_key_topk
//===----------------------------------------------------------------------===//

// PEER: 8 heads of d_k = 128 over n = 1024 sub-keys (N = 1M experts).
// CHECK-LABEL: func.func @product_key_topk_softmax
// CHECK-SAME:    (%[[Q:.*]]: tensor<?x1024xf32>, %[[K1:.*]]: tensor<1024x64xf32>, %[[K2:.*]]: tensor<1024x64xf32>, %[[W0:.*]]: tensor<?x8x16xf32>, %[[I0:.*]]: tensor<?x8x16xi32>)
// CHECK:         %[[W:.*]], %[[IDS:.*]] = moe.product_key_topk heads(8) top_k(16) score(softmax) ins(%[[Q]], %[[K1]], %[[K2]] : tensor<?x1024xf32>, tensor<1024x64xf32>, tensor<1024x64xf32>) outs(%[[W0]], %[[I0]] : tensor<?x8x16xf32>, tensor<?x8x16xi32>) -> tensor<?x8x16xf32>, tensor<?x8x16xi32>
// CHECK:         return %[[W]], %[[IDS]]
func.func @product_key_topk_softmax(%q: tensor<?x1024xf32>,
    %k1: tensor<1024x64xf32>, %k2: tensor<1024x64xf32>,
    %w0: tensor<?x8x16xf32>, %i0: tensor<?x8x16xi32>)
    -> (tensor<?x8x16xf32>, tensor<?x8x16xi32>) {
  %w, %ids = moe.product_key_topk heads(8) top_k(16) score(softmax)
      ins(%q, %k1, %k2 : tensor<?x1024xf32>, tensor<1024x64xf32>, tensor<1024x64xf32>)
      outs(%w0, %i0 : tensor<?x8x16xf32>, tensor<?x8x16xi32>)
      -> tensor<?x8x16xf32>, tensor<?x8x16xi32>
  return %w, %ids : tensor<?x8x16xf32>, tensor<?x8x16xi32>
}

// One head, sigmoid scores, bf16 sub-keys, static tokens and an attribute.
// CHECK-LABEL: func.func @product_key_topk_sigmoid_bf16
// CHECK:         moe.product_key_topk heads(1) top_k(4) score(sigmoid) ins(%{{.*}}, %{{.*}}, %{{.*}} : tensor<4x32xf32>, tensor<16x16xbf16>, tensor<16x16xbf16>) outs(%{{.*}}, %{{.*}} : tensor<4x1x4xf32>, tensor<4x1x4xi32>) {moe.note = "pkm"} -> tensor<4x1x4xf32>, tensor<4x1x4xi32>
func.func @product_key_topk_sigmoid_bf16(%q: tensor<4x32xf32>,
    %k1: tensor<16x16xbf16>, %k2: tensor<16x16xbf16>,
    %w0: tensor<4x1x4xf32>, %i0: tensor<4x1x4xi32>) -> tensor<4x1x4xi32> {
  %w, %ids = moe.product_key_topk heads(1) top_k(4) score(sigmoid)
      ins(%q, %k1, %k2 : tensor<4x32xf32>, tensor<16x16xbf16>, tensor<16x16xbf16>)
      outs(%w0, %i0 : tensor<4x1x4xf32>, tensor<4x1x4xi32>) {moe.note = "pkm"}
      -> tensor<4x1x4xf32>, tensor<4x1x4xi32>
  return %ids : tensor<4x1x4xi32>
}

// A sub-key table pair per head: keys [heads, n, d_k/2].
// CHECK-LABEL: func.func @product_key_topk_keys_per_head
// CHECK:         moe.product_key_topk heads(3) top_k(4) score(softmax) ins(%{{.*}}, %{{.*}}, %{{.*}} : tensor<?x24xf32>, tensor<3x5x4xbf16>, tensor<3x5x4xbf16>) outs(%{{.*}}, %{{.*}} : tensor<?x3x4xf32>, tensor<?x3x4xi32>) -> tensor<?x3x4xf32>, tensor<?x3x4xi32>
func.func @product_key_topk_keys_per_head(%q: tensor<?x24xf32>,
    %k1: tensor<3x5x4xbf16>, %k2: tensor<3x5x4xbf16>,
    %w0: tensor<?x3x4xf32>, %i0: tensor<?x3x4xi32>) -> tensor<?x3x4xi32> {
  %w, %ids = moe.product_key_topk heads(3) top_k(4) score(softmax)
      ins(%q, %k1, %k2 : tensor<?x24xf32>, tensor<3x5x4xbf16>, tensor<3x5x4xbf16>)
      outs(%w0, %i0 : tensor<?x3x4xf32>, tensor<?x3x4xi32>)
      -> tensor<?x3x4xf32>, tensor<?x3x4xi32>
  return %ids : tensor<?x3x4xi32>
}

// top_k above the n = 4 sub-keys per table: each stage keeps min(top_k, n).
// CHECK-LABEL: func.func @product_key_topk_k_above_sub_keys
// CHECK:         moe.product_key_topk heads(2) top_k(16) score(softmax) ins(%{{.*}}, %{{.*}}, %{{.*}} : tensor<?x16xf32>, tensor<4x4xf32>, tensor<4x4xf32>) outs(%{{.*}}, %{{.*}} : tensor<?x2x16xf32>, tensor<?x2x16xi32>) -> tensor<?x2x16xf32>, tensor<?x2x16xi32>
func.func @product_key_topk_k_above_sub_keys(%q: tensor<?x16xf32>,
    %k1: tensor<4x4xf32>, %k2: tensor<4x4xf32>,
    %w0: tensor<?x2x16xf32>, %i0: tensor<?x2x16xi32>) -> tensor<?x2x16xi32> {
  %w, %ids = moe.product_key_topk heads(2) top_k(16) score(softmax)
      ins(%q, %k1, %k2 : tensor<?x16xf32>, tensor<4x4xf32>, tensor<4x4xf32>)
      outs(%w0, %i0 : tensor<?x2x16xf32>, tensor<?x2x16xi32>)
      -> tensor<?x2x16xf32>, tensor<?x2x16xi32>
  return %ids : tensor<?x2x16xi32>
}

//===----------------------------------------------------------------------===//
// moe.single_neuron_experts
//===----------------------------------------------------------------------===//

// PEER: expert_in (u) with each allowed activation.
// CHECK-LABEL: func.func @single_neuron_experts_peer
// CHECK-SAME:    (%[[X:.*]]: tensor<?x64xf32>, %[[IDS:.*]]: tensor<?x8x16xi32>, %[[W:.*]]: tensor<?x8x16xf32>, %[[V:.*]]: tensor<1024x64xf32>, %[[U:.*]]: tensor<1024x64xf32>, %[[ACC:.*]]: tensor<?x64xf32>)
// CHECK:         %[[O0:.*]] = moe.single_neuron_experts ins(%[[X]], %[[IDS]], %[[W]], %[[V]] : tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<1024x64xf32>) in_proj(%[[U]] : tensor<1024x64xf32>, gelu) outs(%[[ACC]] : tensor<?x64xf32>) -> tensor<?x64xf32>
// CHECK:         %[[O1:.*]] = moe.single_neuron_experts ins(%[[X]], %[[IDS]], %[[W]], %[[V]] : tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<1024x64xf32>) in_proj(%[[U]] : tensor<1024x64xf32>, relu) outs(%[[O0]] : tensor<?x64xf32>) -> tensor<?x64xf32>
// CHECK:         %[[O2:.*]] = moe.single_neuron_experts ins(%[[X]], %[[IDS]], %[[W]], %[[V]] : tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<1024x64xf32>) in_proj(%[[U]] : tensor<1024x64xf32>, silu) outs(%[[O1]] : tensor<?x64xf32>) -> tensor<?x64xf32>
// CHECK:         return %[[O2]]
func.func @single_neuron_experts_peer(%x: tensor<?x64xf32>,
    %ids: tensor<?x8x16xi32>, %w: tensor<?x8x16xf32>, %v: tensor<1024x64xf32>,
    %u: tensor<1024x64xf32>, %acc: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %o0 = moe.single_neuron_experts
      ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<1024x64xf32>)
      in_proj(%u : tensor<1024x64xf32>, gelu)
      outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  %o1 = moe.single_neuron_experts
      ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<1024x64xf32>)
      in_proj(%u : tensor<1024x64xf32>, relu)
      outs(%o0 : tensor<?x64xf32>) -> tensor<?x64xf32>
  %o2 = moe.single_neuron_experts
      ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<1024x64xf32>)
      in_proj(%u : tensor<1024x64xf32>, silu)
      outs(%o1 : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %o2 : tensor<?x64xf32>
}

// PEER with bf16 expert tables.
// CHECK-LABEL: func.func @single_neuron_experts_peer_bf16
// CHECK:         moe.single_neuron_experts ins(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : tensor<4x64xf32>, tensor<4x2x8xi32>, tensor<4x2x8xf32>, tensor<256x64xbf16>) in_proj(%{{.*}} : tensor<256x64xbf16>, gelu) outs(%{{.*}} : tensor<4x64xf32>) -> tensor<4x64xf32>
func.func @single_neuron_experts_peer_bf16(%x: tensor<4x64xf32>,
    %ids: tensor<4x2x8xi32>, %w: tensor<4x2x8xf32>, %v: tensor<256x64xbf16>,
    %u: tensor<256x64xbf16>, %acc: tensor<4x64xf32>) -> tensor<4x64xf32> {
  %o = moe.single_neuron_experts
      ins(%x, %ids, %w, %v : tensor<4x64xf32>, tensor<4x2x8xi32>, tensor<4x2x8xf32>, tensor<256x64xbf16>)
      in_proj(%u : tensor<256x64xbf16>, gelu)
      outs(%acc : tensor<4x64xf32>) -> tensor<4x64xf32>
  return %o : tensor<4x64xf32>
}

// PKM: no in_proj group, values only (f16 table), with an attribute.
// CHECK-LABEL: func.func @single_neuron_experts_pkm
// CHECK-SAME:    (%[[X:.*]]: tensor<?x64xf32>, %[[IDS:.*]]: tensor<?x4x32xi32>, %[[W:.*]]: tensor<?x4x32xf32>, %[[V:.*]]: tensor<262144x64xf16>, %[[ACC:.*]]: tensor<?x64xf32>)
// CHECK:         %[[O:.*]] = moe.single_neuron_experts ins(%[[X]], %[[IDS]], %[[W]], %[[V]] : tensor<?x64xf32>, tensor<?x4x32xi32>, tensor<?x4x32xf32>, tensor<262144x64xf16>) outs(%[[ACC]] : tensor<?x64xf32>) {moe.note = "pkm"} -> tensor<?x64xf32>
// CHECK:         return %[[O]]
func.func @single_neuron_experts_pkm(%x: tensor<?x64xf32>,
    %ids: tensor<?x4x32xi32>, %w: tensor<?x4x32xf32>,
    %v: tensor<262144x64xf16>, %acc: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %o = moe.single_neuron_experts
      ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x4x32xi32>, tensor<?x4x32xf32>, tensor<262144x64xf16>)
      outs(%acc : tensor<?x64xf32>) {moe.note = "pkm"} -> tensor<?x64xf32>
  return %o : tensor<?x64xf32>
}
