//===- Passes.h - exporting layers through the C ABI ------------*- C++ -*-===//

#ifndef MOE_ABI_PASSES_H
#define MOE_ABI_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlowOps.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Pass/Pass.h"

namespace mlir::moe {

#define GEN_PASS_DECL
#include "moe/ABI/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "moe/ABI/Passes.h.inc"

} // namespace mlir::moe

#endif // MOE_ABI_PASSES_H
