// Diagnostics of the expert options of issue #9 (activations gelu_tanh,
// geglu_tanh, relu2): one case per message.
// RUN: moe-opt %s -split-input-file -verify-diagnostics

func.func @ffn_geglu_tanh_without_up(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects the up projection w3 for gated activation geglu_tanh}}
  %0 = moe.expert_ffn geglu_tanh ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @ffn_relu2_with_up(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %w3: tensor<8x128x64xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects no up projection w3 for activation relu2}}
  %0 = moe.expert_ffn relu2 ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) up(%w3 : tensor<8x128x64xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @shared_gelu_tanh_with_up(%x: tensor<?x64xf32>, %w1: tensor<256x64xf32>, %w2: tensor<64x256xf32>, %w3: tensor<256x64xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.shared_expert' op expects no up projection w3 for activation gelu_tanh}}
  %0 = moe.shared_expert gelu_tanh ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>) up(%w3 : tensor<256x64xf32>) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @sne_geglu_tanh(%x: tensor<?x64xf32>, %ids: tensor<?x8x16xi32>, %w: tensor<?x8x16xf32>, %v: tensor<1024x64xf32>, %u: tensor<1024x64xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.single_neuron_experts' op expects an ungated activation (gelu, gelu_tanh, relu, relu2, silu), got geglu_tanh}}
  %0 = moe.single_neuron_experts ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<1024x64xf32>) in_proj(%u : tensor<1024x64xf32>, geglu_tanh) outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @swiglu_options_on_geglu(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %w3: tensor<8x128x64xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects the swiglu options only with activation swiglu, got geglu}}
  %0 = moe.expert_ffn geglu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) up(%w3 : tensor<8x128x64xf32>) outs(%i : tensor<?x64xf32>) {swiglu_limit = 7.0 : f64} -> tensor<?x64xf32>
  return
}

// -----

func.func @swiglu_limit_not_positive(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %w3: tensor<8x128x64xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects a finite swiglu_limit > 0, got 0}}
  %0 = moe.expert_ffn swiglu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) up(%w3 : tensor<8x128x64xf32>) outs(%i : tensor<?x64xf32>) {swiglu_limit = 0.0 : f64} -> tensor<?x64xf32>
  return
}

// -----

func.func @swiglu_alpha_not_finite(%x: tensor<?x64xf32>, %w1: tensor<256x64xf32>, %w2: tensor<64x256xf32>, %w3: tensor<256x64xf32>, %acc: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.shared_expert' op expects a finite swiglu_alpha > 0, got INF}}
  %0 = moe.shared_expert swiglu ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>) up(%w3 : tensor<256x64xf32>) outs(%acc : tensor<?x64xf32>) {swiglu_alpha = 0x7FF0000000000000 : f64} -> tensor<?x64xf32>
  return
}

// -----

func.func @swiglu_up_offset_nan(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %w3: tensor<8x128x64xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects a finite swiglu_up_offset, got nan}}
  %0 = moe.expert_ffn swiglu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) up(%w3 : tensor<8x128x64xf32>) outs(%i : tensor<?x64xf32>) {swiglu_up_offset = 0x7FF8000000000000 : f64} -> tensor<?x64xf32>
  return
}

// -----

func.func @swiglu_clamp_after_without_limit(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %w3: tensor<8x128x64xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects swiglu_limit with swiglu_clamp_after_activation}}
  %0 = moe.expert_ffn swiglu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) up(%w3 : tensor<8x128x64xf32>) outs(%i : tensor<?x64xf32>) {swiglu_clamp_after_activation} -> tensor<?x64xf32>
  return
}

// -----

func.func @bias_b1_without_b2(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %b1: tensor<8x128xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects hidden_bias (b1) and out_bias (b2) together}}
  %0 = moe.expert_ffn relu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) hidden_bias(%b1 : tensor<8x128xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @bias_b3_alone(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %w3: tensor<8x128x64xf32>, %b3: tensor<8x128xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects up_bias (b3) only with hidden_bias (b1)}}
  %0 = moe.expert_ffn swiglu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) up(%w3 : tensor<8x128x64xf32>) up_bias(%b3 : tensor<8x128xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @bias_gated_without_b3(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %w3: tensor<8x128x64xf32>, %b1: tensor<8x128xf32>, %b2: tensor<8x64xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects up_bias (b3) with hidden_bias for gated activation swiglu}}
  %0 = moe.expert_ffn swiglu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) up(%w3 : tensor<8x128x64xf32>) hidden_bias(%b1 : tensor<8x128xf32>) out_bias(%b2 : tensor<8x64xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @bias_b3_ungated(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %b1: tensor<8x128xf32>, %b3: tensor<8x128xf32>, %b2: tensor<8x64xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects no up_bias (b3) for activation gelu}}
  %0 = moe.expert_ffn gelu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) hidden_bias(%b1 : tensor<8x128xf32>) up_bias(%b3 : tensor<8x128xf32>) out_bias(%b2 : tensor<8x64xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @bias_b2_shape(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %b1: tensor<8x128xf32>, %b2: tensor<8x128xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects b2 dim 1 (128) to match w1 dim 2 (64)}}
  %0 = moe.expert_ffn relu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) hidden_bias(%b1 : tensor<8x128xf32>) out_bias(%b2 : tensor<8x128xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @scale_shape(%r: tensor<?x64xf32>, %o: tensor<9xi32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %s: tensor<4xf32>, %i: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.expert_ffn' op expects scale dim 0 (4) to match w1 dim 0 (8)}}
  %0 = moe.expert_ffn relu ins(%r, %o, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) scale(%s : tensor<4xf32>) outs(%i : tensor<?x64xf32>) -> tensor<?x64xf32>
  return
}
