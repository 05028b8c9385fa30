// RUN: moe-opt --convert-moe-to-linalg -split-input-file %s | FileCheck %s

// Grouped experts: a loop over experts; each expert's segment of rows
// (offsets clamped into [0, S]) goes through its MLP, bf16 weights widened in
// the contraction bodies, and is added into the same segment of the result.
// CHECK-DAG:   #[[LHS:.*]] = affine_map<(d0, d1, d2) -> (d0, d2)>
// CHECK-DAG:   #[[RHS:.*]] = affine_map<(d0, d1, d2) -> (d1, d2)>
// CHECK-DAG:   #[[OUT:.*]] = affine_map<(d0, d1, d2) -> (d0, d1)>
// CHECK-LABEL: func.func @expert_ffn_swiglu_bf16
// CHECK-SAME:    %[[ROWS:[a-zA-Z0-9_]+]]: tensor<?x64xf32>, %[[OFFS:[a-zA-Z0-9_]+]]: tensor<9xi32>, %[[W1:[a-zA-Z0-9_]+]]: tensor<8x128x64xbf16>, %[[W2:[a-zA-Z0-9_]+]]: tensor<8x64x128xbf16>, %[[W3:[a-zA-Z0-9_]+]]: tensor<8x128x64xbf16>, %[[INIT:[a-zA-Z0-9_]+]]: tensor<?x64xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[R:.*]] = scf.for %[[E:.*]] = %{{.*}} to %{{.*}} step %{{.*}} iter_args(%[[ACC:.*]] = %[[INIT]]) -> (tensor<?x64xf32>)
// CHECK:           %[[LO_RAW:.*]] = tensor.extract %[[OFFS]][%[[E]]] : tensor<9xi32>
// CHECK:           %[[HI_RAW:.*]] = tensor.extract %[[OFFS]][%{{.*}}] : tensor<9xi32>
// CHECK:           %[[N:.*]] = arith.subi %[[HI:.*]], %[[LO:.*]] : index
// CHECK:           %[[SEG:.*]] = tensor.extract_slice %[[ROWS]][%[[LO]], 0] [%[[N]], 64] [1, 1] : tensor<?x64xf32> to tensor<?x64xf32>
// CHECK:           %[[W1E:.*]] = tensor.extract_slice %[[W1]][%[[E]], 0, 0] [1, 128, 64] [1, 1, 1] : tensor<8x128x64xbf16> to tensor<128x64xbf16>
// CHECK:           %[[W2E:.*]] = tensor.extract_slice %[[W2]][%[[E]], 0, 0] [1, 64, 128] [1, 1, 1] : tensor<8x64x128xbf16> to tensor<64x128xbf16>
// CHECK:           %[[W3E:.*]] = tensor.extract_slice %[[W3]][%[[E]], 0, 0] [1, 128, 64] [1, 1, 1] : tensor<8x128x64xbf16> to tensor<128x64xbf16>
// CHECK:           %[[GATE:.*]] = linalg.generic {indexing_maps = [#[[LHS]], #[[RHS]], #[[OUT]]], iterator_types = ["parallel", "parallel", "reduction"]} ins(%[[SEG]], %[[W1E]] : tensor<?x64xf32>, tensor<128x64xbf16>)
// CHECK:             %[[WIDE:.*]] = arith.extf %{{.*}} : bf16 to f32
// CHECK:             %[[PROD:.*]] = arith.mulf %{{.*}}, %[[WIDE]] : f32
// CHECK:             arith.addf %{{.*}}, %[[PROD]] : f32
// CHECK:           %[[UP:.*]] = linalg.generic {{.*}} ins(%[[SEG]], %[[W3E]] : tensor<?x64xf32>, tensor<128x64xbf16>)
// CHECK:           %[[H:.*]] = linalg.generic {{.*}} ins(%[[GATE]], %[[UP]] : tensor<?x128xf32>, tensor<?x128xf32>)
// CHECK:             math.exp
// CHECK:           %[[Y:.*]] = linalg.generic {{.*}} ins(%[[H]], %[[W2E]] : tensor<?x128xf32>, tensor<64x128xbf16>)
// CHECK:           %[[BEFORE:.*]] = tensor.extract_slice %[[ACC]][%[[LO]], 0] [%[[N]], 64] [1, 1]
// CHECK:           %[[AFTER:.*]] = linalg.generic {{.*}} ins(%[[Y]] : tensor<?x64xf32>) outs(%[[BEFORE]] : tensor<?x64xf32>)
// CHECK:           %[[UPD:.*]] = tensor.insert_slice %[[AFTER]] into %[[ACC]][%[[LO]], 0] [%[[N]], 64] [1, 1]
// CHECK:           scf.yield %[[UPD]]
// CHECK:         return %[[R]]
func.func @expert_ffn_swiglu_bf16(%rows: tensor<?x64xf32>, %offsets: tensor<9xi32>,
    %w1: tensor<8x128x64xbf16>, %w2: tensor<8x64x128xbf16>, %w3: tensor<8x128x64xbf16>,
    %init: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %y = moe.expert_ffn swiglu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xbf16>, tensor<8x64x128xbf16>)
      up(%w3 : tensor<8x128x64xbf16>)
      outs(%init : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// Non-gated: no up projection; relu keeps NaN (maximumf). f32 weights are
// used as they are.
// CHECK-LABEL: func.func @expert_ffn_relu_f32
// CHECK-NOT:     moe.
// CHECK:         scf.for
// CHECK:           %[[HID:.*]] = linalg.generic {{.*}} ins(%{{.*}}, %{{.*}} : tensor<?x32xf32>, tensor<16x32xf32>)
// CHECK-NOT:         arith.extf
// CHECK:           %[[ACT:.*]] = linalg.generic {{.*}} ins(%[[HID]] : tensor<?x16xf32>)
// CHECK:             arith.maximumf
// CHECK:           linalg.generic {{.*}} ins(%[[ACT]], %{{.*}} : tensor<?x16xf32>, tensor<32x16xf32>)
func.func @expert_ffn_relu_f32(%rows: tensor<?x32xf32>, %offsets: tensor<5xi32>,
    %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>, %init: tensor<?x32xf32>) -> tensor<?x32xf32> {
  %y = moe.expert_ffn relu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x32xf32>, tensor<5xi32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>)
      outs(%init : tensor<?x32xf32>) -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

// Gated shared expert: one sigmoid per token ([T, 1]) scales the MLP output,
// which is then added into the init.
// CHECK-DAG:   #[[GATEMAP:.*]] = affine_map<(d0, d1) -> (d0, 0)>
// CHECK-LABEL: func.func @shared_expert_gated
// CHECK-SAME:    %[[X:[a-zA-Z0-9_]+]]: tensor<?x64xf32>, %[[W1:[a-zA-Z0-9_]+]]: tensor<256x64xf16>, %[[W2:[a-zA-Z0-9_]+]]: tensor<64x256xf16>, %[[W3:[a-zA-Z0-9_]+]]: tensor<256x64xf16>, %[[G:[a-zA-Z0-9_]+]]: tensor<1x64xf16>, %[[INIT:[a-zA-Z0-9_]+]]: tensor<?x64xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[H1:.*]] = linalg.generic {{.*}} ins(%[[X]], %[[W1]] : tensor<?x64xf32>, tensor<256x64xf16>)
// CHECK:           arith.extf %{{.*}} : f16 to f32
// CHECK:         %[[H3:.*]] = linalg.generic {{.*}} ins(%[[X]], %[[W3]] : tensor<?x64xf32>, tensor<256x64xf16>)
// CHECK:         %[[H:.*]] = linalg.generic {{.*}} ins(%[[H1]], %[[H3]] : tensor<?x256xf32>, tensor<?x256xf32>)
// CHECK:         %[[Y:.*]] = linalg.generic {{.*}} ins(%[[H]], %[[W2]] : tensor<?x256xf32>, tensor<64x256xf16>)
// CHECK:         %[[LOGIT:.*]] = linalg.generic {{.*}} ins(%[[X]], %[[G]] : tensor<?x64xf32>, tensor<1x64xf16>) outs(%{{.*}} : tensor<?x1xf32>)
// CHECK:         %[[SIG:.*]] = linalg.generic {{.*}} ins(%[[LOGIT]] : tensor<?x1xf32>)
// CHECK:           math.exp
// CHECK:         %[[SCALED:.*]] = linalg.generic {indexing_maps = [#[[GATEMAP]], #{{.*}}], {{.*}} ins(%[[SIG]] : tensor<?x1xf32>) outs(%[[Y]] : tensor<?x64xf32>)
// CHECK:         %[[OUT:.*]] = linalg.generic {{.*}} ins(%[[SCALED]] : tensor<?x64xf32>) outs(%[[INIT]] : tensor<?x64xf32>)
// CHECK:         return %[[OUT]]
func.func @shared_expert_gated(%x: tensor<?x64xf32>, %w1: tensor<256x64xf16>, %w2: tensor<64x256xf16>,
    %w3: tensor<256x64xf16>, %g: tensor<1x64xf16>, %acc: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %out = moe.shared_expert swiglu
      ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x64xf16>, tensor<64x256xf16>)
      up(%w3 : tensor<256x64xf16>) gate(%g : tensor<1x64xf16>)
      outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %out : tensor<?x64xf32>
}

// -----

// Ungated: init + MLP(x), exact-erf GELU.
// CHECK-LABEL: func.func @shared_expert_gelu
// CHECK-SAME:    %[[X:[a-zA-Z0-9_]+]]: tensor<4x8xf32>, %{{.*}}: tensor<16x8xf32>, %{{.*}}: tensor<8x16xf32>, %[[INIT:[a-zA-Z0-9_]+]]: tensor<4x8xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[H:.*]] = linalg.generic {{.*}} ins(%[[X]], %{{.*}} : tensor<4x8xf32>, tensor<16x8xf32>)
// CHECK:         %[[A:.*]] = linalg.generic {{.*}} ins(%[[H]] : tensor<4x16xf32>)
// CHECK:           math.erf
// CHECK:         %[[Y:.*]] = linalg.generic {{.*}} ins(%[[A]], %{{.*}} : tensor<4x16xf32>, tensor<8x16xf32>)
// CHECK:         %[[OUT:.*]] = linalg.generic {{.*}} ins(%[[Y]] : tensor<4x8xf32>) outs(%[[INIT]] : tensor<4x8xf32>)
// CHECK:         return %[[OUT]]
func.func @shared_expert_gelu(%x: tensor<4x8xf32>, %w1: tensor<16x8xf32>, %w2: tensor<8x16xf32>,
    %acc: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %out = moe.shared_expert gelu
      ins(%x, %w1, %w2 : tensor<4x8xf32>, tensor<16x8xf32>, tensor<8x16xf32>)
      outs(%acc : tensor<4x8xf32>) -> tensor<4x8xf32>
  return %out : tensor<4x8xf32>
}

// -----

// PEER: dot[t, h, j] = u[ids[t, h, j]] . x[t] (a gather inside the
// reduction), coef = w * act(dot), then sum over (h, j) of coef * v[id].
// CHECK-LABEL: func.func @peer
// CHECK-SAME:    %[[X:[a-zA-Z0-9_]+]]: tensor<?x64xf32>, %[[IDS:[a-zA-Z0-9_]+]]: tensor<?x8x16xi32>, %[[W:[a-zA-Z0-9_]+]]: tensor<?x8x16xf32>, %[[V:[a-zA-Z0-9_]+]]: tensor<1024x64xbf16>, %[[U:[a-zA-Z0-9_]+]]: tensor<1024x64xbf16>, %[[INIT:[a-zA-Z0-9_]+]]: tensor<?x64xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[DOT:.*]] = linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "parallel", "reduction"]} ins(%[[IDS]], %[[X]] : tensor<?x8x16xi32>, tensor<?x64xf32>)
// CHECK:           %[[D:.*]] = linalg.index 3 : index
// CHECK:           scf.if
// CHECK:             tensor.extract %[[U]][%{{.*}}, %[[D]]] : tensor<1024x64xbf16>
// CHECK:           arith.extf %{{.*}} : bf16 to f32
// CHECK:         %[[COEF:.*]] = linalg.generic {{.*}} ins(%[[W]], %[[DOT]] : tensor<?x8x16xf32>, tensor<?x8x16xf32>)
// CHECK:           math.erf
// CHECK:         %[[SUM:.*]] = linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "reduction", "reduction"]} ins(%[[COEF]], %[[IDS]] : tensor<?x8x16xf32>, tensor<?x8x16xi32>)
// CHECK:           %[[COL:.*]] = linalg.index 1 : index
// CHECK:           tensor.extract %[[V]][%{{.*}}, %[[COL]]] : tensor<1024x64xbf16>
// CHECK:         %[[OUT:.*]] = linalg.generic {{.*}} ins(%[[SUM]] : tensor<?x64xf32>) outs(%[[INIT]] : tensor<?x64xf32>)
// CHECK:         return %[[OUT]]
func.func @peer(%x: tensor<?x64xf32>, %ids: tensor<?x8x16xi32>, %w: tensor<?x8x16xf32>,
    %v: tensor<1024x64xbf16>, %u: tensor<1024x64xbf16>, %acc: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %out = moe.single_neuron_experts
      ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<1024x64xbf16>)
      in_proj(%u : tensor<1024x64xbf16>, gelu)
      outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %out : tensor<?x64xf32>
}

// -----

// PKM: the retrieval weights are the coefficients.
// CHECK-LABEL: func.func @pkm
// CHECK-SAME:    %[[X:[a-zA-Z0-9_]+]]: tensor<?x64xf32>, %[[IDS:[a-zA-Z0-9_]+]]: tensor<?x4x8xi32>, %[[W:[a-zA-Z0-9_]+]]: tensor<?x4x8xf32>, %[[V:[a-zA-Z0-9_]+]]: tensor<4096x64xf32>, %[[INIT:[a-zA-Z0-9_]+]]: tensor<?x64xf32>
// CHECK-NOT:     moe.
// CHECK:         %[[SUM:.*]] = linalg.generic {{.*}} ins(%[[W]], %[[IDS]] : tensor<?x4x8xf32>, tensor<?x4x8xi32>)
// CHECK:           tensor.extract %[[V]]
// CHECK:         %[[OUT:.*]] = linalg.generic {{.*}} ins(%[[SUM]] : tensor<?x64xf32>) outs(%[[INIT]] : tensor<?x64xf32>)
// CHECK:         return %[[OUT]]
func.func @pkm(%x: tensor<?x64xf32>, %ids: tensor<?x4x8xi32>, %w: tensor<?x4x8xf32>,
    %v: tensor<4096x64xf32>, %acc: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %out = moe.single_neuron_experts
      ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x4x8xi32>, tensor<?x4x8xf32>, tensor<4096x64xf32>)
      outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %out : tensor<?x64xf32>
}
