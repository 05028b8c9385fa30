// scf.forall loops run on the runtime's thread pool: outlined by
// moe-outline-parallel-loops, bound to moe_rt_parallel_for by
// moe-lower-parallel-launches, JIT-run against libmoe_runtime.so with four
// threads. Pass by pass, then through the CPU pipeline.
// RUN: moe-opt %s --moe-outline-parallel-loops --convert-scf-to-cf \
// RUN:     --finalize-memref-to-llvm --convert-to-llvm \
// RUN:     --reconcile-unrealized-casts --moe-lower-parallel-launches \
// RUN: | env MOE_NUM_THREADS=4 mlir-runner -e main -entry-point-result=void \
// RUN:     -shared-libs=%mlir_c_runner_utils,%moe_runtime \
// RUN: | FileCheck %s
// RUN: moe-opt %s --moe-lower-to-cpu \
// RUN: | env MOE_NUM_THREADS=4 mlir-runner -e main -entry-point-result=void \
// RUN:     -shared-libs=%mlir_c_runner_utils,%moe_runtime \
// RUN: | FileCheck %s

// The lowered module calls the runtime, not a sequential loop.
// RUN: moe-opt %s --moe-lower-to-cpu | FileCheck %s --check-prefix=IR
// IR-COUNT-4: llvm.call @moe_rt_parallel_for
// IR-NOT: llvm.call @moe_rt_parallel_for

func.func private @printI64(i64)
func.func private @printNewline()

// m[i] = i * i.
func.func @squares(%m: memref<1000xi64>) {
  scf.forall (%i) in (1000) {
    %ii = arith.index_cast %i : index to i64
    %sq = arith.muli %ii, %ii : i64
    memref.store %sq, %m[%i] : memref<1000xi64>
  }
  return
}

// The same with a nested loop: a launch from inside each task, which the
// runtime runs inline on that task's thread.
func.func @squares_nested(%m: memref<1000xi64>) {
  %c100 = arith.constant 100 : index
  scf.forall (%i) in (10) {
    scf.forall (%j) in (100) {
      %row = arith.muli %i, %c100 : index
      %k = arith.addi %row, %j : index
      %kk = arith.index_cast %k : index to i64
      %sq = arith.muli %kk, %kk : i64
      memref.store %sq, %m[%k] : memref<1000xi64>
    }
  }
  return
}

// m[i, j] = 100 i + j for i = 1, 3, .. < %ub and j = %lb, %lb + 3, .. < 20;
// %count counts the iterations.
func.func @grid(%m: memref<?x20xi64>, %count: memref<i64>, %lb: index,
                %ub: index) {
  %one = arith.constant 1 : i64
  %c100 = arith.constant 100 : i64
  scf.forall (%i, %j) = (1, %lb) to (%ub, 20) step (2, 3) {
    %ii = arith.index_cast %i : index to i64
    %jj = arith.index_cast %j : index to i64
    %hi = arith.muli %ii, %c100 : i64
    %v = arith.addi %hi, %jj : i64
    memref.store %v, %m[%i, %j] : memref<?x20xi64>
    %old = memref.atomic_rmw addi %one, %count[] : (i64, memref<i64>) -> i64
  }
  return
}

func.func @sum(%m: memref<?xi64>) -> i64 {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %zero = arith.constant 0 : i64
  %n = memref.dim %m, %c0 : memref<?xi64>
  %s = scf.for %k = %c0 to %n step %c1 iter_args(%acc = %zero) -> i64 {
    %v = memref.load %m[%k] : memref<?xi64>
    %next = arith.addi %acc, %v : i64
    scf.yield %next : i64
  }
  return %s : i64
}

func.func @fill_zero(%m: memref<?xi64>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %zero = arith.constant 0 : i64
  %n = memref.dim %m, %c0 : memref<?xi64>
  scf.for %k = %c0 to %n step %c1 {
    memref.store %zero, %m[%k] : memref<?xi64>
  }
  return
}

func.func @run_grid(%lb: index, %ub: index) {
  %c0 = arith.constant 0 : index
  %zero = arith.constant 0 : i64
  %flat = memref.alloc() : memref<200xi64>
  %flat_dyn = memref.cast %flat : memref<200xi64> to memref<?xi64>
  call @fill_zero(%flat_dyn) : (memref<?xi64>) -> ()
  %grid = memref.reinterpret_cast %flat to offset: [0], sizes: [10, 20], strides: [20, 1]
      : memref<200xi64> to memref<10x20xi64>
  %grid_dyn = memref.cast %grid : memref<10x20xi64> to memref<?x20xi64>
  %count = memref.alloc() : memref<i64>
  memref.store %zero, %count[] : memref<i64>
  call @grid(%grid_dyn, %count, %lb, %ub) : (memref<?x20xi64>, memref<i64>, index, index) -> ()
  %s = call @sum(%flat_dyn) : (memref<?xi64>) -> i64
  %n = memref.load %count[] : memref<i64>
  call @printI64(%s) : (i64) -> ()
  call @printNewline() : () -> ()
  call @printI64(%n) : (i64) -> ()
  call @printNewline() : () -> ()
  return
}

// sum(i * i, i < 1000) = 332833500, twice.
// CHECK: 332833500
// CHECK-NEXT: 332833500
// i in {1, 3, 5, 7}, j in {2, 5, .., 17}: 6 * 100 * 16 + 4 * 57, 24 items.
// CHECK-NEXT: 9828
// CHECK-NEXT: 24
// Empty ranges (an upper bound below the lower one in either dimension).
// CHECK-NEXT: 0
// CHECK-NEXT: 0
// CHECK-NEXT: 0
// CHECK-NEXT: 0
func.func @main() {
  %m = memref.alloc() : memref<1000xi64>
  %m_dyn = memref.cast %m : memref<1000xi64> to memref<?xi64>
  call @fill_zero(%m_dyn) : (memref<?xi64>) -> ()
  call @squares(%m) : (memref<1000xi64>) -> ()
  %s0 = call @sum(%m_dyn) : (memref<?xi64>) -> i64
  call @printI64(%s0) : (i64) -> ()
  call @printNewline() : () -> ()
  call @fill_zero(%m_dyn) : (memref<?xi64>) -> ()
  call @squares_nested(%m) : (memref<1000xi64>) -> ()
  %s1 = call @sum(%m_dyn) : (memref<?xi64>) -> i64
  call @printI64(%s1) : (i64) -> ()
  call @printNewline() : () -> ()

  %c0 = arith.constant 0 : index
  %c2 = arith.constant 2 : index
  %c9 = arith.constant 9 : index
  %c25 = arith.constant 25 : index
  call @run_grid(%c2, %c9) : (index, index) -> ()
  call @run_grid(%c2, %c0) : (index, index) -> ()
  call @run_grid(%c25, %c9) : (index, index) -> ()
  return
}
