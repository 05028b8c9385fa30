// A moe-dialect module as input: parsed, verified and printed back.
// RUN: moe-compile --emit=mlir %s | FileCheck %s
// RUN: not moe-compile --emit=mlir %S/Inputs/invalid.mlir 2>&1 | FileCheck %s --check-prefix=INVALID
// What the front end emits is valid input too.
// RUN: moe-compile --emit=mlir %examples/deepseek_v3.yaml -o %t.mlir
// RUN: moe-compile --emit=mlir %t.mlir | FileCheck %s --check-prefix=ROUNDTRIP

// CHECK-LABEL: func.func @router(
// CHECK-SAME: %[[LOGITS:.*]]: tensor<?x8xf32>)
// CHECK: %[[W:.*]], %[[IDS:.*]] = moe.route %[[LOGITS]] top_k(2) score(softmax) order(topk_then_score) : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
// CHECK: return %[[W]], %[[IDS]]
func.func @router(%logits: tensor<?x8xf32>) -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %w, %ids = moe.route %logits top_k(2) score(softmax) order(topk_then_score)
      : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %w, %ids : tensor<?x2xf32>, tensor<?x2xi32>
}

// INVALID: {{.*}}invalid.mlir:5:14: error: 'moe.route' op expects top_k (9) <= experts (8)

// ROUNDTRIP-LABEL: func.func @deepseek_v3_moe(
// ROUNDTRIP: moe.route {{.*}} groups(8, keep 4, top2_sum)
// ROUNDTRIP: moe.shared_expert swiglu
