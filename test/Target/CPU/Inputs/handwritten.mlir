// A layer written directly in the moe dialect: a router-only function
// (logits -> top-1 expert and weight), exported like a spec-built layer.
func.func @router_only(%x: tensor<?x8xf32> {moe.name = "x"},
                       %gate: tensor<4x8xf32> {moe.name = "gate"})
    -> (tensor<?x1xi32> {moe.name = "ids"}, tensor<?x1xf32> {moe.name = "weights"}) {
  %c0 = arith.constant 0 : index
  %zero = arith.constant 0.0 : f32
  %t = tensor.dim %x, %c0 : tensor<?x8xf32>
  %empty = tensor.empty(%t) : tensor<?x4xf32>
  %init = linalg.fill ins(%zero : f32) outs(%empty : tensor<?x4xf32>) -> tensor<?x4xf32>
  %logits = moe.linear ins(%x, %gate : tensor<?x8xf32>, tensor<4x8xf32>)
                       outs(%init : tensor<?x4xf32>) -> tensor<?x4xf32>
  %w, %ids = moe.route %logits top_k(1) score(softmax) order(score_then_topk)
      : tensor<?x4xf32> -> tensor<?x1xf32>, tensor<?x1xi32>
  return %ids, %w : tensor<?x1xi32>, tensor<?x1xf32>
}
