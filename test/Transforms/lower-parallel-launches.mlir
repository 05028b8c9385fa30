// RUN: moe-opt %s --moe-lower-parallel-launches -split-input-file -verify-diagnostics | FileCheck %s

// The form moe-outline-parallel-loops leaves after convert-to-llvm: a body
// taking the index and a memref descriptor (expanded into its fields) and an
// f32, called through a launch declaration of the same signature. The launch
// sits in a loop: the context struct is allocated once, in the entry block.

// CHECK-LABEL: llvm.func @moe_rt_parallel_for(i64, !llvm.ptr, !llvm.ptr)

// CHECK-LABEL: llvm.func @fill
// CHECK-SAME:    (%[[BASE:.*]]: !llvm.ptr, %[[DATA:.*]]: !llvm.ptr, %[[OFF:.*]]: i64, %[[SIZE:.*]]: i64, %[[STRIDE:.*]]: i64, %[[F:.*]]: f32, %[[N:.*]]: i64)
// CHECK:         %[[ONE:.*]] = llvm.mlir.constant(1 : i64) : i64
// CHECK-NEXT:    %[[CTX:.*]] = llvm.alloca %[[ONE]] x !llvm.struct<(ptr, ptr, i64, i64, i64, f32)> : (i64) -> !llvm.ptr
// CHECK:         llvm.br ^[[HEAD:.*]](
// CHECK:       ^[[HEAD]]
// CHECK:       ^{{.*}}:
// CHECK-NOT:     llvm.alloca
// CHECK:         %[[P0:.*]] = llvm.getelementptr %[[CTX]][0, 0] : (!llvm.ptr) -> !llvm.ptr, !llvm.struct<(ptr, ptr, i64, i64, i64, f32)>
// CHECK-NEXT:    llvm.store %[[BASE]], %[[P0]] : !llvm.ptr, !llvm.ptr
// CHECK-NEXT:    %[[P1:.*]] = llvm.getelementptr %[[CTX]][0, 1]
// CHECK-NEXT:    llvm.store %[[DATA]], %[[P1]] : !llvm.ptr, !llvm.ptr
// CHECK-NEXT:    %[[P2:.*]] = llvm.getelementptr %[[CTX]][0, 2]
// CHECK-NEXT:    llvm.store %[[OFF]], %[[P2]] : i64, !llvm.ptr
// CHECK-NEXT:    %[[P3:.*]] = llvm.getelementptr %[[CTX]][0, 3]
// CHECK-NEXT:    llvm.store %[[SIZE]], %[[P3]] : i64, !llvm.ptr
// CHECK-NEXT:    %[[P4:.*]] = llvm.getelementptr %[[CTX]][0, 4]
// CHECK-NEXT:    llvm.store %[[STRIDE]], %[[P4]] : i64, !llvm.ptr
// CHECK-NEXT:    %[[P5:.*]] = llvm.getelementptr %[[CTX]][0, 5]
// CHECK-NEXT:    llvm.store %[[F]], %[[P5]] : f32, !llvm.ptr
// CHECK-NEXT:    %[[FN:.*]] = llvm.mlir.addressof @fill_parallel_0_trampoline : !llvm.ptr
// CHECK-NEXT:    llvm.call @moe_rt_parallel_for(%[[N]], %[[FN]], %[[CTX]]) : (i64, !llvm.ptr, !llvm.ptr) -> ()
// CHECK-NOT:     __moe_parallel_launch_
// CHECK:         llvm.return

// CHECK-LABEL: llvm.func @fill_parallel_0(
// CHECK-LABEL: llvm.func internal @fill_parallel_0_trampoline
// CHECK-SAME:    (%[[TCTX:.*]]: !llvm.ptr, %[[I:.*]]: i64)
// CHECK:         %[[Q0:.*]] = llvm.getelementptr %[[TCTX]][0, 0] : (!llvm.ptr) -> !llvm.ptr, !llvm.struct<(ptr, ptr, i64, i64, i64, f32)>
// CHECK-NEXT:    %[[V0:.*]] = llvm.load %[[Q0]] : !llvm.ptr -> !llvm.ptr
// CHECK-NEXT:    %[[Q1:.*]] = llvm.getelementptr %[[TCTX]][0, 1]
// CHECK-NEXT:    %[[V1:.*]] = llvm.load %[[Q1]] : !llvm.ptr -> !llvm.ptr
// CHECK-NEXT:    %[[Q2:.*]] = llvm.getelementptr %[[TCTX]][0, 2]
// CHECK-NEXT:    %[[V2:.*]] = llvm.load %[[Q2]] : !llvm.ptr -> i64
// CHECK-NEXT:    %[[Q3:.*]] = llvm.getelementptr %[[TCTX]][0, 3]
// CHECK-NEXT:    %[[V3:.*]] = llvm.load %[[Q3]] : !llvm.ptr -> i64
// CHECK-NEXT:    %[[Q4:.*]] = llvm.getelementptr %[[TCTX]][0, 4]
// CHECK-NEXT:    %[[V4:.*]] = llvm.load %[[Q4]] : !llvm.ptr -> i64
// CHECK-NEXT:    %[[Q5:.*]] = llvm.getelementptr %[[TCTX]][0, 5]
// CHECK-NEXT:    %[[V5:.*]] = llvm.load %[[Q5]] : !llvm.ptr -> f32
// CHECK-NEXT:    llvm.call @fill_parallel_0(%[[I]], %[[V0]], %[[V1]], %[[V2]], %[[V3]], %[[V4]], %[[V5]])
// CHECK-NEXT:    llvm.return
// CHECK-NOT:   __moe_parallel_launch_
module {
  llvm.func @fill(%base: !llvm.ptr, %data: !llvm.ptr, %off: i64, %size: i64,
                  %stride: i64, %f: f32, %n: i64) {
    %c0 = llvm.mlir.constant(0 : index) : i64
    %c1 = llvm.mlir.constant(1 : index) : i64
    %c4 = llvm.mlir.constant(4 : index) : i64
    llvm.br ^head(%c0 : i64)
  ^head(%k: i64):
    %more = llvm.icmp "slt" %k, %c4 : i64
    llvm.cond_br %more, ^body, ^exit
  ^body:
    llvm.call @__moe_parallel_launch_fill_parallel_0(%n, %base, %data, %off, %size, %stride, %f)
        : (i64, !llvm.ptr, !llvm.ptr, i64, i64, i64, f32) -> ()
    %next = llvm.add %k, %c1 : i64
    llvm.br ^head(%next : i64)
  ^exit:
    llvm.return
  }
  llvm.func @fill_parallel_0(%i: i64, %base: !llvm.ptr, %data: !llvm.ptr,
                             %off: i64, %size: i64, %stride: i64, %f: f32)
      attributes {sym_visibility = "private"} {
    %p = llvm.getelementptr inbounds %data[%i] : (!llvm.ptr, i64) -> !llvm.ptr, f32
    llvm.store %f, %p : f32, !llvm.ptr
    llvm.return
  }
  llvm.func @__moe_parallel_launch_fill_parallel_0(i64, !llvm.ptr, !llvm.ptr, i64, i64, i64, f32)
      attributes {sym_visibility = "private"}
}

// -----

// Two launches of one body share one trampoline; a launch without captured
// values passes a null context; an existing runtime declaration is reused.

// CHECK:       llvm.func @moe_rt_parallel_for(i64, !llvm.ptr, !llvm.ptr)
// CHECK-NOT:   llvm.func @moe_rt_parallel_for
// CHECK-LABEL: llvm.func @twice
// CHECK-SAME:    (%[[N:.*]]: i64, %[[X:.*]]: i64)
// CHECK-COUNT-2: llvm.alloca
// CHECK-NOT:     llvm.alloca
// CHECK:         %[[FN0:.*]] = llvm.mlir.addressof @twice_parallel_0_trampoline
// CHECK:         llvm.call @moe_rt_parallel_for(%[[N]], %[[FN0]], %{{.*}})
// CHECK:         %[[FN1:.*]] = llvm.mlir.addressof @twice_parallel_0_trampoline
// CHECK:         llvm.call @moe_rt_parallel_for(%[[N]], %[[FN1]], %{{.*}})
// CHECK:         %[[NULL:.*]] = llvm.mlir.zero : !llvm.ptr
// CHECK:         %[[FN2:.*]] = llvm.mlir.addressof @twice_parallel_1_trampoline
// CHECK:         llvm.call @moe_rt_parallel_for(%[[N]], %[[FN2]], %[[NULL]])
// CHECK-LABEL: llvm.func internal @twice_parallel_0_trampoline
// CHECK-NOT:   llvm.func internal @twice_parallel_0_trampoline
// CHECK-LABEL: llvm.func internal @twice_parallel_1_trampoline
// CHECK-SAME:    (%{{.*}}: !llvm.ptr, %[[I:.*]]: i64)
// CHECK-NOT:     llvm.load
// CHECK:         llvm.call @twice_parallel_1(%[[I]]) : (i64) -> ()
module {
  llvm.func @moe_rt_parallel_for(i64, !llvm.ptr, !llvm.ptr)
  llvm.func @twice(%n: i64, %x: i64) {
    llvm.call @__moe_parallel_launch_twice_parallel_0(%n, %x) : (i64, i64) -> ()
    llvm.call @__moe_parallel_launch_twice_parallel_0(%n, %x) : (i64, i64) -> ()
    llvm.call @__moe_parallel_launch_twice_parallel_1(%n) : (i64) -> ()
    llvm.return
  }
  llvm.func @twice_parallel_0(%i: i64, %x: i64) {
    llvm.return
  }
  llvm.func @twice_parallel_1(%i: i64) {
    llvm.return
  }
  llvm.func @__moe_parallel_launch_twice_parallel_0(i64, i64)
  llvm.func @__moe_parallel_launch_twice_parallel_1(i64)
}

// -----

// With emit-c-interface, func-to-llvm gives the launch declaration a wrapper
// calling `_mlir_ciface_<launch>`, and the private body a C wrapper: both go.

// CHECK-LABEL: llvm.func @wrapped
// CHECK:         llvm.call @moe_rt_parallel_for
// CHECK-NOT:   _mlir_ciface___moe_parallel_launch_
// CHECK-NOT:   __moe_parallel_launch_
// CHECK-NOT:   @_mlir_ciface_wrapped_parallel_0
// CHECK-LABEL: llvm.func @_mlir_ciface_wrapped
module {
  llvm.func @wrapped(%n: i64, %x: i64) attributes {llvm.emit_c_interface} {
    llvm.call @__moe_parallel_launch_wrapped_parallel_0(%n, %x) : (i64, i64) -> ()
    llvm.return
  }
  llvm.func @wrapped_parallel_0(%i: i64, %x: i64)
      attributes {llvm.emit_c_interface, sym_visibility = "private"} {
    llvm.return
  }
  llvm.func @_mlir_ciface_wrapped_parallel_0(%i: i64, %x: i64)
      attributes {llvm.emit_c_interface, sym_visibility = "private"} {
    llvm.call @wrapped_parallel_0(%i, %x) : (i64, i64) -> ()
    llvm.return
  }
  llvm.func @__moe_parallel_launch_wrapped_parallel_0(%n: i64, %x: i64)
      attributes {llvm.emit_c_interface, sym_visibility = "private"} {
    llvm.call @_mlir_ciface___moe_parallel_launch_wrapped_parallel_0(%n, %x) : (i64, i64) -> ()
    llvm.return
  }
  llvm.func @_mlir_ciface___moe_parallel_launch_wrapped_parallel_0(i64, i64)
      attributes {llvm.emit_c_interface, sym_visibility = "private"}
  llvm.func @_mlir_ciface_wrapped(%n: i64, %x: i64) attributes {llvm.emit_c_interface} {
    llvm.call @wrapped(%n, %x) : (i64, i64) -> ()
    llvm.return
  }
}

// -----

llvm.func @orphan(%n: i64) {
  // expected-error @below {{expects the body @orphan_parallel_0 of the parallel launch to be defined}}
  llvm.call @__moe_parallel_launch_orphan_parallel_0(%n) : (i64) -> ()
  llvm.return
}
llvm.func @__moe_parallel_launch_orphan_parallel_0(i64)

// -----

llvm.func @mismatch(%n: i64, %x: f32) {
  // expected-error @below {{expects the operands of the parallel launch to match the arguments of @mismatch_parallel_0}}
  llvm.call @__moe_parallel_launch_mismatch_parallel_0(%n, %x) : (i64, f32) -> ()
  llvm.return
}
llvm.func @mismatch_parallel_0(%i: i64, %x: i64) {
  llvm.return
}
llvm.func @__moe_parallel_launch_mismatch_parallel_0(i64, f32)
