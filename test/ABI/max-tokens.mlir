// RUN: moe-opt %s --moe-create-c-entry-points -split-input-file -verify-diagnostics | FileCheck %s

// The entry point refuses more tokens than the layer's buffers and 32-bit
// counts can index, with one comparison against a limit fixed at compile
// time. Here the bound is a buffer: 16 bytes per token of x (and of out)
// within 2^47 bytes.
// CHECK-DAG: llvm.mlir.global internal constant @[[MSG:.*]]("copy_forward: tokens must be <= 8796093022208 for this layer (buffer 'x' of 16 bytes per token must stay within 2^47 bytes)\00")
// CHECK-LABEL: func.func @copy_forward(
// CHECK-SAME:    %[[T:[^:]*]]: i64,
// CHECK:         arith.cmpi slt, %[[T]]
// CHECK:         %[[MAX:.*]] = arith.constant 8796093022208 : i64
// CHECK:         arith.cmpi sgt, %[[T]], %[[MAX]] : i64
// CHECK:         cf.cond_br
// CHECK:         llvm.mlir.addressof @[[MSG]]
func.func @copy(%x: tensor<?x4xf32> {moe.name = "x"}) -> (tensor<?x4xf32> {moe.name = "out"}) {
  return %x : tensor<?x4xf32>
}

// -----

// Dispatch slots are counted in i32: 3 per token allow (2^31 - 1) / 3 tokens.
// CHECK: "plan_forward: tokens must be <= 715827882 for this layer (its tokens x 3 dispatch slots are counted in 32 bits)\00"
// CHECK-LABEL: func.func @plan_forward(
// CHECK:         arith.constant 715827882 : i64
func.func @plan(%x: tensor<?x4xf32> {moe.name = "x"}) -> (tensor<4xi32> {moe.name = "counts"}) {
  %c0 = arith.constant 0 : index
  %t = tensor.dim %x, %c0 : tensor<?x4xf32>
  %v0 = tensor.empty(%t) : tensor<?x3xf32>
  %i0 = tensor.empty(%t) : tensor<?x3xi32>
  %v, %i = moe.topk ins(%x : tensor<?x4xf32>) outs(%v0, %i0 : tensor<?x3xf32>, tensor<?x3xi32>)
      -> tensor<?x3xf32>, tensor<?x3xi32>
  %counts, %offsets, %tokens, %slot_w, %dropped = moe.dispatch_plan %i, %v experts(4) top_k(3)
      : tensor<?x3xi32>, tensor<?x3xf32>
      -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return %counts : tensor<4xi32>
}

// -----

// MH-MoE sub-tokens: 2 rows per token after the split, 3 slots each.
// CHECK: "split_forward: tokens must be <= 357913941 for this layer (its tokens x 6 dispatch slots are counted in 32 bits)\00"
func.func @split(%x: tensor<?x6xf32> {moe.name = "x"}) -> (tensor<4xi32> {moe.name = "counts"}) {
  %sub = moe.token_split %x heads(2) : tensor<?x6xf32> -> tensor<?x3xf32>
  %c0 = arith.constant 0 : index
  %t = tensor.dim %sub, %c0 : tensor<?x3xf32>
  %v0 = tensor.empty(%t) : tensor<?x3xf32>
  %i0 = tensor.empty(%t) : tensor<?x3xi32>
  %v, %i = moe.topk ins(%sub : tensor<?x3xf32>) outs(%v0, %i0 : tensor<?x3xf32>, tensor<?x3xi32>)
      -> tensor<?x3xf32>, tensor<?x3xi32>
  %counts, %offsets, %tokens, %slot_w, %dropped = moe.dispatch_plan %i, %v experts(4) top_k(3)
      : tensor<?x3xi32>, tensor<?x3xf32>
      -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return %counts : tensor<4xi32>
}

// -----

// Noisy routing numbers its rows with a 32-bit counter: MH-MoE's 4 sub-tokens
// per token allow 2^30 tokens (docs/semantics.md, section 5).
// CHECK: "noisy_forward: tokens must be <= 1073741824 for this layer (its tokens x 4 noisy rows are numbered by a 32-bit counter)\00"
func.func @noisy(%x: tensor<?x4xf32> {moe.name = "x"}, %seed: i64)
    -> (tensor<?x1xi32> {moe.name = "ids", moe.rows_per_token = 4 : i64}) {
  %sub = moe.token_split %x heads(4) : tensor<?x4xf32> -> tensor<?x1xf32>
  %w, %ids = moe.route %sub top_k(1) score(softmax) order(topk_then_score)
      noise(%sub, %seed : tensor<?x1xf32>) : tensor<?x1xf32> -> tensor<?x1xf32>, tensor<?x1xi32>
  return %ids : tensor<?x1xi32>
}

// -----

// Scratch counts too: one token's 2^33-byte row allows 2^14 tokens.
// CHECK: "wide_forward: tokens must be <= 16384 for this layer (its 8589934592 bytes per token of one tensor must stay within 2^47 bytes)\00"
func.func @wide(%x: tensor<?x4xf32> {moe.name = "x"}) -> (tensor<?x4xf32> {moe.name = "out"}) {
  %c0 = arith.constant 0 : index
  %t = tensor.dim %x, %c0 : tensor<?x4xf32>
  %scratch = tensor.empty(%t) : tensor<?x2147483648xf32>
  return %x : tensor<?x4xf32>
}

// -----

// expected-error @+1 {{cannot export 'x': one token's 1 row(s) of 'tensor<?x70368744177664xf32>' need more than 140737488355328 bytes (2^47, the address space a buffer may span)}}
func.func @wide_token(%x: tensor<?x70368744177664xf32> {moe.name = "x"}) -> tensor<?x70368744177664xf32> {
  return %x : tensor<?x70368744177664xf32>
}

// -----

// expected-error @+1 {{cannot export 'w': 'tensor<65536x65536x65536xbf16>' needs more than 140737488355328 bytes (2^47, the address space a buffer may span)}}
func.func @huge_weight(%x: tensor<?x8xf32>, %w: tensor<65536x65536x65536xbf16> {moe.name = "w"}) -> tensor<?x8xf32> {
  return %x : tensor<?x8xf32>
}

// -----

func.func @too_many_slots(%x: tensor<?x4xf32> {moe.name = "x"}, %ids: tensor<?x2147483648xi32> {moe.name = "ids"},
                          %w: tensor<?x2147483648xf32> {moe.name = "w"}) -> (tensor<i32> {moe.name = "dropped"}) {
  // expected-error @+1 {{cannot run one token: its 1 x 2147483648 dispatch slots per token exceed 2147483647, the most the 32-bit counts and offsets hold}}
  %counts, %offsets, %tokens, %slot_w, %dropped = moe.dispatch_plan %ids, %w experts(2147483648) top_k(2147483648)
      : tensor<?x2147483648xi32>, tensor<?x2147483648xf32>
      -> tensor<2147483648xi32>, tensor<2147483649xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return %dropped : tensor<i32>
}
