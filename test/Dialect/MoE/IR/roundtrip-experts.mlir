// Round-trip of the expert ops (moe.expert_ffn, moe.shared_expert) in every
// form of their assembly: custom form, generic form and bytecode print back
// to the same custom form, and print -> parse -> print is a fixed point.
// RUN: moe-opt %s | moe-opt | FileCheck %s
// RUN: moe-opt %s -mlir-print-op-generic | moe-opt | FileCheck %s
// RUN: moe-opt %s -emit-bytecode | moe-opt | FileCheck %s
// RUN: moe-opt %s > %t.once && moe-opt %t.once > %t.twice && diff %t.once %t.twice

//===----------------------------------------------------------------------===//
// moe.expert_ffn
//===----------------------------------------------------------------------===//

// Gated (SwiGLU) with bf16 weights.
// CHECK-LABEL: func.func @expert_ffn_swiglu_bf16
// CHECK-SAME:    (%[[ROWS:.*]]: tensor<?x64xf32>, %[[OFF:.*]]: tensor<9xi32>, %[[W1:.*]]: tensor<8x128x64xbf16>, %[[W2:.*]]: tensor<8x64x128xbf16>, %[[W3:.*]]: tensor<8x128x64xbf16>, %[[INIT:.*]]: tensor<?x64xf32>)
// CHECK:         %[[Y:.*]] = moe.expert_ffn swiglu ins(%[[ROWS]], %[[OFF]], %[[W1]], %[[W2]] : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xbf16>, tensor<8x64x128xbf16>) up(%[[W3]] : tensor<8x128x64xbf16>) outs(%[[INIT]] : tensor<?x64xf32>) -> tensor<?x64xf32>
// CHECK:         return %[[Y]]
func.func @expert_ffn_swiglu_bf16(%rows: tensor<?x64xf32>, %offsets: tensor<9xi32>,
    %w1: tensor<8x128x64xbf16>, %w2: tensor<8x64x128xbf16>,
    %w3: tensor<8x128x64xbf16>, %init: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %y = moe.expert_ffn swiglu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xbf16>, tensor<8x64x128xbf16>)
      up(%w3 : tensor<8x128x64xbf16>)
      outs(%init : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// Gated (GeGLU) with f16 weights, static rows.
// CHECK-LABEL: func.func @expert_ffn_geglu_f16
// CHECK:         moe.expert_ffn geglu ins(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : tensor<32x64xf32>, tensor<5xi32>, tensor<4x32x64xf16>, tensor<4x64x32xf16>) up(%{{.*}} : tensor<4x32x64xf16>) outs(%{{.*}} : tensor<32x64xf32>) -> tensor<32x64xf32>
func.func @expert_ffn_geglu_f16(%rows: tensor<32x64xf32>, %offsets: tensor<5xi32>,
    %w1: tensor<4x32x64xf16>, %w2: tensor<4x64x32xf16>,
    %w3: tensor<4x32x64xf16>, %init: tensor<32x64xf32>) -> tensor<32x64xf32> {
  %y = moe.expert_ffn geglu
      ins(%rows, %offsets, %w1, %w2 : tensor<32x64xf32>, tensor<5xi32>, tensor<4x32x64xf16>, tensor<4x64x32xf16>)
      up(%w3 : tensor<4x32x64xf16>)
      outs(%init : tensor<32x64xf32>) -> tensor<32x64xf32>
  return %y : tensor<32x64xf32>
}

// Non-gated activations (no up group) with f32, bf16 and f16 weights.
// CHECK-LABEL: func.func @expert_ffn_not_gated
// CHECK-SAME:    (%[[ROWS:.*]]: tensor<?x64xf32>, %[[OFF:.*]]: tensor<9xi32>, %[[W1:.*]]: tensor<8x128x64xf32>, %[[W2:.*]]: tensor<8x64x128xf32>, %[[V1:.*]]: tensor<8x128x64xbf16>, %[[V2:.*]]: tensor<8x64x128xbf16>, %[[U1:.*]]: tensor<8x128x64xf16>, %[[U2:.*]]: tensor<8x64x128xf16>, %[[INIT:.*]]: tensor<?x64xf32>)
// CHECK:         %[[Y0:.*]] = moe.expert_ffn gelu ins(%[[ROWS]], %[[OFF]], %[[W1]], %[[W2]] : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) outs(%[[INIT]] : tensor<?x64xf32>) -> tensor<?x64xf32>
// CHECK:         %[[Y1:.*]] = moe.expert_ffn relu ins(%[[ROWS]], %[[OFF]], %[[V1]], %[[V2]] : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xbf16>, tensor<8x64x128xbf16>) outs(%[[Y0]] : tensor<?x64xf32>) -> tensor<?x64xf32>
// CHECK:         %[[Y2:.*]] = moe.expert_ffn silu ins(%[[ROWS]], %[[OFF]], %[[U1]], %[[U2]] : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf16>, tensor<8x64x128xf16>) outs(%[[Y1]] : tensor<?x64xf32>) -> tensor<?x64xf32>
// CHECK:         return %[[Y2]]
func.func @expert_ffn_not_gated(%rows: tensor<?x64xf32>, %offsets: tensor<9xi32>,
    %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>,
    %v1: tensor<8x128x64xbf16>, %v2: tensor<8x64x128xbf16>,
    %u1: tensor<8x128x64xf16>, %u2: tensor<8x64x128xf16>,
    %init: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %y0 = moe.expert_ffn gelu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>)
      outs(%init : tensor<?x64xf32>) -> tensor<?x64xf32>
  %y1 = moe.expert_ffn relu
      ins(%rows, %offsets, %v1, %v2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xbf16>, tensor<8x64x128xbf16>)
      outs(%y0 : tensor<?x64xf32>) -> tensor<?x64xf32>
  %y2 = moe.expert_ffn silu
      ins(%rows, %offsets, %u1, %u2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf16>, tensor<8x64x128xf16>)
      outs(%y1 : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %y2 : tensor<?x64xf32>
}

// Dynamic expert count and widths, with a discardable attribute.
// CHECK-LABEL: func.func @expert_ffn_dynamic
// CHECK:         moe.expert_ffn swiglu ins(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : tensor<?x?xf32>, tensor<?xi32>, tensor<?x?x?xf32>, tensor<?x?x?xf32>) up(%{{.*}} : tensor<?x?x?xf32>) outs(%{{.*}} : tensor<?x?xf32>) {moe.tile = [64, 128]} -> tensor<?x?xf32>
func.func @expert_ffn_dynamic(%rows: tensor<?x?xf32>, %offsets: tensor<?xi32>,
    %w1: tensor<?x?x?xf32>, %w2: tensor<?x?x?xf32>, %w3: tensor<?x?x?xf32>,
    %init: tensor<?x?xf32>) -> tensor<?x?xf32> {
  %y = moe.expert_ffn swiglu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x?xf32>, tensor<?xi32>, tensor<?x?x?xf32>, tensor<?x?x?xf32>)
      up(%w3 : tensor<?x?x?xf32>)
      outs(%init : tensor<?x?xf32>) {moe.tile = [64, 128]} -> tensor<?x?xf32>
  return %y : tensor<?x?xf32>
}

//===----------------------------------------------------------------------===//
// moe.shared_expert
//===----------------------------------------------------------------------===//

// Gated activation with the sigmoid gate (Qwen-MoE).
// CHECK-LABEL: func.func @shared_expert_up_gate
// CHECK-SAME:    (%[[X:.*]]: tensor<?x64xf32>, %[[W1:.*]]: tensor<256x64xf32>, %[[W2:.*]]: tensor<64x256xf32>, %[[W3:.*]]: tensor<256x64xf32>, %[[G:.*]]: tensor<1x64xf32>, %[[ACC:.*]]: tensor<?x64xf32>)
// CHECK:         %[[OUT:.*]] = moe.shared_expert swiglu ins(%[[X]], %[[W1]], %[[W2]] : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>) up(%[[W3]] : tensor<256x64xf32>) gate(%[[G]] : tensor<1x64xf32>) outs(%[[ACC]] : tensor<?x64xf32>) -> tensor<?x64xf32>
// CHECK:         return %[[OUT]]
func.func @shared_expert_up_gate(%x: tensor<?x64xf32>, %w1: tensor<256x64xf32>,
    %w2: tensor<64x256xf32>, %w3: tensor<256x64xf32>, %g: tensor<1x64xf32>,
    %acc: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %out = moe.shared_expert swiglu
      ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>)
      up(%w3 : tensor<256x64xf32>) gate(%g : tensor<1x64xf32>)
      outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %out : tensor<?x64xf32>
}

// Gated activation, no sigmoid gate (DeepSeek), bf16 weights.
// CHECK-LABEL: func.func @shared_expert_up_only
// CHECK-SAME:    (%[[X:.*]]: tensor<?x64xf32>, %[[W1:.*]]: tensor<256x64xbf16>, %[[W2:.*]]: tensor<64x256xbf16>, %[[W3:.*]]: tensor<256x64xbf16>, %[[ACC:.*]]: tensor<?x64xf32>)
// CHECK:         %[[OUT:.*]] = moe.shared_expert geglu ins(%[[X]], %[[W1]], %[[W2]] : tensor<?x64xf32>, tensor<256x64xbf16>, tensor<64x256xbf16>) up(%[[W3]] : tensor<256x64xbf16>) outs(%[[ACC]] : tensor<?x64xf32>) -> tensor<?x64xf32>
// CHECK:         return %[[OUT]]
func.func @shared_expert_up_only(%x: tensor<?x64xf32>, %w1: tensor<256x64xbf16>,
    %w2: tensor<64x256xbf16>, %w3: tensor<256x64xbf16>,
    %acc: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %out = moe.shared_expert geglu
      ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x64xbf16>, tensor<64x256xbf16>)
      up(%w3 : tensor<256x64xbf16>)
      outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %out : tensor<?x64xf32>
}

// Non-gated activation with the sigmoid gate only; the gate weight may have
// its own element type.
// CHECK-LABEL: func.func @shared_expert_gate_only
// CHECK-SAME:    (%[[X:.*]]: tensor<8x64xf32>, %[[W1:.*]]: tensor<256x64xf16>, %[[W2:.*]]: tensor<64x256xf16>, %[[G:.*]]: tensor<1x64xf32>, %[[ACC:.*]]: tensor<8x64xf32>)
// CHECK:         %[[OUT:.*]] = moe.shared_expert gelu ins(%[[X]], %[[W1]], %[[W2]] : tensor<8x64xf32>, tensor<256x64xf16>, tensor<64x256xf16>) gate(%[[G]] : tensor<1x64xf32>) outs(%[[ACC]] : tensor<8x64xf32>) -> tensor<8x64xf32>
// CHECK:         return %[[OUT]]
func.func @shared_expert_gate_only(%x: tensor<8x64xf32>, %w1: tensor<256x64xf16>,
    %w2: tensor<64x256xf16>, %g: tensor<1x64xf32>,
    %acc: tensor<8x64xf32>) -> tensor<8x64xf32> {
  %out = moe.shared_expert gelu
      ins(%x, %w1, %w2 : tensor<8x64xf32>, tensor<256x64xf16>, tensor<64x256xf16>)
      gate(%g : tensor<1x64xf32>)
      outs(%acc : tensor<8x64xf32>) -> tensor<8x64xf32>
  return %out : tensor<8x64xf32>
}

// Neither up nor gate.
// CHECK-LABEL: func.func @shared_expert_plain
// CHECK-SAME:    (%[[X:.*]]: tensor<?x64xf32>, %[[W1:.*]]: tensor<256x64xf32>, %[[W2:.*]]: tensor<64x256xf32>, %[[ACC:.*]]: tensor<?x64xf32>)
// CHECK:         %[[R:.*]] = moe.shared_expert relu ins(%[[X]], %[[W1]], %[[W2]] : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>) outs(%[[ACC]] : tensor<?x64xf32>) -> tensor<?x64xf32>
// CHECK:         %[[S:.*]] = moe.shared_expert silu ins(%[[X]], %[[W1]], %[[W2]] : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>) outs(%[[R]] : tensor<?x64xf32>) -> tensor<?x64xf32>
// CHECK:         return %[[S]]
func.func @shared_expert_plain(%x: tensor<?x64xf32>, %w1: tensor<256x64xf32>,
    %w2: tensor<64x256xf32>, %acc: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %r = moe.shared_expert relu
      ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>)
      outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  %s = moe.shared_expert silu
      ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>)
      outs(%r : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %s : tensor<?x64xf32>
}
