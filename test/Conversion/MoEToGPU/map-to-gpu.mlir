// RUN: moe-opt %s -split-input-file -moe-map-to-gpu -verify-diagnostics | FileCheck %s
// RUN: moe-opt %s -split-input-file -moe-map-to-gpu=threads-per-block=64 -verify-diagnostics | FileCheck %s --check-prefix=T64
// RUN: not moe-opt %s -moe-map-to-gpu=threads-per-block=2048 2>&1 | FileCheck %s --check-prefix=BAD-THREADS

// A 2-d parallel loop: collapsed into one dimension, tiled into blocks of
// 256 threads, the tail guarded.
// CHECK-LABEL: func.func @elementwise
// CHECK:         %[[ROWS:.*]] = memref.dim %{{.*}}, %c0
// CHECK:         %[[GRID:.*]] = affine.apply #{{.*}}(%{{.*}})[%{{.*}}, %{{.*}}]
// CHECK:         %[[THREADS:.*]] = affine.apply
// CHECK:         gpu.launch blocks(%{{.*}}, %{{.*}}, %{{.*}}) in (%{{.*}} = %[[GRID]], %{{.*}} = %c1{{.*}}, %{{.*}} = %c1{{.*}}) threads(%{{.*}}, %{{.*}}, %{{.*}}) in (%{{.*}} = %[[THREADS]], %{{.*}} = %c1{{.*}}, %{{.*}} = %c1{{.*}})
// CHECK:           scf.if
// CHECK:             memref.load
// CHECK:             arith.mulf
// CHECK:             memref.store
// CHECK:           gpu.terminator
// CHECK-NOT:     scf.parallel
// T64-LABEL: func.func @elementwise
// T64:         %c64{{.*}} = arith.constant 64 : index
// T64:         arith.muli %{{.*}}, %c64
func.func @elementwise(%a: memref<?x64xf32>, %b: memref<?x64xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c64 = arith.constant 64 : index
  %rows = memref.dim %a, %c0 : memref<?x64xf32>
  scf.parallel (%i, %j) = (%c0, %c0) to (%rows, %c64) step (%c1, %c1) {
    %v = memref.load %a[%i, %j] : memref<?x64xf32>
    %w = arith.mulf %v, %v : f32
    memref.store %w, %b[%i, %j] : memref<?x64xf32>
    scf.reduce
  }
  return
}

// -----

// A token tile's loop (one token per iteration) with parallel loops over
// the token's row inside: the tile loop is the grid, the row loops run as
// scf.for nests in each thread, and nothing stays on the host.
// CHECK-LABEL: func.func @token_rows
// CHECK:         gpu.launch
// CHECK:           scf.if
// CHECK:             scf.for %{{.*}} = %c0{{.*}} to %c64{{.*}} step %c1
// CHECK:               math.exp
// CHECK:             scf.for %{{.*}} = %c0{{.*}} to %c64{{.*}} step %c1
// CHECK:               arith.addf
// CHECK:           gpu.terminator
// CHECK-NOT:     scf.parallel
func.func @token_rows(%a: memref<?x64xf32>, %sums: memref<?xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c64 = arith.constant 64 : index
  %zero = arith.constant 0.0 : f32
  %rows = memref.dim %a, %c0 : memref<?x64xf32>
  scf.parallel (%t) = (%c0) to (%rows) step (%c1) {
    scf.parallel (%j) = (%c0) to (%c64) step (%c1) {
      %v = memref.load %a[%t, %j] : memref<?x64xf32>
      %e = math.exp %v : f32
      memref.store %e, %a[%t, %j] : memref<?x64xf32>
      scf.reduce
    }
    memref.store %zero, %sums[%t] : memref<?xf32>
    scf.for %j = %c0 to %c64 step %c1 {
      %v = memref.load %a[%t, %j] : memref<?x64xf32>
      %s = memref.load %sums[%t] : memref<?xf32>
      %n = arith.addf %s, %v : f32
      memref.store %n, %sums[%t] : memref<?xf32>
    }
    scf.reduce
  }
  return
}

// -----

// Adjacent loops over the same space, each iteration owning its elements of
// every buffer both touch and one writes, run as one launch: the zero fill
// and the sum of each row, then the scale of each row.
// CHECK-LABEL: func.func @fused_row_loops
// CHECK:         gpu.launch
// CHECK:           memref.store %{{.*}}, %{{.*}}[%[[T:.*]]] : memref<?xf32>
// CHECK:           scf.for
// CHECK:             arith.addf
// CHECK:           arith.mulf
// CHECK:           gpu.terminator
// CHECK-NOT:     gpu.launch
func.func @fused_row_loops(%a: memref<?x64xf32>, %sums: memref<?xf32>, %out: memref<?xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c64 = arith.constant 64 : index
  %zero = arith.constant 0.0 : f32
  %half = arith.constant 0.5 : f32
  %rows = memref.dim %a, %c0 : memref<?x64xf32>
  scf.parallel (%t) = (%c0) to (%rows) step (%c1) {
    memref.store %zero, %sums[%t] : memref<?xf32>
    scf.reduce
  }
  scf.parallel (%t) = (%c0) to (%rows) step (%c1) {
    scf.for %j = %c0 to %c64 step %c1 {
      %v = memref.load %a[%t, %j] : memref<?x64xf32>
      %s = memref.load %sums[%t] : memref<?xf32>
      %n = arith.addf %s, %v : f32
      memref.store %n, %sums[%t] : memref<?xf32>
    }
    scf.reduce
  }
  // The same bound asked again.
  %rows2 = memref.dim %a, %c0 : memref<?x64xf32>
  scf.parallel (%t) = (%c0) to (%rows2) step (%c1) {
    %s = memref.load %sums[%t] : memref<?xf32>
    %h = arith.mulf %s, %half : f32
    memref.store %h, %out[%t] : memref<?xf32>
    scf.reduce
  }
  return
}

// -----

// Region ops whose effects are their bodies' (scf.index_switch, as the
// tensor-core tiles read their registers) are looked into: two loops each
// writing their own buffers and reading shared inputs fuse.
// CHECK-LABEL: func.func @fused_switch_loops
// CHECK:         gpu.launch
// CHECK:           scf.index_switch
// CHECK:           scf.index_switch
// CHECK:           gpu.terminator
// CHECK-NOT:     gpu.launch
func.func @fused_switch_loops(%a: memref<?xf32>, %b: memref<?xf32>, %sel: index, %x: memref<?xf32>, %y: memref<?xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %n = memref.dim %a, %c0 : memref<?xf32>
  scf.parallel (%i) = (%c0) to (%n) step (%c1) {
    %v = scf.index_switch %sel -> f32
    case 1 {
      %l = memref.load %b[%i] : memref<?xf32>
      scf.yield %l : f32
    }
    default {
      %l = memref.load %a[%i] : memref<?xf32>
      scf.yield %l : f32
    }
    memref.store %v, %x[%i] : memref<?xf32>
    scf.reduce
  }
  scf.parallel (%i) = (%c0) to (%n) step (%c1) {
    %v = scf.index_switch %sel -> f32
    case 1 {
      %l = memref.load %a[%i] : memref<?xf32>
      scf.yield %l : f32
    }
    default {
      %l = memref.load %b[%i] : memref<?xf32>
      scf.yield %l : f32
    }
    memref.store %v, %y[%i] : memref<?xf32>
    scf.reduce
  }
  return
}

// -----

// A loop moves down past loops independent of it to fuse: the fill of @out
// joins the read-out after a loop of another space that touches neither
// buffer (two launches); in @dependent the loop between reads the fill
// (three).
// CHECK-LABEL: func.func @fill_past_independent
// CHECK-COUNT-2: gpu.launch blocks
// CHECK-NOT:     gpu.launch blocks
// CHECK-LABEL: func.func @dependent
// CHECK-COUNT-3: gpu.launch blocks
// CHECK-NOT:     gpu.launch blocks
func.func @fill_past_independent(%a: memref<?x8xf32>, %regs: memref<?xf32>, %out: memref<?x8xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c8 = arith.constant 8 : index
  %zero = arith.constant 0.0 : f32
  %rows = memref.dim %a, %c0 : memref<?x8xf32>
  %items = memref.dim %regs, %c0 : memref<?xf32>
  scf.parallel (%i, %j) = (%c0, %c0) to (%rows, %c8) step (%c1, %c1) {
    memref.store %zero, %out[%i, %j] : memref<?x8xf32>
    scf.reduce
  }
  scf.parallel (%w) = (%c0) to (%items) step (%c1) {
    %v = memref.load %a[%c0, %c0] : memref<?x8xf32>
    memref.store %v, %regs[%w] : memref<?xf32>
    scf.reduce
  }
  scf.parallel (%i, %j) = (%c0, %c0) to (%rows, %c8) step (%c1, %c1) {
    %o = memref.load %out[%i, %j] : memref<?x8xf32>
    %r = memref.load %regs[%i] : memref<?xf32>
    %s = arith.addf %o, %r : f32
    memref.store %s, %out[%i, %j] : memref<?x8xf32>
    scf.reduce
  }
  return
}
func.func @dependent(%a: memref<?x8xf32>, %regs: memref<?xf32>, %out: memref<?x8xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c8 = arith.constant 8 : index
  %zero = arith.constant 0.0 : f32
  %rows = memref.dim %a, %c0 : memref<?x8xf32>
  %items = memref.dim %regs, %c0 : memref<?xf32>
  scf.parallel (%i, %j) = (%c0, %c0) to (%rows, %c8) step (%c1, %c1) {
    memref.store %zero, %out[%i, %j] : memref<?x8xf32>
    scf.reduce
  }
  scf.parallel (%w) = (%c0) to (%items) step (%c1) {
    %v = memref.load %out[%c0, %c0] : memref<?x8xf32>
    memref.store %v, %regs[%w] : memref<?xf32>
    scf.reduce
  }
  scf.parallel (%i, %j) = (%c0, %c0) to (%rows, %c8) step (%c1, %c1) {
    %o = memref.load %out[%i, %j] : memref<?x8xf32>
    %r = memref.load %regs[%i] : memref<?xf32>
    %s = arith.addf %o, %r : f32
    memref.store %s, %out[%i, %j] : memref<?x8xf32>
    scf.reduce
  }
  return
}

// -----

// Not fused: the second loop writes elements another iteration filled (a
// scatter), or reads its neighbour's.
// CHECK-LABEL: func.func @unfusable_loops
// CHECK-COUNT-3: gpu.launch blocks
// CHECK-NOT:     gpu.launch blocks
func.func @unfusable_loops(%ids: memref<?xindex>, %out: memref<?xf32>, %next: memref<?xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %zero = arith.constant 0.0 : f32
  %one = arith.constant 1.0 : f32
  %n = memref.dim %out, %c0 : memref<?xf32>
  %m = arith.subi %n, %c1 : index
  scf.parallel (%i) = (%c0) to (%m) step (%c1) {
    memref.store %zero, %out[%i] : memref<?xf32>
    scf.reduce
  }
  scf.parallel (%i) = (%c0) to (%m) step (%c1) {
    %to = memref.load %ids[%i] : memref<?xindex>
    memref.store %one, %out[%to] : memref<?xf32>
    scf.reduce
  }
  scf.parallel (%i) = (%c0) to (%m) step (%c1) {
    %j = arith.addi %i, %c1 : index
    %v = memref.load %out[%j] : memref<?xf32>
    memref.store %v, %next[%i] : memref<?xf32>
    scf.reduce
  }
  return
}

// -----

// Two memrefs cast from one caller pointer are one buffer: the fill through
// one and the store through the other (another iteration's element) stay
// two launches.
// CHECK-LABEL: func.func @one_caller_buffer
// CHECK-COUNT-2: gpu.launch blocks
// CHECK-NOT:     gpu.launch blocks
!desc = !llvm.struct<(ptr, ptr, i64, array<1 x i64>, array<1 x i64>)>
func.func @one_caller_buffer(%p: !llvm.ptr, %n: i64) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %zero = arith.constant 0.0 : f32
  %one = arith.constant 1.0 : f32
  %zero64 = llvm.mlir.constant(0 : i64) : i64
  %one64 = llvm.mlir.constant(1 : i64) : i64
  %u = llvm.mlir.undef : !desc
  %d0 = llvm.insertvalue %p, %u[0] : !desc
  %d1 = llvm.insertvalue %p, %d0[1] : !desc
  %d2 = llvm.insertvalue %zero64, %d1[2] : !desc
  %d3 = llvm.insertvalue %n, %d2[3, 0] : !desc
  %d4 = llvm.insertvalue %one64, %d3[4, 0] : !desc
  %a = builtin.unrealized_conversion_cast %d4 : !desc to memref<?xf32>
  %b = builtin.unrealized_conversion_cast %d4 : !desc to memref<?xf32>
  %size = memref.dim %a, %c0 : memref<?xf32>
  %half = arith.divui %size, %c2 : index
  scf.parallel (%i) = (%c0) to (%half) step (%c1) {
    memref.store %zero, %a[%i] : memref<?xf32>
    scf.reduce
  }
  scf.parallel (%i) = (%c0) to (%half) step (%c1) {
    %j = arith.addi %i, %c1 : index
    memref.store %one, %b[%j] : memref<?xf32>
    scf.reduce
  }
  return
}

// -----

// Loads and stores outside parallel loops run in a one-thread launch; the
// copy becomes a parallel loop of its own.
// CHECK-LABEL: func.func @sequential_then_copy
// CHECK:         gpu.launch blocks({{.*}}) in (%{{.*}} = %c1{{.*}}, %{{.*}} = %c1{{.*}}, %{{.*}} = %c1{{.*}}) threads({{.*}}) in (%{{.*}} = %c1{{.*}}, %{{.*}} = %c1{{.*}}, %{{.*}} = %c1{{.*}})
// CHECK:           memref.load %{{.*}}[%c0
// CHECK:           memref.store
// CHECK:           gpu.terminator
// CHECK:         gpu.launch
// CHECK:           scf.if
// CHECK:             memref.load
// CHECK:             memref.store
// CHECK-NOT:     memref.copy
func.func @sequential_then_copy(%a: memref<8xf32>, %b: memref<8xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %v = memref.load %a[%c0] : memref<8xf32>
  memref.store %v, %a[%c1] : memref<8xf32>
  memref.copy %a, %b : memref<8xf32> to memref<8xf32>
  return
}

// -----

// A loop whose bounds the host has, but whose iterations depend on each
// other (row e + 1 from row e), stays on the host, launching its body's
// parallel loop every iteration.
// CHECK-LABEL: func.func @host_loop
// CHECK:         scf.for
// CHECK:           gpu.launch
// CHECK:             memref.load
// CHECK:             memref.store
// CHECK:           gpu.terminator
func.func @host_loop(%a: memref<4x128xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c3 = arith.constant 3 : index
  %c128 = arith.constant 128 : index
  scf.for %e = %c0 to %c3 step %c1 {
    scf.parallel (%j) = (%c0) to (%c128) step (%c1) {
      %v = memref.load %a[%e, %j] : memref<4x128xf32>
      %next = arith.addi %e, %c1 : index
      memref.store %v, %a[%next, %j] : memref<4x128xf32>
      scf.reduce
    }
  }
  return
}

// -----

// A sequential loop whose iterations each own a row of every buffer they
// write (a top-k over tokens) runs as a parallel loop: one thread per row.
// CHECK-LABEL: func.func @independent_rows
// CHECK:         gpu.launch blocks({{.*}}) in (%{{.*}} = %{{.*}}, %{{.*}} = %c1{{.*}}, %{{.*}} = %c1{{.*}}) threads({{.*}}) in (%{{.*}} = %{{.*}}, %{{.*}} = %c1{{.*}}, %{{.*}} = %c1{{.*}})
// CHECK:           scf.if
// CHECK:             scf.for
// CHECK:               memref.load %{{.*}}[%{{.*}}, %{{.*}}] : memref<?x8xf32>
// CHECK:             memref.store %{{.*}}, %{{.*}}[%{{.*}}, %c0{{.*}}] : memref<?x2xi32>
// CHECK-NOT:     scf.for
func.func @independent_rows(%logits: memref<?x8xf32>, %ids: memref<?x2xi32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c8 = arith.constant 8 : index
  %zero = arith.constant 0 : i32
  %rows = memref.dim %logits, %c0 : memref<?x8xf32>
  scf.for %r = %c0 to %rows step %c1 {
    %best = scf.for %e = %c0 to %c8 step %c1 iter_args(%acc = %zero) -> (i32) {
      %v = memref.load %logits[%r, %e] : memref<?x8xf32>
      %pos = arith.cmpf ogt, %v, %v : f32
      %i = arith.index_cast %e : index to i32
      %next = arith.select %pos, %i, %acc : i32
      scf.yield %next : i32
    }
    memref.store %best, %ids[%r, %c0] : memref<?x2xi32>
  }
  return
}

// -----

// A scatter (the row written comes from memory) is not independent: one
// thread keeps the order.
// CHECK-LABEL: func.func @scatter_counts
// CHECK:         gpu.launch blocks({{.*}}) in (%{{.*}} = %c1{{.*}}, %{{.*}} = %c1{{.*}}, %{{.*}} = %c1{{.*}}) threads({{.*}}) in (%{{.*}} = %c1{{.*}}, %{{.*}} = %c1{{.*}}, %{{.*}} = %c1{{.*}})
// CHECK:           scf.for
func.func @scatter_counts(%ids: memref<?xi32>, %counts: memref<8xi32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %one = arith.constant 1 : i32
  %n = memref.dim %ids, %c0 : memref<?xi32>
  scf.for %s = %c0 to %n step %c1 {
    %id = memref.load %ids[%s] : memref<?xi32>
    %e = arith.index_cast %id : i32 to index
    %c = memref.load %counts[%e] : memref<8xi32>
    %c2 = arith.addi %c, %one : i32
    memref.store %c2, %counts[%e] : memref<8xi32>
  }
  return
}

// -----

// Sizes read from device memory: the loop that uses them joins the
// one-thread launch, and its parallel loop runs sequentially there.
// CHECK-LABEL: func.func @device_sizes
// CHECK:         gpu.launch
// CHECK:           memref.load %{{.*}}[%c0
// CHECK:           arith.index_cast
// CHECK:           scf.for
// CHECK:             scf.for
// CHECK:               memref.store
// CHECK:           gpu.terminator
// CHECK-NEXT:    }
// CHECK-NEXT:    return
func.func @device_sizes(%counts: memref<1xi32>, %a: memref<?xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %zero = arith.constant 0.0 : f32
  %n32 = memref.load %counts[%c0] : memref<1xi32>
  %n = arith.index_cast %n32 : i32 to index
  scf.for %e = %c0 to %n step %c1 {
    scf.parallel (%j) = (%c0) to (%n) step (%c1) {
      memref.store %zero, %a[%j] : memref<?xf32>
      scf.reduce
    }
  }
  return
}

// -----

// A device value the host needs to return cannot be lowered.
func.func @device_value_returned(%a: memref<1xi32>) -> i32 {
  %c0 = arith.constant 0 : index
  // expected-error @below {{computes a value on the device that the host uses; the CUDA target cannot lower this layer}}
  %v = memref.load %a[%c0] : memref<1xi32>
  return %v : i32
}

// BAD-THREADS: error: threads-per-block must be in [1, 1024], got 2048
