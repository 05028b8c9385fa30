// convert-moe-to-gpu on a dispatch plan: without capacity, chunked parallel
// counts, a scan over the experts, a slot-parallel gather, and the combine
// of its slots from each token's ranked slots (no counting sort); with
// capacity, the plan stays for the reference lowering and its combine
// counts the slots sequentially.
// RUN: moe-opt %s -split-input-file --convert-moe-to-gpu | FileCheck %s

// CHECK-LABEL: func.func @dropless
// CHECK-NOT:     moe.dispatch_plan
// chunk_counts[c, e]: a loop over the chunk's assignments per (c, e).
// CHECK:         %[[CHUNK_COUNTS:.*]] = linalg.generic {{.*}}iterator_types = ["parallel", "parallel"]} outs(%{{.*}} : tensor<?x6xi32>)
// CHECK:           scf.for
// counts[e] = Σ_c chunk_counts[c, e].
// CHECK:         %[[COUNTS:.*]] = linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]} ins(%[[CHUNK_COUNTS]] : tensor<?x6xi32>) outs(%{{.*}} : tensor<6xi32>)
// The scan over the six experts, the only sequential part.
// CHECK:         %[[OFFSETS:.*]]:2 = scf.for %{{.*}} = %c0 to %c6 step %c1 iter_args({{.*}}) -> (tensor<7xi32>, i32)
// CHECK:         %[[STARTS:.*]] = linalg.generic {{.*}}iterator_types = ["parallel", "parallel"]} outs(%{{.*}} : tensor<?x6xi32>)
// Each slot: a fixed-length bisection over chunks, then a scan of its chunk.
// CHECK:         linalg.generic {{.*}}iterator_types = ["parallel"]} outs(%{{.*}}, %{{.*}} : tensor<?xi32>, tensor<?xf32>)
// CHECK:           scf.for %{{.*}} = %c0 to %c24 step %c1
// The combine: each assignment's slot, each token's two slots ranked, then
// the sums over them.
// CHECK:         linalg.generic {{.*}}iterator_types = ["parallel"]} outs(%{{.*}} : tensor<?xindex>)
// CHECK:         %[[ORDER:.*]] = linalg.generic {{.*}}iterator_types = ["parallel"]} outs(%{{.*}} : tensor<?xindex>)
// CHECK:         %[[SUMS:.*]] = linalg.generic {{.*}}iterator_types = ["parallel", "parallel"]} outs(%{{.*}} : tensor<?x4xf32>)
// CHECK:           tensor.extract %[[ORDER]]
// CHECK-NOT:     moe.combine
// CHECK:         return %[[SUMS]], %[[COUNTS]], %[[OFFSETS]]#0
func.func @dropless(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>, %rows: tensor<?x4xf32>, %init: tensor<?x4xf32>) -> (tensor<?x4xf32>, tensor<6xi32>, tensor<7xi32>, tensor<i32>) {
  %counts, %offsets, %token_ids, %slot_weights, %dropped = moe.dispatch_plan %ids, %w experts(6) top_k(2) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<6xi32>, tensor<7xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  %y = moe.combine ins(%rows, %token_ids, %slot_weights : tensor<?x4xf32>, tensor<?xi32>, tensor<?xf32>) outs(%init : tensor<?x4xf32>) -> tensor<?x4xf32>
  return %y, %counts, %offsets, %dropped : tensor<?x4xf32>, tensor<6xi32>, tensor<7xi32>, tensor<i32>
}

// -----

// CHECK-LABEL: func.func @with_capacity
// CHECK:         %{{.*}}, %{{.*}}, %[[TOKENS:.*]], %{{.*}}, %{{.*}} = moe.dispatch_plan
// The combine's counting sort: a sequential loop over the slots.
// CHECK:         %[[SLOTS:.*]] = tensor.dim %[[TOKENS]], %c0
// CHECK:         scf.for %{{.*}} = %c0 to %[[SLOTS]] step %c1
// CHECK-NOT:     moe.combine
func.func @with_capacity(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>, %rows: tensor<?x4xf32>, %init: tensor<?x4xf32>) -> tensor<?x4xf32> {
  %counts, %offsets, %token_ids, %slot_weights, %dropped = moe.dispatch_plan %ids, %w experts(6) top_k(2) capacity(1.0) overflow(drop) priority(token_order) : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<6xi32>, tensor<7xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  %y = moe.combine ins(%rows, %token_ids, %slot_weights : tensor<?x4xf32>, tensor<?xi32>, tensor<?xf32>) outs(%init : tensor<?x4xf32>) -> tensor<?x4xf32>
  return %y : tensor<?x4xf32>
}
