//===- LowerParallelLaunches.cpp - launches to moe_rt_parallel_for --------===//
//
// The runtime calls back through one C signature, `void (void *ctx, int64_t
// i)`, so each outlined body gets a trampoline that unpacks its arguments from
// a struct the launching function fills on its stack. Runs on the LLVM
// dialect, where a memref argument has become its descriptor fields.
//
//===----------------------------------------------------------------------===//

#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/SymbolTable.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"

namespace mlir::moe {
#define GEN_PASS_DEF_LOWERPARALLELLAUNCHES
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

constexpr llvm::StringLiteral kCInterfacePrefix = "_mlir_ciface_";

/// `value` as an integer of `type` (index and i64 differ where the data layout
/// says so).
Value castInteger(OpBuilder &b, Location loc, Value value, Type type) {
  unsigned from = value.getType().getIntOrFloatBitWidth();
  unsigned to = type.getIntOrFloatBitWidth();
  if (from < to)
    return LLVM::SExtOp::create(b, loc, type, value);
  if (from > to)
    return LLVM::TruncOp::create(b, loc, type, value);
  return value;
}

struct LowerParallelLaunchesPass
    : public moe::impl::LowerParallelLaunchesBase<LowerParallelLaunchesPass> {
  void runOnOperation() override;

private:
  FailureOr<LLVM::LLVMFuncOp> getOrCreateTrampoline(LLVM::CallOp launch,
                                                    LLVM::LLVMFuncOp body,
                                                    LLVM::LLVMStructType ctxTy);
  FailureOr<LLVM::LLVMFuncOp> getOrDeclareRuntime();
  LogicalResult lower(LLVM::CallOp launch);

  SymbolTable *symbols = nullptr;
  llvm::DenseMap<Operation *, LLVM::LLVMFuncOp> trampolines;
};

FailureOr<LLVM::LLVMFuncOp> LowerParallelLaunchesPass::getOrDeclareRuntime() {
  MLIRContext *ctx = &getContext();
  auto ptrTy = LLVM::LLVMPointerType::get(ctx);
  auto fnTy = LLVM::LLVMFunctionType::get(
      LLVM::LLVMVoidType::get(ctx), {IntegerType::get(ctx, 64), ptrTy, ptrTy});
  ModuleOp module = getOperation();
  if (Operation *existing = symbols->lookup(kRuntimeParallelFor)) {
    auto fn = dyn_cast<LLVM::LLVMFuncOp>(existing);
    if (!fn || fn.getFunctionType() != fnTy)
      return existing->emitOpError("expects @")
             << kRuntimeParallelFor << " to be an llvm.func of type " << fnTy;
    return fn;
  }
  auto b = OpBuilder::atBlockBegin(module.getBody());
  auto fn =
      LLVM::LLVMFuncOp::create(b, module.getLoc(), kRuntimeParallelFor, fnTy);
  symbols->insert(fn);
  return fn;
}

FailureOr<LLVM::LLVMFuncOp> LowerParallelLaunchesPass::getOrCreateTrampoline(
    LLVM::CallOp launch, LLVM::LLVMFuncOp body, LLVM::LLVMStructType ctxTy) {
  auto it = trampolines.find(body);
  if (it != trampolines.end())
    return it->second;

  MLIRContext *ctx = &getContext();
  std::string name = (body.getSymName() + "_trampoline").str();
  if (symbols->lookup(name))
    return launch.emitOpError("expects no symbol named @")
           << name << " besides the trampoline this pass creates";

  Location loc = body.getLoc();
  auto ptrTy = LLVM::LLVMPointerType::get(ctx);
  auto i64 = IntegerType::get(ctx, 64);
  auto fnTy =
      LLVM::LLVMFunctionType::get(LLVM::LLVMVoidType::get(ctx), {ptrTy, i64});
  OpBuilder b(ctx);
  b.setInsertionPointAfter(body);
  auto trampoline =
      LLVM::LLVMFuncOp::create(b, loc, name, fnTy, LLVM::Linkage::Internal);
  symbols->insert(trampoline);

  Block *entry = trampoline.addEntryBlock(b);
  b.setInsertionPointToStart(entry);
  Value ctxPtr = entry->getArgument(0);
  SmallVector<Value> args = {castInteger(b, loc, entry->getArgument(1),
                                         body.getArgumentTypes().front())};
  for (auto [index, fieldTy] : llvm::enumerate(ctxTy.getBody())) {
    Value field =
        LLVM::GEPOp::create(b, loc, ptrTy, ctxTy, ctxPtr,
                            ArrayRef<LLVM::GEPArg>{0, int32_t(index)});
    args.push_back(LLVM::LoadOp::create(b, loc, fieldTy, field));
  }
  LLVM::CallOp::create(b, loc, body, args);
  LLVM::ReturnOp::create(b, loc, ValueRange());
  trampolines[body] = trampoline;
  return trampoline;
}

LogicalResult LowerParallelLaunchesPass::lower(LLVM::CallOp launch) {
  MLIRContext *ctx = &getContext();
  Location loc = launch.getLoc();
  StringRef bodyName =
      launch.getCallee()->drop_front(kParallelLaunchPrefix.size());
  auto body = symbols->lookup<LLVM::LLVMFuncOp>(bodyName);
  if (!body || body.isExternal())
    return launch.emitOpError("expects the body @")
           << bodyName << " of the parallel launch to be defined";

  // The launch declaration was lowered like the body, so its operands are the
  // body's arguments: the index, then the captured values field by field.
  ValueRange operands = launch.getArgOperands();
  TypeRange bodyTypes = body.getArgumentTypes();
  if (operands.empty() || TypeRange(operands) != bodyTypes ||
      !isa<IntegerType>(operands.front().getType()) ||
      !isa<LLVM::LLVMVoidType>(body.getFunctionType().getReturnType()))
    return launch.emitOpError("expects the operands of the parallel launch to "
                              "match the arguments of @")
           << bodyName << " (" << body.getFunctionType() << ")";
  ValueRange captured = operands.drop_front();
  auto ctxTy = LLVM::LLVMStructType::getLiteral(
      ctx, llvm::to_vector(TypeRange(captured)));

  FailureOr<LLVM::LLVMFuncOp> runtime = getOrDeclareRuntime();
  if (failed(runtime))
    return failure();
  FailureOr<LLVM::LLVMFuncOp> trampoline =
      getOrCreateTrampoline(launch, body, ctxTy);
  if (failed(trampoline))
    return failure();

  auto ptrTy = LLVM::LLVMPointerType::get(ctx);
  auto i64 = IntegerType::get(ctx, 64);
  OpBuilder b(launch);
  Value ctxPtr;
  if (captured.empty()) {
    ctxPtr = LLVM::ZeroOp::create(b, loc, ptrTy);
  } else {
    // In the entry block, so that a launch inside a loop reuses one slot.
    auto parent = launch->getParentOfType<LLVM::LLVMFuncOp>();
    auto entryBuilder = OpBuilder::atBlockBegin(&parent.getBody().front());
    Value one = LLVM::ConstantOp::create(entryBuilder, loc, i64, 1);
    ctxPtr = LLVM::AllocaOp::create(entryBuilder, loc, ptrTy, ctxTy, one);
    for (auto [index, value] : llvm::enumerate(captured)) {
      Value field =
          LLVM::GEPOp::create(b, loc, ptrTy, ctxTy, ctxPtr,
                              ArrayRef<LLVM::GEPArg>{0, int32_t(index)});
      LLVM::StoreOp::create(b, loc, value, field);
    }
  }
  Value n = castInteger(b, loc, operands.front(), i64);
  Value fn = LLVM::AddressOfOp::create(b, loc, *trampoline);
  LLVM::CallOp::create(b, loc, *runtime, ValueRange{n, fn, ctxPtr});
  launch.erase();
  return success();
}

void LowerParallelLaunchesPass::runOnOperation() {
  ModuleOp module = getOperation();
  SymbolTable symbolTable(module);
  symbols = &symbolTable;
  trampolines.clear();

  SmallVector<LLVM::CallOp> launches;
  module.walk([&](LLVM::CallOp call) {
    std::optional<StringRef> callee = call.getCallee();
    if (callee && callee->starts_with(kParallelLaunchPrefix))
      launches.push_back(call);
  });
  bool ok = true;
  for (LLVM::CallOp launch : launches)
    ok &= succeeded(lower(launch));
  if (!ok)
    return signalPassFailure();

  // The launch declarations. With emit-c-interface, func-to-llvm gave each
  // launch a wrapper calling `_mlir_ciface_<launch>`, and each private body a
  // `_mlir_ciface_<body>` nothing outside the module may call: all unused.
  // The uses are collected once per round (one walk of the module) rather
  // than per function: a layer has hundreds of launches.
  llvm::DenseSet<StringAttr> used;
  auto collectUses = [&] {
    used.clear();
    if (auto uses = SymbolTable::getSymbolUses(&module.getBodyRegion()))
      for (const SymbolTable::SymbolUse &use : *uses)
        used.insert(use.getSymbolRef().getRootReference());
  };
  auto isUnused = [&](LLVM::LLVMFuncOp fn) {
    return !used.contains(fn.getSymNameAttr());
  };
  std::string cInterfaceLaunchPrefix =
      (kCInterfacePrefix + kParallelLaunchPrefix).str();
  for (StringRef prefix :
       {StringRef(kParallelLaunchPrefix), StringRef(cInterfaceLaunchPrefix)}) {
    collectUses();
    for (auto fn : llvm::to_vector(module.getOps<LLVM::LLVMFuncOp>()))
      if (fn.getSymName().starts_with(prefix) && isUnused(fn))
        symbols->erase(fn);
  }
  collectUses();
  for (auto [body, trampoline] : trampolines) {
    auto wrapper = symbols->lookup<LLVM::LLVMFuncOp>(
        (kCInterfacePrefix + cast<LLVM::LLVMFuncOp>(body).getSymName()).str());
    if (wrapper && wrapper.isPrivate() && isUnused(wrapper))
      symbols->erase(wrapper);
  }
  symbols = nullptr;
}

} // namespace
