// RUN: moe-opt --convert-moe-to-linalg -split-input-file %s | FileCheck %s

// Dropless: count, prefix-sum, then fill slots in token order; dropped is
// T*k minus the kept total.
// CHECK-LABEL: func.func @plan_dropless
// CHECK-SAME:    %[[IDS:[a-zA-Z0-9_]+]]: tensor<?x2xi32>, %[[W:[a-zA-Z0-9_]+]]: tensor<?x2xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[T:.*]] = tensor.dim %[[IDS]], %{{.*}} : tensor<?x2xi32>
// CHECK:         %[[COUNTS:.*]] = scf.for %{{.*}} = %{{.*}} to %[[T]]
// CHECK:           scf.for
// CHECK:             %[[E:.*]] = tensor.extract %[[IDS]]
// CHECK:             arith.index_cast %[[E]] : i32 to index
// CHECK:             tensor.insert
// CHECK:         %[[OFFSETS:.*]]:2 = scf.for {{.*}} -> (tensor<5xi32>, i32)
// CHECK:           tensor.extract %[[COUNTS]]
// CHECK:         %[[CURSOR:.*]] = tensor.extract_slice %[[OFFSETS]]#0[0] [4] [1] : tensor<5xi32> to tensor<4xi32>
// CHECK:         %[[SLOTS:.*]]:3 = scf.for {{.*}} iter_args({{.*}}, %{{.*}} = %[[CURSOR]]) -> (tensor<?xi32>, tensor<?xf32>, tensor<4xi32>)
// CHECK:           scf.for
// CHECK:             scf.if
// CHECK:               tensor.extract %[[W]]
// CHECK:         %[[KEPT:.*]] = tensor.extract %[[OFFSETS]]#0[%{{.*}}] : tensor<5xi32>
// CHECK:         %[[DROPPED:.*]] = arith.subi %{{.*}}, %[[KEPT]] : i32
// CHECK:         %[[D:.*]] = tensor.from_elements %[[DROPPED]] : tensor<i32>
// CHECK:         return %[[COUNTS]], %[[OFFSETS]]#0, %[[SLOTS]]#0, %[[SLOTS]]#1, %[[D]]
func.func @plan_dropless(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>)
    -> (tensor<4xi32>, tensor<5xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>) {
  %c, %o, %t, %sw, %d = moe.dispatch_plan %ids, %w experts(4) top_k(2)
      : tensor<?x2xi32>, tensor<?x2xf32>
      -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return %c, %o, %t, %sw, %d : tensor<4xi32>, tensor<5xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
}

// -----

// Capacity with drop: cap = ceil(factor * T * k / E) in f64, clamped to T*k;
// choice rank outer, tokens inner.
// CHECK-LABEL: func.func @plan_capacity_drop
// CHECK-SAME:    %[[IDS:[a-zA-Z0-9_]+]]: tensor<8x2xi32>
// CHECK-NOT:     moe.
// CHECK:         %[[TF:.*]] = arith.sitofp %{{.*}} : i64 to f64
// CHECK:         %[[M1:.*]] = arith.mulf %{{.*}}, %[[TF]] : f64
// CHECK:         %[[M2:.*]] = arith.mulf %[[M1]], %{{.*}} : f64
// CHECK:         %[[DIV:.*]] = arith.divf %[[M2]], %{{.*}} : f64
// CHECK:         %[[CEIL:.*]] = math.ceil %[[DIV]] : f64
// CHECK:         %[[CLAMP:.*]] = arith.minimumf %[[CEIL]], %{{.*}} : f64
// CHECK:         %[[CAP:.*]] = arith.fptosi %[[CLAMP]] : f64 to i32
// CHECK:         scf.for %[[J:.*]] = %{{.*}} to %{{.*}} step
// CHECK:           scf.for %[[P:.*]] = %{{.*}} to %{{.*}} step
// CHECK:             %[[E:.*]] = tensor.extract %[[IDS]][%[[P]], %[[J]]]
// CHECK:             %[[CNT:.*]] = tensor.extract
// CHECK:             %[[ROOM:.*]] = arith.cmpi slt, %[[CNT]], %[[CAP]] : i32
// CHECK:             %[[FITS:.*]] = arith.andi %{{.*}}, %[[ROOM]] : i1
// CHECK:             scf.if %[[FITS]]
// CHECK:               %[[TAKEN:.*]] = tensor.extract %[[IDS]][%[[P]], %[[J]]]
// CHECK:               tensor.insert %[[TAKEN]] into %{{.*}}[%[[P]], %[[J]]] : tensor<8x2xi32>
// CHECK:         return
func.func @plan_capacity_drop(%ids: tensor<8x2xi32>, %w: tensor<8x2xf32>)
    -> (tensor<4xi32>, tensor<5xi32>, tensor<16xi32>, tensor<16xf32>, tensor<i32>) {
  %c, %o, %t, %sw, %d = moe.dispatch_plan %ids, %w experts(4) top_k(2)
      capacity(1.25) overflow(drop) priority(token_order)
      : tensor<8x2xi32>, tensor<8x2xf32>
      -> tensor<4xi32>, tensor<5xi32>, tensor<16xi32>, tensor<16xf32>, tensor<i32>
  return %c, %o, %t, %sw, %d : tensor<4xi32>, tensor<5xi32>, tensor<16xi32>, tensor<16xf32>, tensor<i32>
}

// -----

// batch_prioritized: tokens sorted by the ranking rule on the first-choice
// weights with a bottom-up merge sort (O(T log T), no [T, T] ranking): pass
// p merges runs of 2^p from a copy of the order back into it, taking the
// right run's head when it ranks ahead.
// CHECK-LABEL: func.func @plan_batch_prioritized
// CHECK-SAME:    %[[IDS:[a-zA-Z0-9_]+]]: tensor<?x2xi32>, %[[W:[a-zA-Z0-9_]+]]: tensor<?x2xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[FIRST:.*]] = tensor.extract_slice %[[W]][0, 0] [%{{.*}}, 1] [1, 1] : tensor<?x2xf32> to tensor<?xf32>
// CHECK-NOT:     linalg.generic
// CHECK:         %[[IOTA:.*]] = scf.for
// CHECK:           tensor.insert
// CHECK:         %[[ORDER:.*]] = scf.for %{{.*}} = %{{.*}} to %c63 step %{{.*}} iter_args(%[[CUR:.*]] = %[[IOTA]])
// CHECK:           arith.shli
// CHECK:           scf.if
// CHECK:             %[[SRC:.*]] = linalg.copy ins(%[[CUR]] : tensor<?xi32>)
// CHECK:             scf.for
// CHECK:               scf.for
// CHECK:                 %[[TI:.*]] = tensor.extract %[[SRC]]
// CHECK:                 %[[TJ:.*]] = tensor.extract %[[SRC]]
// CHECK:                 tensor.extract %[[FIRST]]
// CHECK:                 arith.cmpf uno
// CHECK:                 arith.cmpf ogt
// CHECK:                 %[[TAKEN:.*]] = arith.select %{{.*}}, %[[TJ]], %[[TI]] : i32
// CHECK:                 tensor.insert %[[TAKEN]]
// CHECK:         scf.for
// CHECK:           scf.for
// CHECK:             %[[TOK:.*]] = tensor.extract %[[ORDER]]
// CHECK:             %[[T:.*]] = arith.index_cast %[[TOK]] : i32 to index
// CHECK:             tensor.extract %[[IDS]][%[[T]], %{{.*}}]
func.func @plan_batch_prioritized(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>)
    -> (tensor<4xi32>, tensor<5xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>) {
  %c, %o, %t, %sw, %d = moe.dispatch_plan %ids, %w experts(4) top_k(2)
      capacity(1.0) overflow(drop) priority(batch_prioritized)
      : tensor<?x2xi32>, tensor<?x2xf32>
      -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return %c, %o, %t, %sw, %d : tensor<4xi32>, tensor<5xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
}

// -----

// next_choice: an overflowing assignment scans fallback columns k ..< C for
// the first unused one with room, and marks it used.
// CHECK-LABEL: func.func @plan_next_choice
// CHECK-SAME:    %[[IDS:[a-zA-Z0-9_]+]]: tensor<?x3xi32>
// CHECK-NOT:     moe.
// CHECK:         linalg.fill ins(%{{.*}} : i1) outs(%{{.*}} : tensor<?x3xi1>)
// CHECK:         scf.for
// CHECK:           scf.for
// CHECK:             scf.if
// CHECK:             } else {
// CHECK:               %[[CHOSEN:.*]] = scf.for %[[C:.*]] = %{{.*}} to %{{.*}} step %{{.*}} iter_args(%{{.*}} = %{{.*}}) -> (i32)
// CHECK:                 tensor.extract %[[IDS]][%{{.*}}, %[[C]]]
// CHECK:                 arith.select
// CHECK:               %[[FOUND:.*]] = arith.cmpi sge, %[[CHOSEN]], %{{.*}} : i32
// CHECK:               scf.if %[[FOUND]]
// CHECK:                 tensor.insert %{{.*}} into %{{.*}} : tensor<?x3xi1>
func.func @plan_next_choice(%ids: tensor<?x3xi32>, %w: tensor<?x3xf32>)
    -> (tensor<4xi32>, tensor<5xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>) {
  %c, %o, %t, %sw, %d = moe.dispatch_plan %ids, %w experts(4) top_k(2)
      capacity(1.0) overflow(next_choice) priority(token_order)
      : tensor<?x3xi32>, tensor<?x3xf32>
      -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return %c, %o, %t, %sw, %d : tensor<4xi32>, tensor<5xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
}

// -----

// CHECK-LABEL: func.func @gather
// CHECK-SAME:    %[[X:[a-zA-Z0-9_]+]]: tensor<?x64xf32>, %[[TOK:[a-zA-Z0-9_]+]]: tensor<?xi32>, %[[INIT:[a-zA-Z0-9_]+]]: tensor<?x64xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[ROWS:.*]] = tensor.dim %[[X]], %{{.*}} : tensor<?x64xf32>
// CHECK:         %[[G:.*]] = linalg.generic
// CHECK-SAME:      ins(%[[TOK]] : tensor<?xi32>) outs(%[[INIT]] : tensor<?x64xf32>)
// CHECK:         ^bb0(%[[ID:.*]]: i32, %{{.*}}: f32):
// CHECK:           %[[IDX:.*]] = arith.index_cast %[[ID]] : i32 to index
// CHECK:           arith.cmpi slt, %[[IDX]], %[[ROWS]] : index
// CHECK:           %[[COL:.*]] = linalg.index 1 : index
// CHECK:           %[[V:.*]] = scf.if %{{.*}} -> (f32) {
// CHECK:             %[[LD:.*]] = tensor.extract %[[X]][%{{.*}}, %[[COL]]] : tensor<?x64xf32>
// CHECK:             scf.yield %[[LD]] : f32
// CHECK:           } else {
// CHECK:             scf.yield %{{.*}} : f32
// CHECK:           linalg.yield %[[V]] : f32
// CHECK:         return %[[G]]
func.func @gather(%x: tensor<?x64xf32>, %tokens: tensor<?xi32>, %init: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %rows = moe.gather ins(%x, %tokens : tensor<?x64xf32>, tensor<?xi32>)
                     outs(%init : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %rows : tensor<?x64xf32>
}

// -----

// Slot by slot (a fixed summation order per token).
// CHECK-LABEL: func.func @combine
// CHECK-SAME:    %[[Y:[a-zA-Z0-9_]+]]: tensor<?x64xf32>, %[[TOK:[a-zA-Z0-9_]+]]: tensor<?xi32>, %[[SW:[a-zA-Z0-9_]+]]: tensor<?xf32>, %[[INIT:[a-zA-Z0-9_]+]]: tensor<?x64xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[R:.*]] = scf.for %[[S:.*]] = %{{.*}} to %{{.*}} step %{{.*}} iter_args(%[[ACC:.*]] = %[[INIT]]) -> (tensor<?x64xf32>)
// CHECK:           %[[ID:.*]] = tensor.extract %[[TOK]][%[[S]]] : tensor<?xi32>
// CHECK:           %[[UPD:.*]] = scf.if %{{.*}} -> (tensor<?x64xf32>)
// CHECK:             %[[WT:.*]] = tensor.extract %[[SW]][%[[S]]]
// CHECK:             %[[SRC:.*]] = tensor.extract_slice %[[Y]][%[[S]], 0] [1, 64] [1, 1] : tensor<?x64xf32> to tensor<64xf32>
// CHECK:             %[[DST:.*]] = tensor.extract_slice %[[ACC]][%[[T:.*]], 0] [1, 64] [1, 1] : tensor<?x64xf32> to tensor<64xf32>
// CHECK:             %[[SUM:.*]] = linalg.generic {{.*}} ins(%[[SRC]] : tensor<64xf32>) outs(%[[DST]] : tensor<64xf32>)
// CHECK:               %[[P:.*]] = arith.mulf %[[WT]], %{{.*}} : f32
// CHECK:               arith.addf %{{.*}}, %[[P]] : f32
// CHECK:             tensor.insert_slice %[[SUM]] into %[[ACC]][%[[T]], 0] [1, 64] [1, 1]
// CHECK:           } else {
// CHECK:             scf.yield %[[ACC]]
// CHECK:         return %[[R]]
func.func @combine(%y: tensor<?x64xf32>, %tokens: tensor<?xi32>, %w: tensor<?xf32>, %init: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %out = moe.combine ins(%y, %tokens, %w : tensor<?x64xf32>, tensor<?xi32>, tensor<?xf32>)
                     outs(%init : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %out : tensor<?x64xf32>
}

// -----

// CHECK-LABEL: func.func @token_split
// CHECK-SAME:    %[[X:[a-zA-Z0-9_]+]]: tensor<?x64xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[E:.*]] = tensor.expand_shape %[[X]] {{\[}}[0], [1, 2]] output_shape [%{{.*}}, 4, 16] : tensor<?x64xf32> into tensor<?x4x16xf32>
// CHECK:         %[[C:.*]] = tensor.collapse_shape %[[E]] {{\[}}[0, 1], [2]] : tensor<?x4x16xf32> into tensor<?x16xf32>
// CHECK:         return %[[C]]
func.func @token_split(%x: tensor<?x64xf32>) -> tensor<?x16xf32> {
  %sub = moe.token_split %x heads(4) : tensor<?x64xf32> -> tensor<?x16xf32>
  return %sub : tensor<?x16xf32>
}

// -----

// CHECK-LABEL: func.func @token_merge
// CHECK-SAME:    %[[X:[a-zA-Z0-9_]+]]: tensor<8x16xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[E:.*]] = tensor.expand_shape %[[X]] {{\[}}[0, 1], [2]] output_shape [2, 4, 16] : tensor<8x16xf32> into tensor<2x4x16xf32>
// CHECK:         %[[C:.*]] = tensor.collapse_shape %[[E]] {{\[}}[0], [1, 2]] : tensor<2x4x16xf32> into tensor<2x64xf32>
// CHECK:         return %[[C]]
func.func @token_merge(%x: tensor<8x16xf32>) -> tensor<2x64xf32> {
  %m = moe.token_merge %x heads(4) : tensor<8x16xf32> -> tensor<2x64xf32>
  return %m : tensor<2x64xf32>
}

// -----

// A fixed capacity: min(N, T·k) in i64, truncated to i32; no float math.
// CHECK-LABEL: func.func @plan_capacity_tokens
// CHECK-NOT:     moe.dispatch_plan
// CHECK:         %[[N:.*]] = arith.constant 5 : i64
// CHECK:         %[[CAP:.*]] = arith.minsi %{{.*}}, %[[N]] : i64
// CHECK:         arith.trunci %[[CAP]] : i64 to i32
// CHECK-NOT:     math.ceil
func.func @plan_capacity_tokens(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> tensor<i32> {
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) capacity(tokens 5) overflow(drop) priority(token_order)
      : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return %d : tensor<i32>
}

// -----

// NLLB-MoE: capacity ceil(fraction · T) clamped to T·k, in f64; after the
// assignment each token's kept weights are divided by max(their sum, 2^-23).
// CHECK-LABEL: func.func @plan_capacity_fraction
// CHECK-NOT:     moe.dispatch_plan
// CHECK:         %[[F:.*]] = arith.constant 5.000000e-01 : f64
// CHECK:         %[[FT:.*]] = arith.mulf %[[F]], %{{.*}} : f64
// CHECK:         %[[CEIL:.*]] = math.ceil %[[FT]] : f64
// CHECK:         arith.minimumf %[[CEIL]], %{{.*}} : f64
// CHECK:         %[[KEPT:.*]]:4 = scf.for
// CHECK:         %[[SUMS:.*]] = linalg.generic {{.*}} iterator_types = ["parallel", "reduction"]} ins(%[[KEPT]]#2 : tensor<?x2xf32>)
// CHECK:         %[[EPS:.*]] = arith.constant 1.1920929E-7 : f32
// CHECK:         linalg.generic {{.*}} ins(%[[KEPT]]#2, %[[SUMS]] : tensor<?x2xf32>, tensor<?xf32>)
// CHECK:           %[[DENOM:.*]] = arith.maximumf %{{.*}}, %[[EPS]] : f32
// CHECK:           arith.divf %{{.*}}, %[[DENOM]] : f32
func.func @plan_capacity_fraction(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> tensor<?xf32> {
  %c, %o, %t, %s, %d = moe.dispatch_plan %ids, %w experts(8) top_k(2) capacity(fraction 0.5) overflow(drop) priority(token_order) renormalize
      : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
  return %s : tensor<?xf32>
}

// -----

// A scaled gather: the guarded row element times the slot's scale.
// CHECK-LABEL: func.func @gather_scaled
// CHECK-SAME:    %[[X:[a-zA-Z0-9_]+]]: tensor<?x64xf32>, %[[T:[a-zA-Z0-9_]+]]: tensor<?xi32>, %[[W:[a-zA-Z0-9_]+]]: tensor<?xf32>
// CHECK-NOT:     moe.gather
// CHECK:         linalg.generic {{.*}} ins(%[[T]], %[[W]] : tensor<?xi32>, tensor<?xf32>)
// CHECK:           tensor.extract %[[X]]
// CHECK:           arith.mulf
// CHECK:           linalg.yield
func.func @gather_scaled(%x: tensor<?x64xf32>, %tokens: tensor<?xi32>, %w: tensor<?xf32>,
                         %init: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %rows = moe.gather ins(%x, %tokens : tensor<?x64xf32>, tensor<?xi32>) scale(%w : tensor<?xf32>)
      outs(%init : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %rows : tensor<?x64xf32>
}
