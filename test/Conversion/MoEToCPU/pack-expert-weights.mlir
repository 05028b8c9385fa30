// RUN: moe-opt --moe-pack-expert-weights="vector-width=8 panel-col-vectors=2" -split-input-file %s | FileCheck %s
// RUN: moe-opt --moe-pack-expert-weights="vector-width=16 panel-col-vectors=2" -split-input-file %s | FileCheck %s --check-prefix=W16

// A gated expert_ffn and a gated shared expert: w1/w3 are read by register
// tiles of one vector per weight (8 columns), w2 by tiles of two vectors
// (16). The packing function packs each weight into [(E,) ceil(N/P), K, P]
// (40 hidden columns: 5 tiles of 8; 24: 3), and the packed layer unpacks its
// arguments for the kernels to fold. The router's gate, read by moe.linear,
// is not an MLP weight and stays as it is.
// CHECK-LABEL: func.func @layer(
// CHECK-SAME:    tensor<4x40x64xf32> {moe.name = "w1"}
// CHECK-LABEL: func.func @layer__packed(
// CHECK-SAME:    %[[X:[^:]*]]: tensor<?x64xf32> {moe.name = "x"}, %[[GATE:[^:]*]]: tensor<4x64xf32> {moe.name = "gate"},
// CHECK-SAME:    %[[W1P:[^:]*]]: tensor<4x5x64x8xf32> {moe.name = "w1_packed"}, %[[W3P:[^:]*]]: tensor<4x5x64x8xf32> {moe.name = "w3_packed"},
// CHECK-SAME:    %[[W2P:[^:]*]]: tensor<4x4x40x16xf32> {moe.name = "w2_packed"},
// CHECK-SAME:    %[[SW1P:[^:]*]]: tensor<3x64x8xbf16> {moe.name = "shared_w1_packed"}, %[[SW3P:[^:]*]]: tensor<3x64x8xbf16> {moe.name = "shared_w3_packed"},
// CHECK-SAME:    %[[SW2P:[^:]*]]: tensor<4x24x16xbf16> {moe.name = "shared_w2_packed"})
// CHECK-SAME:    -> (tensor<?x64xf32> {moe.name = "out"})
// CHECK-SAME:    attributes {moe.layer = "layer", moe.variant = "packed_forward"}
// CHECK:         %[[W1:.*]] = linalg.unpack %[[W1P]] inner_dims_pos = [1] inner_tiles = [8] into %{{.*}} : tensor<4x5x64x8xf32> -> tensor<4x40x64xf32>
// CHECK:         %[[W3:.*]] = linalg.unpack %[[W3P]] inner_dims_pos = [1] inner_tiles = [8]
// CHECK:         %[[W2:.*]] = linalg.unpack %[[W2P]] inner_dims_pos = [1] inner_tiles = [16] into %{{.*}} : tensor<4x4x40x16xf32> -> tensor<4x64x40xf32>
// CHECK:         %[[SW1:.*]] = linalg.unpack %[[SW1P]] inner_dims_pos = [0] inner_tiles = [8] into %{{.*}} : tensor<3x64x8xbf16> -> tensor<24x64xbf16>
// CHECK:         %[[SW3:.*]] = linalg.unpack %[[SW3P]] inner_dims_pos = [0] inner_tiles = [8]
// CHECK:         %[[SW2:.*]] = linalg.unpack %[[SW2P]] inner_dims_pos = [0] inner_tiles = [16]
// CHECK:         moe.linear ins(%[[X]], %[[GATE]] :
// CHECK:         moe.expert_ffn swiglu ins(%{{.*}}, %{{.*}}, %[[W1]], %[[W2]] : {{.*}}) up(%[[W3]] :
// CHECK:         moe.shared_expert swiglu ins(%[[X]], %[[SW1]], %[[SW2]] : {{.*}}) up(%[[SW3]] :
// CHECK-LABEL: func.func @layer__pack(
// CHECK-SAME:    %[[A1:[^:]*]]: tensor<4x40x64xf32> {moe.name = "w1"}, %{{[^:]*}}: tensor<4x40x64xf32> {moe.name = "w3"}, %{{[^:]*}}: tensor<4x64x40xf32> {moe.name = "w2"},
// CHECK-SAME:    %[[A4:[^:]*]]: tensor<24x64xbf16> {moe.name = "shared_w1"}
// CHECK-SAME:    -> (tensor<4x5x64x8xf32> {moe.name = "w1_packed"}, tensor<4x5x64x8xf32> {moe.name = "w3_packed"}, tensor<4x4x40x16xf32> {moe.name = "w2_packed"},
// CHECK-SAME:    attributes {moe.layer = "layer", moe.variant = "pack_weights"}
// CHECK:         linalg.pack %[[A1]] padding_value(%{{.*}} : f32) inner_dims_pos = [1] inner_tiles = [8] into %{{.*}} : tensor<4x40x64xf32> -> tensor<4x5x64x8xf32>
// CHECK:         linalg.pack %[[A4]] padding_value(%{{.*}} : bf16) inner_dims_pos = [0] inner_tiles = [8] into %{{.*}} : tensor<24x64xbf16> -> tensor<3x64x8xbf16>
// CHECK:         return
// With 16-lane vectors the tiles are 16 and 32 columns wide; 40 columns
// leave a zero-padded tail tile.
// W16-LABEL: func.func @layer__packed(
// W16-SAME:    tensor<4x3x64x16xf32> {moe.name = "w1_packed"}
// W16-SAME:    tensor<4x2x40x32xf32> {moe.name = "w2_packed"}
func.func @layer(%x: tensor<?x64xf32> {moe.name = "x"}, %gate: tensor<4x64xf32> {moe.name = "gate"},
                 %w1: tensor<4x40x64xf32> {moe.name = "w1"}, %w3: tensor<4x40x64xf32> {moe.name = "w3"},
                 %w2: tensor<4x64x40xf32> {moe.name = "w2"},
                 %sw1: tensor<24x64xbf16> {moe.name = "shared_w1"}, %sw3: tensor<24x64xbf16> {moe.name = "shared_w3"},
                 %sw2: tensor<64x24xbf16> {moe.name = "shared_w2"})
    -> (tensor<?x64xf32> {moe.name = "out"}) {
  %c0 = arith.constant 0 : index
  %cst = arith.constant 0.000000e+00 : f32
  %t = tensor.dim %x, %c0 : tensor<?x64xf32>
  %e0 = tensor.empty(%t) : tensor<?x4xf32>
  %z0 = linalg.fill ins(%cst : f32) outs(%e0 : tensor<?x4xf32>) -> tensor<?x4xf32>
  %proj = moe.linear ins(%x, %gate : tensor<?x64xf32>, tensor<4x64xf32>) outs(%z0 : tensor<?x4xf32>) -> tensor<?x4xf32>
  %weights, %ids = moe.route %proj top_k(2) score(softmax) order(score_then_topk) : tensor<?x4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  %counts, %offsets, %token_ids, %slot_weights, %dropped = moe.dispatch_plan %ids, %weights experts(4) top_k(2) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  %s = tensor.dim %token_ids, %c0 : tensor<?xi32>
  %e1 = tensor.empty(%s) : tensor<?x64xf32>
  %rows = moe.gather ins(%x, %token_ids : tensor<?x64xf32>, tensor<?xi32>) outs(%e1 : tensor<?x64xf32>) -> tensor<?x64xf32>
  %e2 = tensor.empty(%s) : tensor<?x64xf32>
  %z2 = linalg.fill ins(%cst : f32) outs(%e2 : tensor<?x64xf32>) -> tensor<?x64xf32>
  %expert_rows = moe.expert_ffn swiglu ins(%rows, %offsets, %w1, %w2 : tensor<?x64xf32>, tensor<5xi32>, tensor<4x40x64xf32>, tensor<4x64x40xf32>) up(%w3 : tensor<4x40x64xf32>) outs(%z2 : tensor<?x64xf32>) -> tensor<?x64xf32>
  %e3 = tensor.empty(%t) : tensor<?x64xf32>
  %z3 = linalg.fill ins(%cst : f32) outs(%e3 : tensor<?x64xf32>) -> tensor<?x64xf32>
  %shared = moe.shared_expert swiglu ins(%x, %sw1, %sw2 : tensor<?x64xf32>, tensor<24x64xbf16>, tensor<64x24xbf16>) up(%sw3 : tensor<24x64xbf16>) outs(%z3 : tensor<?x64xf32>) -> tensor<?x64xf32>
  %combined = moe.combine ins(%expert_rows, %token_ids, %slot_weights : tensor<?x64xf32>, tensor<?xi32>, tensor<?xf32>) outs(%shared : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %combined : tensor<?x64xf32>
}

// -----

// An ungated shared expert: w1 has the whole register tile (16 columns).
// A weight that is also read by anything but an MLP (here: returned) is
// left as it is, and a layer with no packable weight gets no variants.
// CHECK-LABEL: func.func @ungated(
// CHECK-LABEL: func.func @ungated__packed(
// CHECK-SAME:    tensor<2x64x16xf32> {moe.name = "w1_packed"}
// CHECK-SAME:    tensor<64x32xf32> {moe.name = "w2"}
// CHECK-LABEL: func.func @ungated__pack(
// CHECK-SAME:    %{{[^:]*}}: tensor<32x64xf32> {moe.name = "w1"}) -> (tensor<2x64x16xf32> {moe.name = "w1_packed"})
// CHECK-LABEL: func.func @no_mlp(
// CHECK-NOT:   func.func @no_mlp__
func.func @ungated(%x: tensor<?x64xf32> {moe.name = "x"}, %w1: tensor<32x64xf32> {moe.name = "w1"},
                   %w2: tensor<64x32xf32> {moe.name = "w2"})
    -> (tensor<?x64xf32> {moe.name = "out"}, tensor<64x32xf32> {moe.name = "w2_copy"}) {
  %c0 = arith.constant 0 : index
  %cst = arith.constant 0.000000e+00 : f32
  %t = tensor.dim %x, %c0 : tensor<?x64xf32>
  %e = tensor.empty(%t) : tensor<?x64xf32>
  %z = linalg.fill ins(%cst : f32) outs(%e : tensor<?x64xf32>) -> tensor<?x64xf32>
  %y = moe.shared_expert gelu ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<32x64xf32>, tensor<64x32xf32>) outs(%z : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %y, %w2 : tensor<?x64xf32>, tensor<64x32xf32>
}

func.func @no_mlp(%x: tensor<?x64xf32> {moe.name = "x"}) -> (tensor<?x64xf32> {moe.name = "out"}) {
  return %x : tensor<?x64xf32>
}
