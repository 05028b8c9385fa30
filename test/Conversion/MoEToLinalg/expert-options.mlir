// RUN: moe-opt --convert-moe-to-linalg -split-input-file %s | FileCheck %s

// Tanh-GELU: 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))) in the body of
// the activation generic, z^3 as (z z) z.
// CHECK-LABEL: func.func @expert_ffn_gelu_tanh
// CHECK:         scf.for
// CHECK:           linalg.generic
// CHECK:             %[[ZZ:.*]] = arith.mulf %[[Z:.*]], %[[Z]] : f32
// CHECK:             %[[Z3:.*]] = arith.mulf %[[ZZ]], %[[Z]] : f32
// CHECK:             %[[K:.*]] = arith.mulf %{{.*}}, %[[Z3]] : f32
// CHECK:             %[[IN:.*]] = arith.addf %[[Z]], %[[K]] : f32
// CHECK:             %[[S:.*]] = arith.mulf %{{.*}}, %[[IN]] : f32
// CHECK:             math.tanh %[[S]] : f32
func.func @expert_ffn_gelu_tanh(%rows: tensor<?x16xf32>, %offsets: tensor<3xi32>,
    %w1: tensor<2x8x16xf32>, %w2: tensor<2x16x8xf32>, %init: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %y = moe.expert_ffn gelu_tanh
      ins(%rows, %offsets, %w1, %w2 : tensor<?x16xf32>, tensor<3xi32>, tensor<2x8x16xf32>, tensor<2x16x8xf32>)
      outs(%init : tensor<?x16xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// relu2: max(z, 0) (NaN-propagating), squared.
// CHECK-LABEL: func.func @shared_relu2
// CHECK:         linalg.generic
// CHECK:           %[[R:.*]] = arith.maximumf %{{.*}}, %{{.*}} : f32
// CHECK:           %[[SQ:.*]] = arith.mulf %[[R]], %[[R]] : f32
// CHECK:           linalg.yield %[[SQ]] : f32
func.func @shared_relu2(%x: tensor<?x16xf32>, %w1: tensor<8x16xbf16>, %w2: tensor<16x8xbf16>,
    %acc: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %out = moe.shared_expert relu2
      ins(%x, %w1, %w2 : tensor<?x16xf32>, tensor<8x16xbf16>, tensor<16x8xbf16>)
      outs(%acc : tensor<?x16xf32>) -> tensor<?x16xf32>
  return %out : tensor<?x16xf32>
}

// -----

// GPT-OSS's clamped SwiGLU: g' = min(g, 7), g' sigma(1.702 g'), times
// clamp(u, -7, 7) + 1.
// CHECK-LABEL: func.func @expert_ffn_gpt_oss_swiglu
// CHECK:         %[[L:.*]] = arith.constant 7.000000e+00 : f32
// CHECK:         %[[GC:.*]] = arith.minimumf %[[G:[a-z0-9_]+]], %[[L]] : f32
// CHECK:         %[[A:.*]] = arith.constant 1.702000e+00 : f32
// CHECK:         arith.mulf %[[GC]], %[[A]] : f32
// CHECK:         math.exp
// CHECK:         arith.divf
// CHECK:         %[[GLU:.*]] = arith.mulf %[[GC]], %{{.*}} : f32
// CHECK:         %[[NL:.*]] = arith.constant -7.000000e+00 : f32
// CHECK:         %[[U1:.*]] = arith.maximumf %[[U:[a-z0-9_]+]], %[[NL]] : f32
// CHECK:         %[[U2:.*]] = arith.minimumf %[[U1]], %{{.*}} : f32
// CHECK:         %[[ONE:.*]] = arith.constant 1.000000e+00 : f32
// CHECK:         %[[U3:.*]] = arith.addf %[[U2]], %[[ONE]] : f32
// CHECK:         %[[H:.*]] = arith.mulf %[[GLU]], %[[U3]] : f32
// CHECK:         linalg.yield %[[H]] : f32
func.func @expert_ffn_gpt_oss_swiglu(%rows: tensor<?x16xf32>, %offsets: tensor<3xi32>,
    %w1: tensor<2x8x16xf32>, %w2: tensor<2x16x8xf32>, %w3: tensor<2x8x16xf32>,
    %init: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %y = moe.expert_ffn swiglu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x16xf32>, tensor<3xi32>, tensor<2x8x16xf32>, tensor<2x16x8xf32>)
      up(%w3 : tensor<2x8x16xf32>)
      outs(%init : tensor<?x16xf32>)
      {swiglu_limit = 7.0 : f64, swiglu_alpha = 1.702 : f64, swiglu_up_offset = 1.0 : f64} -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Step3.7: the minimum after silu, no alpha, no offset.
// CHECK-LABEL: func.func @shared_step_swiglu
// CHECK:         math.exp
// CHECK:         %[[SIG:.*]] = arith.divf
// CHECK:         %[[S:.*]] = arith.mulf %[[G:[a-z0-9_]+]], %[[SIG]] : f32
// CHECK:         %[[SC:.*]] = arith.minimumf %[[S]], %{{.*}} : f32
// CHECK:         %[[U1:.*]] = arith.maximumf
// CHECK:         %[[U2:.*]] = arith.minimumf %[[U1]], %{{.*}} : f32
// CHECK-NOT:     arith.addf
// CHECK:         arith.mulf %[[SC]], %[[U2]] : f32
func.func @shared_step_swiglu(%x: tensor<?x16xf32>, %w1: tensor<8x16xf32>, %w2: tensor<16x8xf32>,
    %w3: tensor<8x16xf32>, %acc: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %out = moe.shared_expert swiglu
      ins(%x, %w1, %w2 : tensor<?x16xf32>, tensor<8x16xf32>, tensor<16x8xf32>)
      up(%w3 : tensor<8x16xf32>)
      outs(%acc : tensor<?x16xf32>)
      {swiglu_limit = 16.0 : f64, swiglu_clamp_after_activation} -> tensor<?x16xf32>
  return %out : tensor<?x16xf32>
}

// -----

// Expert biases: each expert's row of b1/b3 added to its projections before
// the activation, its b2 row to the output, as generics broadcasting the
// bias along the rows.
// CHECK-DAG:   #[[COLS:.*]] = affine_map<(d0, d1) -> (d1)>
// CHECK-LABEL: func.func @expert_ffn_biases
// CHECK-SAME:    %[[B1:[a-zA-Z0-9_]+]]: tensor<2x8xf32>, %[[B3:[a-zA-Z0-9_]+]]: tensor<2x8xf32>, %[[B2:[a-zA-Z0-9_]+]]: tensor<2x16xf32>
// CHECK:         scf.for %[[E:[a-z0-9_]+]] =
// CHECK-DAG:       %[[B1E:.*]] = tensor.extract_slice %[[B1]][%[[E]], 0] [1, 8] [1, 1] : tensor<2x8xf32> to tensor<8xf32>
// CHECK-DAG:       %[[B3E:.*]] = tensor.extract_slice %[[B3]][%[[E]], 0] [1, 8] [1, 1] : tensor<2x8xf32> to tensor<8xf32>
// CHECK-DAG:       %[[B2E:.*]] = tensor.extract_slice %[[B2]][%[[E]], 0] [1, 16] [1, 1] : tensor<2x16xf32> to tensor<16xf32>
// CHECK:           linalg.generic {{.*}} ins(%{{.*}}, %[[B1E]] : tensor<?x8xf32>, tensor<8xf32>)
// CHECK:           linalg.generic {{.*}} ins(%{{.*}}, %[[B3E]] : tensor<?x8xf32>, tensor<8xf32>)
// CHECK:           linalg.generic {{.*}} ins(%{{.*}}, %[[B2E]] : tensor<?x16xf32>, tensor<16xf32>)
func.func @expert_ffn_biases(%rows: tensor<?x16xf32>, %offsets: tensor<3xi32>,
    %w1: tensor<2x8x16xf32>, %w2: tensor<2x16x8xf32>, %w3: tensor<2x8x16xf32>,
    %b1: tensor<2x8xf32>, %b3: tensor<2x8xf32>, %b2: tensor<2x16xf32>,
    %init: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %y = moe.expert_ffn swiglu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x16xf32>, tensor<3xi32>, tensor<2x8x16xf32>, tensor<2x16x8xf32>)
      up(%w3 : tensor<2x8x16xf32>)
      hidden_bias(%b1 : tensor<2x8xf32>) up_bias(%b3 : tensor<2x8xf32>) out_bias(%b2 : tensor<2x16xf32>)
      outs(%init : tensor<?x16xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// The per-expert scale multiplies each expert's output (s_e · y).
// CHECK-LABEL: func.func @expert_ffn_scale
// CHECK-SAME:    %[[S:[a-zA-Z0-9_]+]]: tensor<2xf32>
// CHECK:         scf.for %[[E:[a-z0-9_]+]] =
// CHECK:           %[[Y:.*]] = linalg.generic {{.*}} ins(%{{.*}}, %{{.*}} : tensor<?x8xf32>, tensor<16x8xf32>)
// CHECK:           %[[SE:.*]] = tensor.extract %[[S]][%[[E]]] : tensor<2xf32>
// CHECK:           linalg.generic {{.*}} ins(%[[Y]] : tensor<?x16xf32>)
// CHECK:             arith.mulf %[[SE]], %{{.*}} : f32
func.func @expert_ffn_scale(%rows: tensor<?x16xf32>, %offsets: tensor<3xi32>,
    %w1: tensor<2x8x16xf32>, %w2: tensor<2x16x8xf32>, %s: tensor<2xf32>,
    %init: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %y = moe.expert_ffn gelu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x16xf32>, tensor<3xi32>, tensor<2x8x16xf32>, tensor<2x16x8xf32>)
      scale(%s : tensor<2xf32>)
      outs(%init : tensor<?x16xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
