// RUN: moe-opt %s --moe-create-c-entry-points -split-input-file -verify-diagnostics | FileCheck %s

// The layer becomes private; the entry point validates sizes and pointers,
// wraps buffers as tensors, calls the layer and writes the results back.

// CHECK-DAG: llvm.mlir.global internal constant @[[TOKENS_MSG:.*]]("scale_forward: tokens must be >= 1\00")
// CHECK-DAG: llvm.mlir.global internal constant @[[WIDTH_MSG:.*]]("scale_forward: d_model must be 4, the compiled layer's\00")
// CHECK-DAG: llvm.mlir.global internal constant @[[X_MSG:.*]]("scale_forward: argument 'x' is NULL\00")
// CHECK-DAG: llvm.mlir.global internal constant @[[OUT_MSG:.*]]("scale_forward: argument 'out' is NULL\00")
// CHECK-DAG: func.func private @moe_rt_fail(i32, !llvm.ptr) -> i32
// CHECK-LABEL: func.func private @scale(
// CHECK-LABEL: func.func private @scale_forward_impl(
// CHECK-SAME: %[[T:[^:]*]]: i64, %[[X:[^:]*]]: !llvm.ptr, %[[W:[^:]*]]: !llvm.ptr, %[[SEED:[^:]*]]: i64, %[[OUT:[^:]*]]: !llvm.ptr, %[[IDS:[^:]*]]: !llvm.ptr)
// CHECK: %[[XD:.*]] = llvm.insertvalue %[[T]], %{{.*}}[3, 0]
// CHECK: %[[XM:.*]] = builtin.unrealized_conversion_cast %{{.*}} : !llvm.struct<(ptr, ptr, i64, array<2 x i64>, array<2 x i64>)> to memref<?x4xf32>
// CHECK: %[[XT:.*]] = bufferization.to_tensor %[[XM]] restrict : memref<?x4xf32> to tensor<?x4xf32>
// CHECK: %[[WM:.*]] = builtin.unrealized_conversion_cast %{{.*}} to memref<4xbf16>
// CHECK: %[[WT:.*]] = bufferization.to_tensor %[[WM]] restrict
// The required output is wrapped before the call: once the layer is inlined,
// its producers can write into the caller's buffer.
// CHECK: llvm.insertvalue %[[OUT]], %{{.*}}[0]
// CHECK: %[[OUTM:.*]] = builtin.unrealized_conversion_cast %{{.*}} to memref<?x4xf32>
// CHECK: %[[R:.*]]:2 = call @scale(%[[XT]], %[[WT]], %[[SEED]])
// CHECK: bufferization.materialize_in_destination %[[R]]#0 in restrict writable %[[OUTM]] : (tensor<?x4xf32>, memref<?x4xf32>) -> ()
// Optional outputs are written only when the caller passed a buffer; the
// ids of MH-MoE sub-tokens have tokens * 2 rows.
// CHECK: %[[GIVEN:.*]] = llvm.icmp "ne" %[[IDS]], %{{.*}} : !llvm.ptr
// CHECK: scf.if %[[GIVEN]] {
// CHECK: llvm.mul %[[T]], %{{.*}} : i64
// CHECK: bufferization.materialize_in_destination %[[R]]#1
// CHECK-LABEL: func.func @scale_forward(
// CHECK-SAME: %[[T2:[^:]*]]: i64, %[[D:[^:]*]]: i64, %[[X2:[^:]*]]: !llvm.ptr, %[[W2:[^:]*]]: !llvm.ptr, %[[SEED2:[^:]*]]: i64, %[[OUT2:[^:]*]]: !llvm.ptr, %[[IDS2:[^:]*]]: !llvm.ptr) -> i32
// CHECK: arith.cmpi slt, %[[T2]]
// CHECK: cf.cond_br
// CHECK: arith.cmpi ne, %[[D]]
// CHECK: cf.cond_br
// CHECK: llvm.icmp "eq" %[[X2]]
// CHECK: llvm.icmp "eq" %[[W2]]
// CHECK: llvm.icmp "eq" %[[OUT2]]
// CHECK-NOT: llvm.icmp "eq" %[[IDS2]]
// CHECK: call @scale_forward_impl(%[[T2]], %[[X2]], %[[W2]], %[[SEED2]], %[[OUT2]], %[[IDS2]])
// CHECK: return %{{.*}} : i32
// CHECK: llvm.mlir.addressof @[[TOKENS_MSG]]
// CHECK: call @moe_rt_fail
func.func @scale(%x: tensor<?x4xf32> {moe.name = "x"}, %w: tensor<4xbf16> {moe.name = "scale"}, %seed: i64)
    -> (tensor<?x4xf32> {moe.name = "out"}, tensor<?x2xi32> {moe.name = "ids", moe.rows_per_token = 2 : i64}) {
  %c0 = arith.constant 0 : index
  %t = tensor.dim %x, %c0 : tensor<?x4xf32>
  %t2 = arith.muli %t, %t : index
  %ids = tensor.empty(%t2) : tensor<?x2xi32>
  return %x, %ids : tensor<?x4xf32>, tensor<?x2xi32>
}

// -----

// expected-error @+1 {{cannot export 'arg0': only dim 0 (tokens) may be dynamic, got 'tensor<?x?xf32>'}}
func.func @dynamic_width(%x: tensor<?x?xf32>) -> tensor<?x?xf32> {
  return %x : tensor<?x?xf32>
}

// -----

// expected-error @+1 {{cannot export: the first argument must be the tokens `tensor<?xDxf32>`}}
func.func @static_tokens(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  return %x : tensor<4x8xf32>
}

// -----

// expected-error @+1 {{cannot export 'w': element type 'f64' has no C ABI (f32, bf16, f16, i32)}}
func.func @f64_weight(%x: tensor<?x8xf32>, %w: tensor<8xf64> {moe.name = "w"}) -> tensor<?x8xf32> {
  return %x : tensor<?x8xf32>
}

// -----

// expected-error @+1 {{cannot export a layer without results}}
func.func @no_results(%x: tensor<?x8xf32>) {
  return
}

// -----

// Private and external functions are left alone.
// CHECK-LABEL: func.func private @helper(
// CHECK-NOT: @helper_forward
func.func private @helper(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
  return %x : tensor<?x8xf32>
}

// -----

// The variants of moe-pack-expert-weights are named from the layer they
// serve: a packing function takes no tokens, and all its outputs are
// required; the packed forward is a forward like any other.
// CHECK-DAG: llvm.mlir.global internal constant @{{.*}}("lay_pack_weights: argument 'w' is NULL\00")
// CHECK-DAG: llvm.mlir.global internal constant @{{.*}}("lay_pack_weights: argument 'w_packed' is NULL\00")
// CHECK-LABEL: func.func private @lay__pack(
// CHECK-NOT:     moe.variant
// CHECK-LABEL: func.func private @lay_pack_weights_impl(
// CHECK-SAME:    %{{[^:]*}}: !llvm.ptr, %{{[^:]*}}: !llvm.ptr)
// CHECK:         %[[R:.*]] = call @lay__pack(
// CHECK:         bufferization.materialize_in_destination %[[R]]
// CHECK-LABEL: func.func @lay_pack_weights(
// CHECK-SAME:    %[[W:[^:]*]]: !llvm.ptr, %[[P:[^:]*]]: !llvm.ptr) -> i32
// CHECK:         llvm.icmp "eq" %[[W]]
// CHECK:         llvm.icmp "eq" %[[P]]
// CHECK:         call @lay_pack_weights_impl(%[[W]], %[[P]])
// CHECK-LABEL: func.func @lay_forward_packed(
// CHECK-SAME:    %{{[^:]*}}: i64, %{{[^:]*}}: i64, %{{[^:]*}}: !llvm.ptr, %{{[^:]*}}: !llvm.ptr, %{{[^:]*}}: !llvm.ptr) -> i32
func.func @lay__pack(%w: tensor<20x8xbf16> {moe.name = "w"}) -> (tensor<3x8x8xbf16> {moe.name = "w_packed"})
    attributes {moe.layer = "lay", moe.variant = "pack_weights"} {
  %e = tensor.empty() : tensor<3x8x8xbf16>
  %zero = arith.constant 0.0 : bf16
  %p = linalg.pack %w padding_value(%zero : bf16) inner_dims_pos = [0] inner_tiles = [8] into %e : tensor<20x8xbf16> -> tensor<3x8x8xbf16>
  return %p : tensor<3x8x8xbf16>
}
func.func @lay__packed(%x: tensor<?x8xf32> {moe.name = "x"}, %w: tensor<3x8x8xbf16> {moe.name = "w_packed"})
    -> (tensor<?x8xf32> {moe.name = "out"}) attributes {moe.layer = "lay", moe.variant = "packed_forward"} {
  return %x : tensor<?x8xf32>
}

// -----

// expected-error @+1 {{unknown layer variant "fused" (expected packed_forward, pack_weights or route)}}
func.func @bad_variant(%x: tensor<?x8xf32>) -> tensor<?x8xf32> attributes {moe.layer = "l", moe.variant = "fused"} {
  return %x : tensor<?x8xf32>
}

// -----

// expected-error @+1 {{cannot export 'w' of a weight-packing function: its shape must be static}}
func.func @dynamic_pack(%w: tensor<?x8xf32> {moe.name = "w"}) -> tensor<?x8xf32> attributes {moe.layer = "l", moe.variant = "pack_weights"} {
  return %w : tensor<?x8xf32>
}
