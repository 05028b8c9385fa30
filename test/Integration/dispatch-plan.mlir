// RUN: moe-opt %s --moe-lower-to-cpu | mlir-runner -e main -entry-point-result=void -shared-libs=%mlir_runner_utils,%mlir_c_runner_utils,%moe_runtime | FileCheck %s

// moe.dispatch_plan end to end. The expected plans were worked by hand from
// the semantics (choice rank by choice rank, tokens in priority order, slots
// expert-major in token order) and cross-checked with an independent NumPy
// model. Each case prints counts, offsets, token_ids, slot_weights, dropped.

func.func private @printMemrefI32(tensor<*xi32> {bufferization.access = "read"})
func.func private @printMemrefF32(tensor<*xf32> {bufferization.access = "read"})

func.func @print_plan(%counts: tensor<?xi32>, %offsets: tensor<?xi32>,
                      %tokens: tensor<?xi32>, %weights: tensor<?xf32>,
                      %dropped: tensor<i32>) {
  %c = tensor.cast %counts : tensor<?xi32> to tensor<*xi32>
  %o = tensor.cast %offsets : tensor<?xi32> to tensor<*xi32>
  %t = tensor.cast %tokens : tensor<?xi32> to tensor<*xi32>
  %w = tensor.cast %weights : tensor<?xf32> to tensor<*xf32>
  %d = tensor.cast %dropped : tensor<i32> to tensor<*xi32>
  call @printMemrefI32(%c) : (tensor<*xi32>) -> ()
  call @printMemrefI32(%o) : (tensor<*xi32>) -> ()
  call @printMemrefI32(%t) : (tensor<*xi32>) -> ()
  call @printMemrefF32(%w) : (tensor<*xf32>) -> ()
  call @printMemrefI32(%d) : (tensor<*xi32>) -> ()
  return
}

// Dropless, T = 4, E = 4, k = 2, dynamic token count.
//   expert 0: (t0, .4) (t3, .8); expert 1: (t0, .6) (t1, .7) (t2, .45);
//   expert 2: (t1, .3) (t3, .2); expert 3: (t2, .55).
func.func @dropless() {
  %ids = arith.constant dense<[[1, 0], [1, 2], [3, 1], [0, 2]]> : tensor<4x2xi32>
  %w = arith.constant dense<[[0.6, 0.4], [0.7, 0.3], [0.55, 0.45], [0.8, 0.2]]> : tensor<4x2xf32>
  %dids = tensor.cast %ids : tensor<4x2xi32> to tensor<?x2xi32>
  %dw = tensor.cast %w : tensor<4x2xf32> to tensor<?x2xf32>
  %c, %o, %t, %sw, %d = moe.dispatch_plan %dids, %dw experts(4) top_k(2)
      : tensor<?x2xi32>, tensor<?x2xf32>
      -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  %dc = tensor.cast %c : tensor<4xi32> to tensor<?xi32>
  %do = tensor.cast %o : tensor<5xi32> to tensor<?xi32>
  call @print_plan(%dc, %do, %t, %sw, %d) : (tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>) -> ()
  return
}
// CHECK:       sizes = [4]
// CHECK-NEXT:  [2, 3, 2, 1]
// CHECK:       [0, 2, 5, 7, 8]
// CHECK:       [0, 3, 0, 1, 2, 1, 3, 2]
// CHECK:       [0.4, 0.8, 0.6, 0.7, 0.45, 0.3, 0.2, 0.55]
// CHECK:       [0]

// Dropless with every token on expert 2: experts 0, 1, 3 are unused.
func.func @one_expert() {
  %ids = arith.constant dense<2> : tensor<3x1xi32>
  %w = arith.constant dense<[[0.5], [0.25], [0.125]]> : tensor<3x1xf32>
  %c, %o, %t, %sw, %d = moe.dispatch_plan %ids, %w experts(4) top_k(1)
      : tensor<3x1xi32>, tensor<3x1xf32>
      -> tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  call @print_plan(%c, %o, %t, %sw, %d) : (tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>) -> ()
  return
}
// CHECK:       sizes = [4]
// CHECK-NEXT:  [0, 0, 3, 0]
// CHECK:       [0, 0, 0, 3, 3]
// CHECK:       [0, 1, 2]
// CHECK:       [0.5, 0.25, 0.125]
// CHECK:       [0]

// Capacity, overflow(drop), token_order: cap = ceil(1.0 * 6 * 2 / 4) = 3.
//   j = 0: t0, t1, t2 -> e0 (full); t3 -> e0 dropped; t4, t5 -> e1.
//   j = 1: t0 -> e1 (full); t1 -> e2; t2 -> e1 dropped; t3 -> e3;
//          t4 -> e0 dropped; t5 -> e2.
// Token 3 has the largest first-choice weight but loses its e0 slot.
func.func @capacity_drop_token_order() {
  %ids = arith.constant dense<[[0, 1], [0, 2], [0, 1], [0, 3], [1, 0], [1, 2]]> : tensor<6x2xi32>
  %w = arith.constant dense<[[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.95, 0.05], [0.5, 0.45], [0.65, 0.35]]> : tensor<6x2xf32>
  %c, %o, %t, %sw, %d = moe.dispatch_plan %ids, %w experts(4) top_k(2)
      capacity(1.0) overflow(drop) priority(token_order)
      : tensor<6x2xi32>, tensor<6x2xf32>
      -> tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  call @print_plan(%c, %o, %t, %sw, %d) : (tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>) -> ()
  return
}
// CHECK:       sizes = [4]
// CHECK-NEXT:  [3, 3, 2, 1]
// CHECK:       [0, 3, 6, 8, 9]
// CHECK:       [0, 1, 2, 0, 4, 5, 1, 5, 3, -1, -1, -1]
// CHECK:       [0.9, 0.8, 0.7, 0.1, 0.5, 0.65, 0.2, 0.35, 0.05, 0, 0, 0]
// CHECK:       [3]

// The same routing with batch_prioritized: tokens claim capacity in the
// order t3 (.95), t0, t1, t2, t5, t4, so t3 keeps e0 and t2 is dropped.
func.func @capacity_drop_batch_prioritized() {
  %ids = arith.constant dense<[[0, 1], [0, 2], [0, 1], [0, 3], [1, 0], [1, 2]]> : tensor<6x2xi32>
  %w = arith.constant dense<[[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.95, 0.05], [0.5, 0.45], [0.65, 0.35]]> : tensor<6x2xf32>
  %dids = tensor.cast %ids : tensor<6x2xi32> to tensor<?x2xi32>
  %dw = tensor.cast %w : tensor<6x2xf32> to tensor<?x2xf32>
  %c, %o, %t, %sw, %d = moe.dispatch_plan %dids, %dw experts(4) top_k(2)
      capacity(1.0) overflow(drop) priority(batch_prioritized)
      : tensor<?x2xi32>, tensor<?x2xf32>
      -> tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  call @print_plan(%c, %o, %t, %sw, %d) : (tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>) -> ()
  return
}
// CHECK:       sizes = [4]
// CHECK-NEXT:  [3, 3, 2, 1]
// CHECK:       [0, 3, 6, 8, 9]
// CHECK:       [0, 1, 3, 0, 4, 5, 1, 5, 3, -1, -1, -1]
// CHECK:       [0.9, 0.8, 0.95, 0.1, 0.5, 0.65, 0.2, 0.35, 0.05, 0, 0, 0]
// CHECK:       [3]

// batch_prioritized ranking rule: cap = ceil(0.5 * 4 * 1 / 2) = 1. t0 and t1
// tie at .5 (t0, the lower index, wins e0); t2's NaN ranks below t3's .2.
func.func @batch_prioritized_ties_and_nan() {
  %ids = arith.constant dense<[[0], [0], [1], [1]]> : tensor<4x1xi32>
  %w = arith.constant dense<[[0.5], [0.5], [0x7FC00000], [0.2]]> : tensor<4x1xf32>
  %c, %o, %t, %sw, %d = moe.dispatch_plan %ids, %w experts(2) top_k(1)
      capacity(0.5) overflow(drop) priority(batch_prioritized)
      : tensor<4x1xi32>, tensor<4x1xf32>
      -> tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  call @print_plan(%c, %o, %t, %sw, %d) : (tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>) -> ()
  return
}
// CHECK:       sizes = [2]
// CHECK-NEXT:  [1, 1]
// CHECK:       [0, 1, 2]
// CHECK:       [0, 3, -1, -1]
// CHECK:       [0.5, 0.2, 0, 0]
// CHECK:       [2]

// Every token on expert 1 under capacity: cap = ceil(1.0 * 4 * 1 / 2) = 2;
// token_order keeps t0, t1; batch_prioritized keeps the heaviest, t3, t2.
func.func @one_expert_capacity() {
  %ids = arith.constant dense<1> : tensor<4x1xi32>
  %w = arith.constant dense<[[0.5], [0.25], [0.75], [1.0]]> : tensor<4x1xf32>
  %c, %o, %t, %sw, %d = moe.dispatch_plan %ids, %w experts(2) top_k(1)
      capacity(1.0) overflow(drop) priority(token_order)
      : tensor<4x1xi32>, tensor<4x1xf32>
      -> tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  call @print_plan(%c, %o, %t, %sw, %d) : (tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>) -> ()
  %c2, %o2, %t2, %sw2, %d2 = moe.dispatch_plan %ids, %w experts(2) top_k(1)
      capacity(1.0) overflow(drop) priority(batch_prioritized)
      : tensor<4x1xi32>, tensor<4x1xf32>
      -> tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  call @print_plan(%c2, %o2, %t2, %sw2, %d2) : (tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>) -> ()
  return
}
// CHECK:       sizes = [2]
// CHECK-NEXT:  [0, 2]
// CHECK:       [0, 0, 2]
// CHECK:       [0, 1, -1, -1]
// CHECK:       [0.5, 0.25, 0, 0]
// CHECK:       [2]
// CHECK:       sizes = [2]
// CHECK-NEXT:  [0, 2]
// CHECK:       [0, 0, 2]
// CHECK:       [2, 3, -1, -1]
// CHECK:       [0.75, 1, 0, 0]
// CHECK:       [2]

// Capacity rounding: ceil(1.25 * 5 * 2 / 4) = ceil(3.125) = 4.
func.func @capacity_rounds_up() {
  %ids = arith.constant dense<[[0, 1], [0, 1], [0, 1], [0, 1], [0, 1]]> : tensor<5x2xi32>
  %w = arith.constant dense<0.5> : tensor<5x2xf32>
  %c, %o, %t, %sw, %d = moe.dispatch_plan %ids, %w experts(4) top_k(2)
      capacity(1.25) overflow(drop) priority(token_order)
      : tensor<5x2xi32>, tensor<5x2xf32>
      -> tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  call @print_plan(%c, %o, %t, %sw, %d) : (tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>) -> ()
  return
}
// CHECK:       sizes = [4]
// CHECK-NEXT:  [4, 4, 0, 0]
// CHECK:       [0, 4, 8, 8, 8]
// CHECK:       [0, 1, 2, 3, 0, 1, 2, 3, -1, -1]
// CHECK:       [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0, 0]
// CHECK:       [2]

// next_choice, a token does not reuse its fallback: cap = ceil(1.5) = 2.
//   j = 0: t0, t1 -> e0 (full); t2 -> fallback e3 (column 2).
//   j = 1: t0, t1 -> e1 (full); t2 overflows, its only fallback column is
//          used already (e3 still has room) -> dropped. Expert 2 is unused.
func.func @next_choice_no_reuse() {
  %ids = arith.constant dense<[[0, 1, 3], [0, 1, 3], [0, 1, 3]]> : tensor<3x3xi32>
  %w = arith.constant dense<[[0.5, 0.3, 0.2], [0.6, 0.3, 0.1], [0.7, 0.2, 0.125]]> : tensor<3x3xf32>
  %c, %o, %t, %sw, %d = moe.dispatch_plan %ids, %w experts(4) top_k(2)
      capacity(1.0) overflow(next_choice) priority(token_order)
      : tensor<3x3xi32>, tensor<3x3xf32>
      -> tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  call @print_plan(%c, %o, %t, %sw, %d) : (tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>) -> ()
  return
}
// CHECK:       sizes = [4]
// CHECK-NEXT:  [2, 2, 0, 1]
// CHECK:       [0, 2, 4, 4, 5]
// CHECK:       [0, 1, 0, 1, 2, -1]
// CHECK:       [0.5, 0.6, 0.3, 0.3, 0.125, 0]
// CHECK:       [1]

// next_choice, fallback full: cap = ceil(0.5 * 4 * 1 / 4) = 1.
//   t0 -> e0; t1: e0 full -> fallback e1; t2: e0 full, e1 full -> dropped;
//   t3 -> e2. Expert 3 is unused.
func.func @next_choice_fallback_full() {
  %ids = arith.constant dense<[[0, 1], [0, 1], [0, 1], [2, 3]]> : tensor<4x2xi32>
  %w = arith.constant dense<[[0.7, 0.3], [0.6, 0.4], [0.8, 0.2], [0.9, 0.1]]> : tensor<4x2xf32>
  %dids = tensor.cast %ids : tensor<4x2xi32> to tensor<?x2xi32>
  %dw = tensor.cast %w : tensor<4x2xf32> to tensor<?x2xf32>
  %c, %o, %t, %sw, %d = moe.dispatch_plan %dids, %dw experts(4) top_k(1)
      capacity(0.5) overflow(next_choice) priority(token_order)
      : tensor<?x2xi32>, tensor<?x2xf32>
      -> tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  call @print_plan(%c, %o, %t, %sw, %d) : (tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>) -> ()
  return
}
// CHECK:       sizes = [4]
// CHECK-NEXT:  [1, 1, 1, 0]
// CHECK:       [0, 1, 2, 3, 3]
// CHECK:       [0, 1, 3, -1]
// CHECK:       [0.7, 0.4, 0.9, 0]
// CHECK:       [1]

// next_choice with two fallback columns: cap = ceil(0.8 * 5 * 2 / 4) = 2.
//   j = 0: t0, t1 -> e0; t2 -> e3 (col 2); t3 -> e3 (col 2);
//          t4: e0 full, e3 full -> e1 (col 3).
//   j = 1: t0 -> e1 (full); t1 -> e2 (col 2); t2: col 2 used -> e2 (col 3);
//          t3: col 2 used, e1 full -> dropped; t4: e3 full, col 3 used -> dropped.
func.func @next_choice_two_fallbacks() {
  %ids = arith.constant dense<[[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 3, 2], [0, 2, 3, 1], [0, 2, 3, 1]]> : tensor<5x4xi32>
  %w = arith.constant dense<[[0.5, 0.3, 0.1, 0.1], [0.45, 0.35, 0.1, 0.1], [0.4, 0.3, 0.2, 0.1], [0.6, 0.25, 0.1, 0.05], [0.55, 0.3, 0.1, 0.05]]> : tensor<5x4xf32>
  %c, %o, %t, %sw, %d = moe.dispatch_plan %ids, %w experts(4) top_k(2)
      capacity(0.8) overflow(next_choice) priority(token_order)
      : tensor<5x4xi32>, tensor<5x4xf32>
      -> tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  call @print_plan(%c, %o, %t, %sw, %d) : (tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>) -> ()
  return
}
// CHECK:       sizes = [4]
// CHECK-NEXT:  [2, 2, 2, 2]
// CHECK:       [0, 2, 4, 6, 8]
// CHECK:       [0, 1, 0, 4, 1, 2, 2, 3, -1, -1]
// CHECK:       [0.5, 0.45, 0.3, 0.05, 0.1, 0.1, 0.2, 0.1, 0, 0]
// CHECK:       [2]

func.func @main() {
  call @dropless() : () -> ()
  call @one_expert() : () -> ()
  call @capacity_drop_token_order() : () -> ()
  call @capacity_drop_batch_prioritized() : () -> ()
  call @batch_prioritized_ties_and_nan() : () -> ()
  call @one_expert_capacity() : () -> ()
  call @capacity_rounds_up() : () -> ()
  call @next_choice_no_reuse() : () -> ()
  call @next_choice_fallback_full() : () -> ()
  call @next_choice_two_fallbacks() : () -> ()
  return
}
