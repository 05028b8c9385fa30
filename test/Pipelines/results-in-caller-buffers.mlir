// The C entry point of a layer, lowered to loops: the last kernel writes
// `out` straight into the caller's buffer (no allocation copied into it), and
// the aux loss, which only its optional output needs, is computed only when
// the caller passed a buffer for it.
// RUN: moe-opt %s --moe-create-c-entry-points --convert-moe-to-cpu --moe-lower-to-loops | FileCheck %s --check-prefixes=CHECK,FAST
// RUN: moe-opt %s --moe-create-c-entry-points --moe-lower-to-loops | FileCheck %s --check-prefixes=CHECK,REF

// CHECK-LABEL: func.func @tiny_forward(
// CHECK-SAME:    %{{[^:]*}}: i64, %{{[^:]*}}: i64, %{{[^:]*}}: !llvm.ptr, %{{[^:]*}}: !llvm.ptr, %{{[^:]*}}: !llvm.ptr, %{{[^:]*}}: !llvm.ptr, %{{[^:]*}}: !llvm.ptr,
// CHECK-SAME:    %[[OUT_PTR:[^:]*]]: !llvm.ptr, %{{[^:]*}}: !llvm.ptr, %{{[^:]*}}: !llvm.ptr, %{{[^:]*}}: !llvm.ptr, %{{[^:]*}}: !llvm.ptr, %[[LOSS_PTR:[^:]*]]: !llvm.ptr) -> i32
// CHECK-NOT:     call @tiny
// CHECK:         llvm.insertvalue %[[OUT_PTR]], %{{.*}}[0]
// CHECK:         %[[OUT:.*]] = builtin.unrealized_conversion_cast %{{.*}} to memref<?x16xf32>
// CHECK-NOT:     memref.copy %{{.*}}, %[[OUT]]
// The combine's work items store into the caller's buffer.
// FAST:          call @__moe_parallel_launch_tiny_forward_parallel_{{[0-9]+}}(%{{.*}}, %[[OUT]]) :
// REF:           memref.store %{{.*}}, %[[OUT]][
// CHECK-NOT:     memref.copy %{{.*}}, %[[OUT]]
// CHECK:         %[[GIVEN:.*]] = llvm.icmp "ne" %[[LOSS_PTR]], %{{.*}} : !llvm.ptr
// CHECK-NEXT:    scf.if %[[GIVEN]] {
// CHECK:           scf.for
// CHECK:           %[[LOSS:.*]] = builtin.unrealized_conversion_cast %{{.*}} to memref<f32>
// CHECK:           memref.copy %{{.*}}, %[[LOSS]] : memref<f32> to memref<f32>
// CHECK:         return %{{.*}} : i32
func.func @tiny(%x: tensor<?x16xf32> {moe.name = "x"}, %gate: tensor<4x16xf32> {moe.name = "gate"},
                %w1: tensor<4x32x16xf32> {moe.name = "w1"}, %w3: tensor<4x32x16xf32> {moe.name = "w3"},
                %w2: tensor<4x16x32xf32> {moe.name = "w2"})
    -> (tensor<?x16xf32> {moe.name = "out"}, tensor<?x2xi32> {moe.name = "topk_ids"},
        tensor<?x2xf32> {moe.name = "topk_weights"}, tensor<4xi32> {moe.name = "expert_counts"},
        tensor<i32> {moe.name = "dropped"}, tensor<f32> {moe.name = "load_balance"}) {
  %c0 = arith.constant 0 : index
  %zero = arith.constant 0.0 : f32
  %t = tensor.dim %x, %c0 : tensor<?x16xf32>
  %logits_init = tensor.empty(%t) : tensor<?x4xf32>
  %logits_zero = linalg.fill ins(%zero : f32) outs(%logits_init : tensor<?x4xf32>) -> tensor<?x4xf32>
  %logits = moe.linear ins(%x, %gate : tensor<?x16xf32>, tensor<4x16xf32>) outs(%logits_zero : tensor<?x4xf32>) -> tensor<?x4xf32>
  %weights, %ids = moe.route %logits top_k(2) score(softmax) order(score_then_topk) : tensor<?x4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  %counts, %offsets, %token_ids, %slot_weights, %dropped = moe.dispatch_plan %ids, %weights experts(4) top_k(2)
      : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  %slots = tensor.dim %token_ids, %c0 : tensor<?xi32>
  %rows_init = tensor.empty(%slots) : tensor<?x16xf32>
  %rows = moe.gather ins(%x, %token_ids : tensor<?x16xf32>, tensor<?xi32>) outs(%rows_init : tensor<?x16xf32>) -> tensor<?x16xf32>
  %expert_init = tensor.empty(%slots) : tensor<?x16xf32>
  %expert_zero = linalg.fill ins(%zero : f32) outs(%expert_init : tensor<?x16xf32>) -> tensor<?x16xf32>
  %expert_rows = moe.expert_ffn swiglu ins(%rows, %offsets, %w1, %w2 : tensor<?x16xf32>, tensor<5xi32>, tensor<4x32x16xf32>, tensor<4x16x32xf32>)
      up(%w3 : tensor<4x32x16xf32>) outs(%expert_zero : tensor<?x16xf32>) -> tensor<?x16xf32>
  %out_init = tensor.empty(%t) : tensor<?x16xf32>
  %out_zero = linalg.fill ins(%zero : f32) outs(%out_init : tensor<?x16xf32>) -> tensor<?x16xf32>
  %out = moe.combine ins(%expert_rows, %token_ids, %slot_weights : tensor<?x16xf32>, tensor<?xi32>, tensor<?xf32>)
      outs(%out_zero : tensor<?x16xf32>) -> tensor<?x16xf32>
  %load_balance = moe.aux_loss load_balance %logits ids(%ids : tensor<?x2xi32>) : tensor<?x4xf32> -> tensor<f32>
  return %out, %ids, %weights, %counts, %dropped, %load_balance
      : tensor<?x16xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<4xi32>, tensor<i32>, tensor<f32>
}
