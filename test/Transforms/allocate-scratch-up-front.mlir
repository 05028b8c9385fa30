// RUN: moe-opt %s --moe-allocate-scratch-up-front -split-input-file \
// RUN:     -verify-diagnostics | FileCheck %s

// Allocations at the top level: one slot each (64-byte aligned), in one
// scratch buffer allocated after the checks and before the first write; a
// failure returns MOE_ERROR_OUT_OF_MEMORY (3) with nothing written, and the
// buffer is freed before the return after the work.

// CHECK-LABEL: llvm.mlir.global internal constant @top_level_scratch_name("top_level\00")
// CHECK-LABEL: func.func @top_level
// CHECK-SAME:    (%[[N:.*]]: index, %[[OUT:.*]]: memref<?xf32>) -> i32 {
// CHECK-NOT:     moe.returns_status
// CHECK:         cf.cond_br %{{.*}}, ^[[BAD:.*]], ^[[CHECKED:.*]]
// CHECK:       ^[[CHECKED]]:
// CHECK:         %[[ROWS_BYTES:.*]] = arith.muli %[[N]], %{{.*}} : index
// CHECK:         %[[ROUNDED:.*]] = arith.andi %{{.*}}, %{{.*}} : index
// CHECK:         %[[TOTAL:.*]] = arith.addi %[[ROUNDED]], %{{.*}} : index
// CHECK:         %[[BYTES:.*]] = arith.index_cast %[[TOTAL]] : index to i64
// CHECK:         %[[NAME:.*]] = llvm.mlir.addressof @top_level_scratch_name
// CHECK:         %[[PTR:.*]] = call @moe_rt_alloc_scratch(%[[BYTES]], %[[NAME]])
// CHECK:         %[[NULL:.*]] = llvm.icmp "eq" %[[PTR]], %{{.*}} : !llvm.ptr
// CHECK:         cf.cond_br %[[NULL]], ^[[OOM:.*]], ^[[WORK:.*]]
// CHECK:       ^[[OOM]]:
// CHECK:         %[[C3:.*]] = arith.constant 3 : i32
// CHECK:         return %[[C3]] : i32
// CHECK:       ^[[WORK]]:
// CHECK:         %[[SCRATCH:.*]] = builtin.unrealized_conversion_cast %{{.*}} to memref<?xi8>
// CHECK:         %[[A:.*]] = memref.view %[[SCRATCH]][%{{.*}}][%[[N]]] : memref<?xi8> to memref<?x4xf32>
// CHECK:         linalg.fill ins(%{{.*}}) outs(%[[A]] : memref<?x4xf32>)
// CHECK:         memref.view %[[SCRATCH]][%[[ROUNDED]]][] : memref<?xi8> to memref<3xi32>
// CHECK-NOT:     memref.alloc
// CHECK:         memref.store %{{.*}}, %[[OUT]]
// CHECK:         call @moe_rt_free_scratch(%[[PTR]])
// CHECK-NEXT:    return
// CHECK:       ^[[BAD]]:
// CHECK-NOT:     moe_rt_free_scratch
// CHECK:         return
func.func @top_level(%n: index, %out: memref<?xf32>) -> i32 attributes {moe.returns_status} {
  %c0 = arith.constant 0 : index
  %cst = arith.constant 1.0 : f32
  %ok = arith.constant 0 : i32
  %bad = arith.constant 2 : i32
  %empty = arith.cmpi eq, %n, %c0 : index
  cf.cond_br %empty, ^bad, ^checked
^checked:
  %a = memref.alloc(%n) {alignment = 64 : i64} : memref<?x4xf32>
  linalg.fill ins(%cst : f32) outs(%a : memref<?x4xf32>)
  %b = memref.alloc() : memref<3xi32>
  %v = memref.load %a[%c0, %c0] : memref<?x4xf32>
  memref.store %v, %out[%c0] : memref<?xf32>
  return %ok : i32
^bad:
  return %bad : i32
}

// CHECK-DAG: func.func private @moe_rt_alloc_scratch(i64, !llvm.ptr) -> !llvm.ptr
// CHECK-DAG: func.func private @moe_rt_free_scratch(!llvm.ptr)

// -----

// The scratch buffer comes before the first op that writes, even when the
// first allocation comes later: a failure leaves %out as it was.

// CHECK-LABEL: func.func @write_before_alloc
// CHECK:         call @moe_rt_alloc_scratch
// CHECK:         cf.cond_br
// CHECK:         memref.store
// CHECK:         memref.view
// CHECK-NOT:     memref.alloc
func.func @write_before_alloc(%n: index, %out: memref<?xf32>) -> i32 attributes {moe.returns_status} {
  %c0 = arith.constant 0 : index
  %cst = arith.constant 1.0 : f32
  %ok = arith.constant 0 : i32
  memref.store %cst, %out[%c0] : memref<?xf32>
  %a = memref.alloc(%n) : memref<?xf32>
  linalg.fill ins(%cst : f32) outs(%a : memref<?xf32>)
  return %ok : i32
}

// -----

// A token tile's buffer inside scf.forall: iterations may run at once, so
// each gets its own slot, sized for the largest tile (16 rows of 32 bytes)
// and addressed by the induction variable; the hot loop does an index
// computation instead of a malloc.

// CHECK-LABEL: func.func @forall_tiles
// CHECK-SAME:    (%[[N:.*]]: index
// CHECK:         arith.constant 512 : index
// CHECK:         %[[SPAN:.*]] = arith.maxsi %[[N]], %{{.*}} : index
// CHECK:         %[[C16:.*]] = arith.constant 16 : index
// CHECK:         %[[TILES:.*]] = arith.ceildivui %[[SPAN]], %[[C16]] : index
// CHECK:         %[[TOTAL:.*]] = arith.muli %[[TILES]], %[[SLOT:.*]] : index
// CHECK:         %[[BYTES:.*]] = arith.index_cast %[[TOTAL]] : index to i64
// CHECK:         call @moe_rt_alloc_scratch(%[[BYTES]],
// CHECK:         %[[SCRATCH:.*]] = builtin.unrealized_conversion_cast
// CHECK:         scf.forall (%[[T:.*]]) = (0) to (%[[N]]) step (16) {
// CHECK:           %[[ROWS:.*]] = affine.min
// CHECK:           %[[I:.*]] = arith.divui %[[T]], %{{.*}} : index
// CHECK:           %[[AT:.*]] = arith.muli %[[I]], %[[SLOT]] : index
// CHECK:           %[[OFFSET:.*]] = arith.addi %{{.*}}, %[[AT]] : index
// CHECK:           memref.view %[[SCRATCH]][%[[OFFSET]]][%[[ROWS]]] : memref<?xi8> to memref<?x8xf32>
// CHECK-NOT:       memref.alloc
// CHECK:         }
func.func @forall_tiles(%n: index, %out: memref<?x8xf32>) -> i32 attributes {moe.returns_status} {
  %ok = arith.constant 0 : i32
  %cst = arith.constant 0.0 : f32
  scf.forall (%t) = (0) to (%n) step (16) {
    %rows = affine.min affine_map<(d0)[s0] -> (16, s0 - d0)>(%t)[%n]
    %tile = memref.alloc(%rows) : memref<?x8xf32>
    linalg.fill ins(%cst : f32) outs(%tile : memref<?x8xf32>)
    %dst = memref.subview %out[%t, 0] [%rows, 8] [1, 1] : memref<?x8xf32> to memref<?x8xf32, strided<[8, 1], offset: ?>>
    memref.copy %tile, %dst : memref<?x8xf32> to memref<?x8xf32, strided<[8, 1], offset: ?>>
  }
  return %ok : i32
}

// -----

// A tile read by vector loads whose values a loop carries (a vectorised
// matmul's accumulators): the vectors are copies of its data, not views, so
// the tile still dies with its iteration and moves into the scratch buffer.

// CHECK-LABEL: func.func @tile_read_into_loop_carried_vectors
// CHECK:         call @moe_rt_alloc_scratch
// CHECK:         scf.forall
// CHECK:           memref.view
// CHECK-NOT:       memref.alloc
// CHECK:           scf.for
func.func @tile_read_into_loop_carried_vectors(%n: index, %out: memref<?x16xf32>) -> i32 attributes {moe.returns_status} {
  %ok = arith.constant 0 : i32
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %cst = arith.constant 1.0 : f32
  %zero = arith.constant dense<0.0> : vector<16xf32>
  scf.forall (%t) = (0) to (%n) step (16) {
    %rows = affine.min affine_map<(d0)[s0] -> (16, s0 - d0)>(%t)[%n]
    %tile = memref.alloc(%rows) {alignment = 64 : i64} : memref<?x16xf32>
    linalg.fill ins(%cst : f32) outs(%tile : memref<?x16xf32>)
    %sum = scf.for %r = %c0 to %rows step %c1 iter_args(%acc = %zero) -> (vector<16xf32>) {
      %v = vector.load %tile[%r, %c0] : memref<?x16xf32>, vector<16xf32>
      %next = arith.addf %acc, %v : vector<16xf32>
      scf.yield %next : vector<16xf32>
    }
    vector.store %sum, %out[%t, %c0] : memref<?x16xf32>, vector<16xf32>
  }
  return %ok : i32
}

// -----

// A size read off a buffer the work fills, through its reshapes (MH-MoE's
// sub-tokens: a collapse of an expand of the projected tokens): the shape is
// the arguments' (%n x 2 rows), so the slot is sized before the work.

// CHECK-LABEL: func.func @size_through_reshapes
// CHECK-SAME:    (%[[N:.*]]: index
// CHECK:         %[[ROWS:.*]] = arith.muli %[[N]], %{{.*}} : index
// CHECK:         call @moe_rt_alloc_scratch
// CHECK:         linalg.fill
// CHECK:         memref.view
// CHECK-NOT:     memref.alloc(
func.func @size_through_reshapes(%n: index, %out: memref<?xf32>) -> i32 attributes {moe.returns_status} {
  %ok = arith.constant 0 : i32
  %c0 = arith.constant 0 : index
  %cst = arith.constant 0.0 : f32
  %tokens = memref.alloc(%n) : memref<?x16xf32>
  linalg.fill ins(%cst : f32) outs(%tokens : memref<?x16xf32>)
  %split = memref.expand_shape %tokens [[0], [1, 2]] output_shape [%n, 2, 8] : memref<?x16xf32> into memref<?x2x8xf32>
  %sub = memref.collapse_shape %split [[0, 1], [2]] : memref<?x2x8xf32> into memref<?x8xf32>
  %rows = memref.dim %sub, %c0 : memref<?x8xf32>
  %slots = memref.alloc(%rows) : memref<?xf32>
  linalg.fill ins(%cst : f32) outs(%slots : memref<?xf32>)
  return %ok : i32
}

// -----

// An expert's rows in a sequential loop (the reference lowering): offsets
// read from memory, clamped into [0, %n], so at most %n rows; the buffer dies
// with the iteration, so one slot serves them all.

// CHECK-LABEL: func.func @clamped_rows
// CHECK-SAME:    (%[[N:.*]]: index
// CHECK:         %[[LOW:.*]] = arith.minsi %[[N]], %{{.*}} : index
// CHECK:         %[[MOST:.*]] = arith.subi %[[N]], %[[LOW]] : index
// CHECK:         arith.muli %[[MOST]], %{{.*}} : index
// CHECK:         call @moe_rt_alloc_scratch
// CHECK:         %[[SCRATCH:.*]] = builtin.unrealized_conversion_cast
// CHECK:         scf.for
// CHECK:           %[[ROWS:.*]] = arith.subi
// CHECK:           memref.view %[[SCRATCH]][%{{.*}}][%[[ROWS]]] : memref<?xi8> to memref<?x8xf32>
// CHECK-NOT:       memref.alloc
func.func @clamped_rows(%n: index, %offsets: memref<5xindex>, %out: memref<?x8xf32>) -> i32 attributes {moe.returns_status} {
  %ok = arith.constant 0 : i32
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  %cst = arith.constant 0.0 : f32
  scf.for %e = %c0 to %c4 step %c1 {
    %lo0 = memref.load %offsets[%e] : memref<5xindex>
    %lo1 = arith.maxsi %lo0, %c0 : index
    %lo = arith.minsi %lo1, %n : index
    %e1 = arith.addi %e, %c1 : index
    %hi0 = memref.load %offsets[%e1] : memref<5xindex>
    %hi1 = arith.maxsi %hi0, %lo : index
    %hi = arith.minsi %hi1, %n : index
    %rows = arith.subi %hi, %lo : index
    %buf = memref.alloc(%rows) : memref<?x8xf32>
    linalg.fill ins(%cst : f32) outs(%buf : memref<?x8xf32>)
    %dst = memref.subview %out[%lo, 0] [%rows, 8] [1, 1] : memref<?x8xf32> to memref<?x8xf32, strided<[8, 1], offset: ?>>
    memref.copy %buf, %dst : memref<?x8xf32> to memref<?x8xf32, strided<[8, 1], offset: ?>>
  }
  return %ok : i32
}

// -----

// A size read from memory with no bound, and a buffer that outlives its
// iteration (yielded to the next), cannot share the scratch buffer: they
// stay allocations, with a remark; the others still move.

// CHECK-LABEL: func.func @left_alone
// CHECK:         call @moe_rt_alloc_scratch
// CHECK:         memref.view
// CHECK:         memref.alloc(%{{.*}}) : memref<?xf32>
// CHECK:         scf.for
// CHECK:           memref.alloc() : memref<4xf32>
func.func @left_alone(%n: index, %sizes: memref<1xindex>) -> i32 attributes {moe.returns_status} {
  %ok = arith.constant 0 : i32
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  %cst = arith.constant 0.0 : f32
  %known = memref.alloc(%n) : memref<?xf32>
  linalg.fill ins(%cst : f32) outs(%known : memref<?xf32>)
  %m = memref.load %sizes[%c0] : memref<1xindex>
  // expected-remark @below {{scratch size unknown before the work starts: allocated where it is used}}
  %unknown = memref.alloc(%m) : memref<?xf32>
  linalg.fill ins(%cst : f32) outs(%unknown : memref<?xf32>)
  %init = memref.alloca() : memref<4xf32>
  %last = scf.for %i = %c0 to %c4 step %c1 iter_args(%prev = %init) -> (memref<4xf32>) {
    // expected-remark @below {{scratch size unknown before the work starts: allocated where it is used}}
    %next = memref.alloc() : memref<4xf32>
    memref.copy %prev, %next : memref<4xf32> to memref<4xf32>
    scf.yield %next : memref<4xf32>
  }
  return %ok : i32
}

// -----

// Functions without the mark are left alone.

// CHECK-LABEL: func.func @unmarked
// CHECK:         memref.alloc
// CHECK-NOT:     moe_rt_alloc_scratch
func.func @unmarked(%n: index) {
  %a = memref.alloc(%n) : memref<?xf32>
  return
}

// -----

// expected-error @below {{'func.func' op expects a single i32 status result (moe.returns_status), found '(index) -> ()'}}
func.func @no_status(%n: index) attributes {moe.returns_status} {
  %a = memref.alloc(%n) : memref<?xf32>
  return
}
