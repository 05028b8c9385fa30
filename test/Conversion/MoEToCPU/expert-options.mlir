// RUN: moe-opt --convert-moe-to-cpu="vector-width=8 panel-depth-block=16" -split-input-file %s | FileCheck %s
// RUN: moe-opt --convert-moe-to-cpu="vector-width=8 expert-kernel=row-dot" -split-input-file %s | FileCheck %s --check-prefix=ROWDOT

// The expert options in the fast lowering's hidden epilogue: the gate's
// nonlinearity lane by lane (scalar f32, math.tanh for tanh-GELU), the up
// branch's clamp and offset on whole vectors (panel) or scalars (row-dot).
// CHECK-LABEL: func.func @expert_ffn_gelu_tanh
// CHECK:         scf.forall
// CHECK:           vector.extract %{{.*}}[0] : f32 from vector<8xf32>
// CHECK:           math.tanh %{{.*}} : f32
// ROWDOT-LABEL: func.func @expert_ffn_gelu_tanh
// ROWDOT:         scf.forall
// ROWDOT:           math.tanh %{{.*}} : f32
func.func @expert_ffn_gelu_tanh(%rows: tensor<?x16xf32>, %offsets: tensor<3xi32>,
    %w1: tensor<2x8x16xf32>, %w2: tensor<2x16x8xf32>, %init: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %y = moe.expert_ffn gelu_tanh
      ins(%rows, %offsets, %w1, %w2 : tensor<?x16xf32>, tensor<3xi32>, tensor<2x8x16xf32>, tensor<2x16x8xf32>)
      outs(%init : tensor<?x16xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// CHECK-LABEL: func.func @expert_ffn_gpt_oss_swiglu
// CHECK-DAG:     %[[L:.*]] = arith.constant dense<7.000000e+00> : vector<8xf32>
// CHECK-DAG:     %[[NL:.*]] = arith.constant dense<-7.000000e+00> : vector<8xf32>
// CHECK-DAG:     %[[ONE:.*]] = arith.constant dense<1.000000e+00> : vector<8xf32>
// CHECK:         scf.forall
// CHECK:           %[[G:.*]] = vector.extract %{{.*}}[0] : f32 from vector<8xf32>
// CHECK:           %[[GC:.*]] = arith.minimumf %[[G]], %{{.*}} : f32
// CHECK:           arith.mulf %[[GC]], %{{.*}} : f32
// CHECK:           %[[U1:.*]] = arith.maximumf %{{.*}}, %[[NL]] : vector<8xf32>
// CHECK:           %[[U2:.*]] = arith.minimumf %[[U1]], %[[L]] : vector<8xf32>
// CHECK:           %[[U3:.*]] = arith.addf %[[U2]], %[[ONE]] : vector<8xf32>
// CHECK:           arith.mulf %{{.*}}, %[[U3]] : vector<8xf32>
// ROWDOT-LABEL: func.func @expert_ffn_gpt_oss_swiglu
// ROWDOT:         scf.forall
// ROWDOT:           %[[GC:.*]] = arith.minimumf %{{.*}}, %{{.*}} : f32
// ROWDOT:           %[[U1:.*]] = arith.maximumf %{{.*}}, %{{.*}} : f32
// ROWDOT:           %[[U2:.*]] = arith.minimumf %[[U1]], %{{.*}} : f32
// ROWDOT:           arith.addf %[[U2]], %{{.*}} : f32
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

// Expert biases: the work-item loop notes each row's expert; the hidden
// epilogue adds b1/b3 of the row's expert (vector loads at the tile's
// columns) before the activation, the output epilogue adds b2.
// CHECK-LABEL: func.func @expert_ffn_biases
// CHECK-DAG:     %[[B1:.*]] = bufferization.to_buffer %{{.*}} read_only : tensor<2x8xf32> to memref<2x8xf32>
// CHECK-DAG:     %[[B2:.*]] = bufferization.to_buffer %{{.*}} read_only : tensor<2x16xf32> to memref<2x16xf32>
// CHECK:         %[[RE:.*]] = memref.alloc(%{{.*}}) : memref<?xindex>
// CHECK:         scf.for
// CHECK:           scf.for
// CHECK:             scf.for
// CHECK:               memref.store %{{.*}}, %[[RE]][%{{.*}}] : memref<?xindex>
// CHECK:         scf.forall
// CHECK:           %[[E1:.*]] = memref.load %[[RE]][%{{.*}}] : memref<?xindex>
// CHECK:           vector.{{(masked)?}}load %[[B1]][%[[E1]], %{{.*}}]
// CHECK:         scf.forall
// CHECK:           %[[E2:.*]] = memref.load %[[RE]][%{{.*}}] : memref<?xindex>
// CHECK:           vector.{{(masked)?}}load %[[B2]][%[[E2]], %{{.*}}]
// ROWDOT-LABEL: func.func @expert_ffn_biases
// ROWDOT:         scf.forall
// ROWDOT:           memref.load %{{.*}}[%{{.*}}, %{{.*}}] : memref<2x8xf32>
// ROWDOT:         scf.forall
// ROWDOT:           memref.load %{{.*}}[%{{.*}}, %{{.*}}] : memref<2x16xf32>
func.func @expert_ffn_biases(%rows: tensor<?x16xf32>, %offsets: tensor<3xi32>,
    %w1: tensor<2x8x16xf32>, %w2: tensor<2x16x8xf32>,
    %b1: tensor<2x8xf32>, %b2: tensor<2x16xf32>,
    %init: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %y = moe.expert_ffn relu2
      ins(%rows, %offsets, %w1, %w2 : tensor<?x16xf32>, tensor<3xi32>, tensor<2x8x16xf32>, tensor<2x16x8xf32>)
      hidden_bias(%b1 : tensor<2x8xf32>) out_bias(%b2 : tensor<2x16xf32>)
      outs(%init : tensor<?x16xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// The per-expert scale in the output epilogue: s[rowExpert[row]] broadcast
// over the tile's columns.
// CHECK-LABEL: func.func @expert_ffn_scale
// CHECK-DAG:     %[[S:.*]] = bufferization.to_buffer %{{.*}} read_only : tensor<2xf32> to memref<2xf32>
// CHECK:         %[[RE:.*]] = memref.alloc(%{{.*}}) : memref<?xindex>
// CHECK:         scf.forall
// CHECK:         scf.forall
// CHECK:           %[[E:.*]] = memref.load %[[RE]][%{{.*}}] : memref<?xindex>
// CHECK:           %[[SE:.*]] = memref.load %[[S]][%[[E]]] : memref<2xf32>
// CHECK:           %[[SV:.*]] = vector.broadcast %[[SE]] : f32 to vector<8xf32>
// CHECK:           arith.mulf %[[SV]], %{{.*}} : vector<8xf32>
// ROWDOT-LABEL: func.func @expert_ffn_scale
// ROWDOT:         scf.forall
// ROWDOT:           memref.load %{{.*}}[%{{.*}}] : memref<2xf32>
func.func @expert_ffn_scale(%rows: tensor<?x16xf32>, %offsets: tensor<3xi32>,
    %w1: tensor<2x8x16xf32>, %w2: tensor<2x16x8xf32>, %s: tensor<2xf32>,
    %init: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %y = moe.expert_ffn gelu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x16xf32>, tensor<3xi32>, tensor<2x8x16xf32>, tensor<2x16x8xf32>)
      scale(%s : tensor<2xf32>)
      outs(%init : tensor<?x16xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
