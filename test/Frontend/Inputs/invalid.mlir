// A router that picks more experts than it has: the verifier rejects it.

func.func @router(%logits: tensor<?x8xf32>) -> (tensor<?x9xf32>, tensor<?x9xi32>) {
  // Reported here.
  %w, %ids = moe.route %logits top_k(9) score(softmax) order(score_then_topk)
      : tensor<?x8xf32> -> tensor<?x9xf32>, tensor<?x9xi32>
  return %w, %ids : tensor<?x9xf32>, tensor<?x9xi32>
}
