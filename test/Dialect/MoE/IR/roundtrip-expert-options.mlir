// Round-trip of the expert options of issue #9: the activations gelu_tanh,
// geglu_tanh and relu2 on the expert ops and the single-neuron experts.
// RUN: moe-opt %s | moe-opt | FileCheck %s
// RUN: moe-opt %s -mlir-print-op-generic | moe-opt | FileCheck %s
// RUN: moe-opt %s -emit-bytecode | moe-opt | FileCheck %s
// RUN: moe-opt %s > %t.once && moe-opt %t.once > %t.twice && diff %t.once %t.twice

// CHECK-LABEL: func.func @expert_ffn_new_activations
// CHECK-SAME:    (%[[ROWS:.*]]: tensor<?x64xf32>, %[[OFF:.*]]: tensor<9xi32>, %[[W1:.*]]: tensor<8x128x64xbf16>, %[[W2:.*]]: tensor<8x64x128xbf16>, %[[W3:.*]]: tensor<8x128x64xbf16>, %[[INIT:.*]]: tensor<?x64xf32>)
// CHECK:         %[[Y0:.*]] = moe.expert_ffn geglu_tanh ins(%[[ROWS]], %[[OFF]], %[[W1]], %[[W2]] : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xbf16>, tensor<8x64x128xbf16>) up(%[[W3]] : tensor<8x128x64xbf16>) outs(%[[INIT]] : tensor<?x64xf32>) -> tensor<?x64xf32>
// CHECK:         %[[Y1:.*]] = moe.expert_ffn gelu_tanh ins(%[[ROWS]], %[[OFF]], %[[W1]], %[[W2]] : {{.*}}) outs(%[[Y0]] : tensor<?x64xf32>) -> tensor<?x64xf32>
// CHECK:         %[[Y2:.*]] = moe.expert_ffn relu2 ins(%[[ROWS]], %[[OFF]], %[[W1]], %[[W2]] : {{.*}}) outs(%[[Y1]] : tensor<?x64xf32>) -> tensor<?x64xf32>
// CHECK:         return %[[Y2]]
func.func @expert_ffn_new_activations(%rows: tensor<?x64xf32>, %offsets: tensor<9xi32>,
    %w1: tensor<8x128x64xbf16>, %w2: tensor<8x64x128xbf16>,
    %w3: tensor<8x128x64xbf16>, %init: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %y0 = moe.expert_ffn geglu_tanh
      ins(%rows, %offsets, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xbf16>, tensor<8x64x128xbf16>)
      up(%w3 : tensor<8x128x64xbf16>)
      outs(%init : tensor<?x64xf32>) -> tensor<?x64xf32>
  %y1 = moe.expert_ffn gelu_tanh
      ins(%rows, %offsets, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xbf16>, tensor<8x64x128xbf16>)
      outs(%y0 : tensor<?x64xf32>) -> tensor<?x64xf32>
  %y2 = moe.expert_ffn relu2
      ins(%rows, %offsets, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xbf16>, tensor<8x64x128xbf16>)
      outs(%y1 : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %y2 : tensor<?x64xf32>
}

// CHECK-LABEL: func.func @shared_expert_geglu_tanh
// CHECK:         moe.shared_expert geglu_tanh ins(%{{.*}}, %{{.*}}, %{{.*}} : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>) up(%{{.*}} : tensor<256x64xf32>) outs(%{{.*}} : tensor<?x64xf32>) -> tensor<?x64xf32>
func.func @shared_expert_geglu_tanh(%x: tensor<?x64xf32>, %w1: tensor<256x64xf32>,
    %w2: tensor<64x256xf32>, %w3: tensor<256x64xf32>,
    %acc: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %out = moe.shared_expert geglu_tanh
      ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>)
      up(%w3 : tensor<256x64xf32>)
      outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %out : tensor<?x64xf32>
}

// CHECK-LABEL: func.func @peer_relu2
// CHECK:         moe.single_neuron_experts ins({{.*}}) in_proj(%{{.*}} : tensor<1024x64xf32>, relu2) outs
// CHECK-LABEL: func.func @peer_gelu_tanh
// CHECK:         moe.single_neuron_experts ins({{.*}}) in_proj(%{{.*}} : tensor<1024x64xf32>, gelu_tanh) outs
func.func @peer_relu2(%x: tensor<?x64xf32>, %ids: tensor<?x8x16xi32>, %w: tensor<?x8x16xf32>, %v: tensor<1024x64xf32>, %u: tensor<1024x64xf32>, %acc: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %0 = moe.single_neuron_experts ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<1024x64xf32>) in_proj(%u : tensor<1024x64xf32>, relu2) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %0 : tensor<?x64xf32>
}
func.func @peer_gelu_tanh(%x: tensor<?x64xf32>, %ids: tensor<?x8x16xi32>, %w: tensor<?x8x16xf32>, %v: tensor<1024x64xf32>, %u: tensor<1024x64xf32>, %acc: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %0 = moe.single_neuron_experts ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<1024x64xf32>) in_proj(%u : tensor<1024x64xf32>, gelu_tanh) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %0 : tensor<?x64xf32>
}

// SwiGLU options: GPT-OSS (limit, alpha, up offset) on the routed experts,
// Step3.7 (limit after the activation) on a shared expert.
// CHECK-LABEL: func.func @swiglu_options
// CHECK:         moe.expert_ffn swiglu ins({{.*}}) up(%{{.*}} : tensor<8x128x64xbf16>) outs(%{{.*}} : tensor<?x64xf32>) {swiglu_alpha = 1.702000e+00 : f64, swiglu_limit = 7.000000e+00 : f64, swiglu_up_offset = 1.000000e+00 : f64} -> tensor<?x64xf32>
// CHECK:         moe.shared_expert swiglu ins({{.*}}) up(%{{.*}} : tensor<256x64xf32>) outs(%{{.*}} : tensor<?x64xf32>) {swiglu_clamp_after_activation, swiglu_limit = 1.600000e+01 : f64} -> tensor<?x64xf32>
// Defaults are not printed.
// CHECK:         moe.expert_ffn swiglu ins({{.*}}) up(%{{.*}} : tensor<8x128x64xbf16>) outs(%{{.*}} : tensor<?x64xf32>) -> tensor<?x64xf32>
func.func @swiglu_options(%rows: tensor<?x64xf32>, %offsets: tensor<9xi32>,
    %w1: tensor<8x128x64xbf16>, %w2: tensor<8x64x128xbf16>,
    %w3: tensor<8x128x64xbf16>, %init: tensor<?x64xf32>,
    %x: tensor<?x64xf32>, %s1: tensor<256x64xf32>, %s2: tensor<64x256xf32>,
    %s3: tensor<256x64xf32>) -> (tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>) {
  %y = moe.expert_ffn swiglu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xbf16>, tensor<8x64x128xbf16>)
      up(%w3 : tensor<8x128x64xbf16>)
      outs(%init : tensor<?x64xf32>)
      {swiglu_limit = 7.0 : f64, swiglu_alpha = 1.702 : f64, swiglu_up_offset = 1.0 : f64} -> tensor<?x64xf32>
  %s = moe.shared_expert swiglu
      ins(%x, %s1, %s2 : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>)
      up(%s3 : tensor<256x64xf32>)
      outs(%init : tensor<?x64xf32>)
      {swiglu_limit = 16.0 : f64, swiglu_clamp_after_activation} -> tensor<?x64xf32>
  %d = moe.expert_ffn swiglu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xbf16>, tensor<8x64x128xbf16>)
      up(%w3 : tensor<8x128x64xbf16>)
      outs(%init : tensor<?x64xf32>)
      {swiglu_alpha = 1.0 : f64, swiglu_up_offset = 0.0 : f64} -> tensor<?x64xf32>
  return %y, %s, %d : tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>
}

// Expert biases: hidden_bias (b1), up_bias (b3, gated), out_bias (b2).
// CHECK-LABEL: func.func @expert_biases
// CHECK:         moe.expert_ffn swiglu ins({{.*}}) up(%{{.*}} : tensor<8x128x64xbf16>) hidden_bias(%[[B1:.*]] : tensor<8x128xf32>) up_bias(%[[B3:.*]] : tensor<8x128xf32>) out_bias(%[[B2:.*]] : tensor<8x64xf32>) outs(%{{.*}} : tensor<?x64xf32>) {swiglu_limit = 7.000000e+00 : f64} -> tensor<?x64xf32>
// CHECK:         moe.expert_ffn relu2 ins({{.*}}) hidden_bias(%[[B1]] : tensor<8x128xf32>) out_bias(%[[B2]] : tensor<8x64xf32>) outs
func.func @expert_biases(%rows: tensor<?x64xf32>, %offsets: tensor<9xi32>,
    %w1: tensor<8x128x64xbf16>, %w2: tensor<8x64x128xbf16>,
    %w3: tensor<8x128x64xbf16>, %b1: tensor<8x128xf32>, %b3: tensor<8x128xf32>,
    %b2: tensor<8x64xf32>, %init: tensor<?x64xf32>) -> (tensor<?x64xf32>, tensor<?x64xf32>) {
  %y = moe.expert_ffn swiglu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xbf16>, tensor<8x64x128xbf16>)
      up(%w3 : tensor<8x128x64xbf16>)
      hidden_bias(%b1 : tensor<8x128xf32>) up_bias(%b3 : tensor<8x128xf32>) out_bias(%b2 : tensor<8x64xf32>)
      outs(%init : tensor<?x64xf32>) {swiglu_limit = 7.0 : f64} -> tensor<?x64xf32>
  %z = moe.expert_ffn relu2
      ins(%rows, %offsets, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xbf16>, tensor<8x64x128xbf16>)
      hidden_bias(%b1 : tensor<8x128xf32>) out_bias(%b2 : tensor<8x64xf32>)
      outs(%init : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %y, %z : tensor<?x64xf32>, tensor<?x64xf32>
}

// Per-expert output scale (Gemma 4).
// CHECK-LABEL: func.func @expert_scale
// CHECK:         moe.expert_ffn geglu_tanh ins({{.*}}) up(%{{.*}} : tensor<8x128x64xbf16>) scale(%{{.*}} : tensor<8xf32>) outs
func.func @expert_scale(%rows: tensor<?x64xf32>, %offsets: tensor<9xi32>,
    %w1: tensor<8x128x64xbf16>, %w2: tensor<8x64x128xbf16>,
    %w3: tensor<8x128x64xbf16>, %s: tensor<8xf32>, %init: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %y = moe.expert_ffn geglu_tanh
      ins(%rows, %offsets, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xbf16>, tensor<8x64x128xbf16>)
      up(%w3 : tensor<8x128x64xbf16>) scale(%s : tensor<8xf32>)
      outs(%init : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}
