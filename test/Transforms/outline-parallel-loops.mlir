// RUN: moe-opt %s --moe-outline-parallel-loops -split-input-file -verify-diagnostics | FileCheck %s

// A 1-D loop: the trip count is the launch size and the index is the
// induction variable. The memref and the f32 are passed, the constant is
// cloned into the body.

// CHECK-LABEL: func.func @one_d
// CHECK-SAME:    (%[[M:.*]]: memref<1000xf32>, %[[F:.*]]: f32)
// CHECK-NOT:     scf.forall
// CHECK:         %[[N:.*]] = arith.constant 1000 : index
// CHECK:         call @__moe_parallel_launch_one_d_parallel_0(%[[N]], %[[F]], %[[M]]) : (index, f32, memref<1000xf32>) -> ()
// CHECK-NEXT:    return
// CHECK-LABEL: func.func private @one_d_parallel_0
// CHECK-SAME:    (%[[I:.*]]: index, %[[BF:.*]]: f32, %[[BM:.*]]: memref<1000xf32>)
// CHECK:         %[[TWO:.*]] = arith.constant 2.0{{.*}} : f32
// CHECK:         %[[V:.*]] = arith.mulf %[[BF]], %[[TWO]] : f32
// CHECK:         memref.store %[[V]], %[[BM]][%[[I]]] : memref<1000xf32>
// CHECK-NEXT:    return
// CHECK:       func.func private @__moe_parallel_launch_one_d_parallel_0(index, f32, memref<1000xf32>)
func.func @one_d(%m: memref<1000xf32>, %f: f32) {
  %two = arith.constant 2.0 : f32
  scf.forall (%i) in (1000) {
    %v = arith.mulf %f, %two : f32
    memref.store %v, %m[%i] : memref<1000xf32>
  }
  return
}

// -----

// A 2-D loop with static non-zero lower bounds and steps: 3 x 4 iterations
// (2, 5, 8 and 1, 3, 5, 7), the last dimension fastest.

// CHECK-LABEL: func.func @two_d_static
// CHECK-SAME:    (%[[M:.*]]: memref<10x10xindex>)
// CHECK:         %[[N:.*]] = arith.constant 12 : index
// CHECK:         call @__moe_parallel_launch_two_d_static_parallel_0(%[[N]], %[[M]])
// CHECK-LABEL: func.func private @two_d_static_parallel_0
// CHECK-SAME:    (%[[I:.*]]: index, %[[BM:.*]]: memref<10x10xindex>)
// CHECK-DAG:     %[[C4:.*]] = arith.constant 4 : index
// CHECK-DAG:     %[[C3:.*]] = arith.constant 3 : index
// CHECK-DAG:     %[[C2:.*]] = arith.constant 2 : index
// CHECK-DAG:     %[[C1:.*]] = arith.constant 1 : index
// CHECK-DAG:     %[[INNER:.*]] = arith.remui %[[I]], %[[C4]] : index
// CHECK-DAG:     %[[OUTER:.*]] = arith.divui %[[I]], %[[C4]] : index
// CHECK-DAG:     %[[JS:.*]] = arith.muli %[[INNER]], %[[C2]] : index
// CHECK-DAG:     %[[J:.*]] = arith.addi %[[JS]], %[[C1]] : index
// CHECK-DAG:     %[[IS:.*]] = arith.muli %[[OUTER]], %[[C3]] : index
// CHECK-DAG:     %[[IV:.*]] = arith.addi %[[IS]], %[[C2]] : index
// CHECK:         memref.store %[[J]], %[[BM]][%[[IV]], %[[J]]]
// CHECK:       func.func private @__moe_parallel_launch_two_d_static_parallel_0(index, memref<10x10xindex>)
func.func @two_d_static(%m: memref<10x10xindex>) {
  scf.forall (%i, %j) = (2, 1) to (10, 8) step (3, 2) {
    memref.store %j, %m[%i, %j] : memref<10x10xindex>
  }
  return
}

// -----

// Dynamic bounds and steps: the trip count ceil((ub - lb) / step), clamped
// at 0, is computed before the launch; the body gets the lower bounds, the
// steps and the inner trip count as arguments.

// CHECK-LABEL: func.func @dynamic
// CHECK-SAME:    (%[[M:.*]]: memref<?x?xf32>, %[[LB:.*]]: index, %[[UB0:.*]]: index, %[[UB1:.*]]: index, %[[S:.*]]: index)
// CHECK-DAG:     %[[C0:.*]] = arith.constant 0 : index
// CHECK-DAG:     %[[C1:.*]] = arith.constant 1 : index
// CHECK:         %[[EXT0:.*]] = arith.subi %[[UB0]], %[[LB]] : index
// CHECK:         %[[POS0:.*]] = arith.maxsi %[[EXT0]], %[[C0]] : index
// CHECK:         %[[UP0:.*]] = arith.subi %[[S]], %[[C1]] : index
// CHECK:         %[[SUM0:.*]] = arith.addi %[[POS0]], %[[UP0]] : index
// CHECK:         %[[T0:.*]] = arith.divui %[[SUM0]], %[[S]] : index
// CHECK:         %[[T1:.*]] = arith.maxsi %[[UB1]], %[[C0]] : index
// CHECK:         %[[N:.*]] = arith.muli %[[T0]], %[[T1]] : index
// CHECK:         call @__moe_parallel_launch_dynamic_parallel_0(%[[N]], %[[M]], %[[LB]], %[[S]], %[[T1]])
// CHECK-SAME:      : (index, memref<?x?xf32>, index, index, index) -> ()
// CHECK-LABEL: func.func private @dynamic_parallel_0
// CHECK-SAME:    (%[[I:.*]]: index, %[[BM:.*]]: memref<?x?xf32>, %[[BLB:.*]]: index, %[[BS:.*]]: index, %[[BT1:.*]]: index)
// CHECK:         %[[J:.*]] = arith.remui %[[I]], %[[BT1]] : index
// CHECK:         %[[R:.*]] = arith.divui %[[I]], %[[BT1]] : index
// CHECK:         %[[SCALED:.*]] = arith.muli %[[R]], %[[BS]] : index
// CHECK:         %[[IV:.*]] = arith.addi %[[BLB]], %[[SCALED]] : index
// CHECK:         memref.store %{{.*}}, %[[BM]][%[[IV]], %[[J]]]
func.func @dynamic(%m: memref<?x?xf32>, %lb: index, %ub0: index, %ub1: index, %s: index) {
  %zero = arith.constant 0.0 : f32
  scf.forall (%i, %j) = (%lb, 0) to (%ub0, %ub1) step (%s, 1) {
    memref.store %zero, %m[%i, %j] : memref<?x?xf32>
  }
  return
}

// -----

// An empty range: the static trip count of a negative extent is 0.

// CHECK-LABEL: func.func @empty
// CHECK:         %[[N:.*]] = arith.constant 0 : index
// CHECK:         call @__moe_parallel_launch_empty_parallel_0(%[[N]],
func.func @empty(%m: memref<8xf32>, %f: f32) {
  scf.forall (%i) = (5) to (2) step (1) {
    memref.store %f, %m[%i] : memref<8xf32>
  }
  return
}

// -----

// Captured values of several types, each passed once, in the order of their
// first use;
// operand-free pure ops (constants, memref.get_global) are cloned.

memref.global "private" constant @table : memref<4xi32> = dense<[1, 2, 3, 4]>

// CHECK-LABEL: func.func @captures
// CHECK-SAME:    (%[[M:.*]]: memref<?xf32>, %[[K:.*]]: index, %[[F:.*]]: f32, %[[X:.*]]: i32)
// CHECK:         %[[D:.*]] = memref.dim %[[M]]
// CHECK:         %[[N:.*]] = arith.maxsi %[[D]], %{{.*}} : index
// CHECK:         call @__moe_parallel_launch_captures_parallel_0(%[[N]], %[[K]], %[[X]], %[[F]], %[[M]])
// CHECK-SAME:      : (index, index, i32, f32, memref<?xf32>) -> ()
// CHECK-LABEL: func.func private @captures_parallel_0
// CHECK-SAME:    (%[[I:.*]]: index, %[[BK:.*]]: index, %[[BX:.*]]: i32, %[[BF:.*]]: f32, %[[BM:.*]]: memref<?xf32>)
// CHECK-DAG:     %[[T:.*]] = memref.get_global @table : memref<4xi32>
// CHECK-DAG:     %[[C1:.*]] = arith.constant 1 : index
// CHECK:         %[[IK:.*]] = arith.addi %[[I]], %[[BK]] : index
// CHECK:         %[[IDX:.*]] = arith.remui %[[IK]], %[[C1]]
// CHECK:         %[[E:.*]] = memref.load %[[T]][%[[IDX]]]
// CHECK:         %[[EX:.*]] = arith.addi %[[E]], %[[BX]] : i32
// CHECK:         %[[EF:.*]] = arith.sitofp %[[EX]] : i32 to f32
// CHECK:         %[[V:.*]] = arith.addf %[[EF]], %[[BF]] : f32
// CHECK:         memref.store %[[V]], %[[BM]][%[[I]]]
func.func @captures(%m: memref<?xf32>, %k: index, %f: f32, %x: i32) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %table = memref.get_global @table : memref<4xi32>
  %n = memref.dim %m, %c0 : memref<?xf32>
  scf.forall (%i) in (%n) {
    %ik = arith.addi %i, %k : index
    %idx = arith.remui %ik, %c1 : index
    %e = memref.load %table[%idx] : memref<4xi32>
    %ex = arith.addi %e, %x : i32
    %ef = arith.sitofp %ex : i32 to f32
    %v = arith.addf %ef, %f : f32
    memref.store %v, %m[%i] : memref<?xf32>
  }
  return
}

// -----

// Nested loops become launches from inside the body that holds them (the
// runtime runs them inline on a worker); loops after the first get the next
// number; a loop nested in another op is outermost too.

// CHECK-LABEL: func.func @nested
// CHECK-SAME:    (%[[M:.*]]: memref<8x16xf32>, %[[F:.*]]: f32, %[[C:.*]]: i1)
// CHECK:         %[[N0:.*]] = arith.constant 8 : index
// CHECK:         call @__moe_parallel_launch_nested_parallel_0(%[[N0]], %[[F]], %[[M]])
// CHECK:         scf.if %[[C]] {
// CHECK:           %[[N1:.*]] = arith.constant 128 : index
// CHECK:           call @__moe_parallel_launch_nested_parallel_1(%[[N1]], %[[F]], %[[M]])
// CHECK:         }
// CHECK-LABEL: func.func private @nested_parallel_0
// CHECK-SAME:    (%[[I:.*]]: index, %[[BF:.*]]: f32, %[[BM:.*]]: memref<8x16xf32>)
// CHECK-NOT:     scf.forall
// CHECK:         %[[N2:.*]] = arith.constant 4 : index
// CHECK:         call @__moe_parallel_launch_nested_parallel_0_parallel_0(%[[N2]], %[[BF]], %[[BM]], %[[I]])
// CHECK-NEXT:    return
// CHECK:       func.func private @__moe_parallel_launch_nested_parallel_0
// CHECK-LABEL: func.func private @nested_parallel_0_parallel_0
// CHECK-SAME:    (%[[J:.*]]: index, %[[BF2:.*]]: f32, %[[BM2:.*]]: memref<8x16xf32>, %[[I2:.*]]: index)
// CHECK:         call @__moe_parallel_launch_nested_parallel_0_parallel_0_parallel_0(%{{.*}}, %[[J]], %[[BF2]], %[[BM2]], %[[I2]])
// CHECK-LABEL: func.func private @nested_parallel_0_parallel_0_parallel_0
// CHECK-SAME:    (%[[K:.*]]: index, %[[J3:.*]]: index, %[[BF3:.*]]: f32, %[[BM3:.*]]: memref<8x16xf32>, %[[I3:.*]]: index)
// CHECK:         %[[JK:.*]] = arith.addi %[[J3]], %[[K]] : index
// CHECK:         memref.store %[[BF3]], %[[BM3]][%[[I3]], %[[JK]]]
// CHECK-LABEL: func.func private @nested_parallel_1
// CHECK-NOT:     scf.forall
// CHECK:       func.func private @__moe_parallel_launch_nested_parallel_1
func.func @nested(%m: memref<8x16xf32>, %f: f32, %c: i1) {
  scf.forall (%i) in (8) {
    scf.forall (%j) in (4) {
      scf.forall (%k) in (4) {
        %jk = arith.addi %j, %k : index
        memref.store %f, %m[%i, %jk] : memref<8x16xf32>
      }
    }
  }
  scf.if %c {
    scf.forall (%i, %j) in (8, 16) {
      memref.store %f, %m[%i, %j] : memref<8x16xf32>
    }
  }
  return
}

// -----

// Loops still on tensors have not been bufferized.

func.func @shared_outs(%t: tensor<8xf32>, %f: f32) -> tensor<8xf32> {
  // expected-error @below {{expects no shared_outs (run after bufferization), found 1}}
  %r = scf.forall (%i) in (8) shared_outs(%o = %t) -> tensor<8xf32> {
    %s = tensor.from_elements %f : tensor<1xf32>
    scf.forall.in_parallel {
      tensor.parallel_insert_slice %s into %o[%i] [1] [1] : tensor<1xf32> into tensor<8xf32>
    }
  }
  return %r : tensor<8xf32>
}
