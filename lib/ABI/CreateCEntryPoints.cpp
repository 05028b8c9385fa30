//===- CreateCEntryPoints.cpp - C entry points around layer functions -----===//

#include "moe/ABI/LayerABI.h"
#include "moe/ABI/Passes.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/LLVMIR/LLVMTypes.h"
#include "mlir/IR/SymbolTable.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOECREATECENTRYPOINTS
#include "moe/ABI/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// Builds `<layer>_forward` (validation) and `<layer>_forward_impl` (buffers
/// wrapped as tensors around a call of the layer).
class EntryPointBuilder {
public:
  EntryPointBuilder(ModuleOp module, func::FuncOp layer, const LayerABI &abi)
      : module(module), layer(layer), abi(abi), symbols(module),
        loc(layer.getLoc()), ctx(module.getContext()) {}

  void build() {
    func::FuncOp impl = buildImpl();
    buildEntry(impl);
    layer.setPrivate();
    // The names now live in the entry point; LLVM has no use for them.
    layer->removeAttr(kLayerAttr);
    layer->removeAttr(kVariantAttr);
    for (unsigned i = 0, e = layer.getNumArguments(); i < e; ++i)
      layer.removeArgAttr(i, kNameAttr);
    for (unsigned i = 0, e = layer.getNumResults(); i < e; ++i) {
      layer.removeResultAttr(i, StringAttr::get(ctx, kNameAttr));
      layer.removeResultAttr(i, StringAttr::get(ctx, kRowsPerTokenAttr));
    }
  }

private:
  Type ptrType() { return LLVM::LLVMPointerType::get(ctx); }
  Type i64() { return IntegerType::get(ctx, 64); }
  Type i32() { return IntegerType::get(ctx, 32); }

  /// (tokens, d_model, inputs..., [seed], outputs..., [stream]) of the C
  /// function (weight packing: inputs..., outputs...).
  SmallVector<Type> entryArgTypes(bool withDModel) {
    SmallVector<Type> types;
    if (abi.takesTokens())
      types.push_back(i64());
    if (withDModel && abi.takesTokens())
      types.push_back(i64());
    types.append(abi.inputs.size(), ptrType());
    if (abi.seedArgument)
      types.push_back(i64());
    types.append(abi.outputs.size(), ptrType());
    if (withDModel && abi.cudaStream)
      types.push_back(ptrType());
    return types;
  }

  /// A memref descriptor over `ptr` (dense row-major, dim 0 may be
  /// `tokens * rowsPerToken`), cast to the memref type that bufferization
  /// and the memref-to-LLVM lowering agree on.
  Value wrapBuffer(OpBuilder &b, Value ptr, Value tokens,
                   const ABIBuffer &buffer) {
    RankedTensorType type = buffer.type;
    int64_t rank = type.getRank();
    SmallVector<Type> fields = {ptrType(), ptrType(), i64()};
    if (rank > 0) {
      auto dims = LLVM::LLVMArrayType::get(i64(), rank);
      fields.append({dims, dims});
    }
    auto descType = LLVM::LLVMStructType::getLiteral(ctx, fields);
    auto constant = [&](int64_t v) {
      return LLVM::ConstantOp::create(b, loc, i64(), v).getResult();
    };
    Value desc = LLVM::PoisonOp::create(b, loc, descType);
    desc = LLVM::InsertValueOp::create(b, loc, desc, ptr, ArrayRef<int64_t>{0});
    desc = LLVM::InsertValueOp::create(b, loc, desc, ptr, ArrayRef<int64_t>{1});
    desc = LLVM::InsertValueOp::create(b, loc, desc, constant(0), ArrayRef<int64_t>{2});
    int64_t stride = 1;
    for (int64_t d = rank - 1; d >= 0; --d) {
      Value size;
      if (type.isDynamicDim(d)) {
        size = tokens;
        if (buffer.rowsPerToken != 1)
          size = LLVM::MulOp::create(b, loc, tokens,
                                     constant(buffer.rowsPerToken));
      } else {
        size = constant(type.getDimSize(d));
      }
      desc = LLVM::InsertValueOp::create(b, loc, desc, size,
                                         ArrayRef<int64_t>{3, d});
      desc = LLVM::InsertValueOp::create(b, loc, desc, constant(stride),
                                         ArrayRef<int64_t>{4, d});
      // Only dim 0 is dynamic, so every stride is a constant.
      if (d > 0)
        stride *= type.getDimSize(d);
    }
    auto memrefType =
        MemRefType::get(type.getShape(), type.getElementType());
    return UnrealizedConversionCastOp::create(b, loc, memrefType, desc)
        .getResult(0);
  }

  func::FuncOp buildImpl() {
    OpBuilder b = OpBuilder::atBlockEnd(module.getBody());
    auto fnType = FunctionType::get(ctx, entryArgTypes(/*withDModel=*/false),
                                    {});
    auto impl = func::FuncOp::create(b, loc, abi.entryPointName() + "_impl",
                                     fnType);
    impl.setPrivate();
    symbols.insert(impl);
    Block *body = impl.addEntryBlock();
    b.setInsertionPointToStart(body);

    Value tokens = abi.takesTokens() ? body->getArgument(0) : Value();
    unsigned next = abi.takesTokens() ? 1 : 0;
    SmallVector<Value> callArgs;
    for (const ABIBuffer &input : abi.inputs) {
      Value memref = wrapBuffer(b, body->getArgument(next++), tokens, input);
      callArgs.push_back(bufferization::ToTensorOp::create(
          b, loc, input.type, memref, /*restrict=*/true, /*writable=*/false));
    }
    if (abi.seedArgument)
      callArgs.insert(callArgs.begin() + *abi.seedArgument,
                      body->getArgument(next++));

    // Required outputs are wrapped before the call: once the layer is inlined
    // they dominate its body, so the producers of its results can write into
    // them instead of into buffers copied afterwards (moe-lower-to-loops).
    // Optional outputs are wrapped under their NULL check, where nothing
    // before the call can be made to write through them.
    SmallVector<Value> ptrs, dests;
    for (const ABIBuffer &output : abi.outputs) {
      ptrs.push_back(body->getArgument(next++));
      dests.push_back(output.optional
                          ? Value()
                          : wrapBuffer(b, ptrs.back(), tokens, output));
    }

    auto call = func::CallOp::create(b, loc, layer, callArgs);
    for (auto [i, output] : llvm::enumerate(abi.outputs)) {
      Value dest = dests[i];
      OpBuilder::InsertionGuard guard(b);
      if (output.optional) {
        Value null = LLVM::ZeroOp::create(b, loc, ptrType());
        Value given = LLVM::ICmpOp::create(b, loc, LLVM::ICmpPredicate::ne,
                                           ptrs[i], null);
        auto ifOp = scf::IfOp::create(b, loc, given, /*withElse=*/false);
        b.setInsertionPointToStart(&ifOp.getThenRegion().front());
        dest = wrapBuffer(b, ptrs[i], tokens, output);
      }
      bufferization::MaterializeInDestinationOp::create(
          b, loc, TypeRange{}, call.getResult(i), dest, /*restrict=*/true,
          /*writable=*/true);
    }
    func::ReturnOp::create(b, loc);
    return impl;
  }

  Value stringConstant(OpBuilder &b, StringRef text) {
    OpBuilder mb = OpBuilder::atBlockBegin(module.getBody());
    std::string data = (text + Twine('\0')).str();
    auto type = LLVM::LLVMArrayType::get(IntegerType::get(ctx, 8), data.size());
    auto global = LLVM::GlobalOp::create(
        mb, loc, type, /*isConstant=*/true, LLVM::Linkage::Internal,
        abi.layerName + "_message", mb.getStringAttr(data));
    symbols.insert(global); // renames on collision
    return LLVM::AddressOfOp::create(b, loc, global);
  }

  func::FuncOp getOrDeclareRuntime(StringRef name, FunctionType type) {
    if (auto fn = module.lookupSymbol<func::FuncOp>(name))
      return fn;
    OpBuilder b = OpBuilder::atBlockBegin(module.getBody());
    auto fn = func::FuncOp::create(b, loc, name, type);
    fn.setPrivate();
    return fn;
  }

  func::FuncOp getOrDeclareFail() {
    return getOrDeclareRuntime(
        "moe_rt_fail", FunctionType::get(ctx, {i32(), ptrType()}, {i32()}));
  }

  void buildEntry(func::FuncOp impl) {
    OpBuilder b = OpBuilder::atBlockEnd(module.getBody());
    auto fnType =
        FunctionType::get(ctx, entryArgTypes(/*withDModel=*/true), {i32()});
    auto entry = func::FuncOp::create(b, loc, abi.entryPointName(), fnType);
    symbols.insert(entry);
    // Its scratch memory is allocated, and a failure returned as a status,
    // once bufferization has made the sizes known
    // (moe-allocate-scratch-up-front).
    entry->setAttr(kReturnsStatusAttr, UnitAttr::get(ctx));
    Block *current = entry.addEntryBlock();
    b.setInsertionPointToStart(current);
    func::FuncOp fail = getOrDeclareFail();
    std::string prefix = abi.entryPointName() + ": ";

    // Each check branches to a block that records the failure and returns.
    auto check = [&](Value failed, int32_t code, const Twine &message) {
      Region &region = entry.getBody();
      Block *ok = b.createBlock(&region, region.end());
      Block *bad = b.createBlock(&region, region.end());
      b.setInsertionPointToStart(bad);
      Value codeV = arith::ConstantIntOp::create(b, loc, i32(), code);
      Value msg = stringConstant(b, (prefix + message).str());
      auto status = func::CallOp::create(b, loc, fail, ValueRange{codeV, msg});
      func::ReturnOp::create(b, loc, status.getResults());
      b.setInsertionPointToEnd(current);
      cf::CondBranchOp::create(b, loc, failed, bad, ok);
      current = ok;
      b.setInsertionPointToStart(ok);
    };
    enum { kNullArgument = 1, kBadSize = 2 }; // moe_status in moe_runtime.h

    unsigned next = 0;
    SmallVector<Value> implArgs;
    if (abi.takesTokens()) {
      Value tokens = current->getArgument(0);
      Value dModel = current->getArgument(1);
      Value one = arith::ConstantIntOp::create(b, loc, i64(), 1);
      check(
          arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, tokens, one),
          kBadSize, "tokens must be >= 1");
      // Past this the buffers or the 32-bit counts of the layer cannot be
      // indexed (LayerABI::maxTokens), whatever the caller allocated.
      Value most = arith::ConstantIntOp::create(b, loc, i64(), abi.maxTokens);
      check(arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sgt, tokens,
                                  most),
            kBadSize,
            "tokens must be <= " + Twine(abi.maxTokens) + " for this layer (" +
                abi.maxTokensReason + ")");
      Value width = arith::ConstantIntOp::create(b, loc, i64(), abi.dModel);
      check(arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne, dModel,
                                  width),
            kBadSize,
            "d_model must be " + Twine(abi.dModel) + ", the compiled layer's");
      implArgs.push_back(tokens);
      next = 2;
    }
    auto checkNotNull = [&](Value ptr, const ABIBuffer &buffer) {
      Value null = LLVM::ZeroOp::create(b, loc, ptrType());
      Value isNull =
          LLVM::ICmpOp::create(b, loc, LLVM::ICmpPredicate::eq, ptr, null);
      check(isNull, kNullArgument, "argument '" + buffer.name + "' is NULL");
    };
    for (const ABIBuffer &input : abi.inputs) {
      Value ptr = entry.getArgument(next++);
      checkNotNull(ptr, input);
      implArgs.push_back(ptr);
    }
    if (abi.seedArgument)
      implArgs.push_back(entry.getArgument(next++));
    for (const ABIBuffer &output : abi.outputs) {
      Value ptr = entry.getArgument(next++);
      if (!output.optional)
        checkNotNull(ptr, output);
      implArgs.push_back(ptr);
    }
    if (!abi.cudaStream) {
      func::CallOp::create(b, loc, impl, implArgs);
      Value okCode = arith::ConstantIntOp::create(b, loc, i32(), 0);
      func::ReturnOp::create(b, loc, okCode);
      return;
    }
    // The driver and a context first: without them nothing may run, and the
    // runtime has recorded why.
    Value stream = entry.getArgument(next++);
    func::FuncOp begin = getOrDeclareRuntime(
        "moe_rt_cuda_begin",
        FunctionType::get(ctx, {ptrType(), ptrType()}, {i32()}));
    Value name = stringConstant(b, abi.entryPointName());
    Value status =
        func::CallOp::create(b, loc, begin, ValueRange{stream, name})
            .getResult(0);
    Value zero = arith::ConstantIntOp::create(b, loc, i32(), 0);
    Value failed = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne,
                                         status, zero);
    Region &region = entry.getBody();
    Block *run = b.createBlock(&region, region.end());
    Block *bad = b.createBlock(&region, region.end());
    b.setInsertionPointToStart(bad);
    func::ReturnOp::create(b, loc, status);
    b.setInsertionPointToEnd(current);
    cf::CondBranchOp::create(b, loc, failed, bad, run);
    b.setInsertionPointToStart(run);
    func::CallOp::create(b, loc, impl, implArgs);
    func::FuncOp end = getOrDeclareRuntime(
        "moe_rt_cuda_end", FunctionType::get(ctx, {}, {i32()}));
    func::ReturnOp::create(b, loc, func::CallOp::create(b, loc, end, ValueRange{})
                                       .getResults());
  }

  ModuleOp module;
  func::FuncOp layer;
  const LayerABI &abi;
  SymbolTable symbols;
  Location loc;
  MLIRContext *ctx;
};

struct MoECreateCEntryPointsPass
    : moe::impl::MoECreateCEntryPointsBase<MoECreateCEntryPointsPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (target != "cpu" && target != "cuda") {
      module.emitError() << "target must be cpu or cuda, got '" << target
                         << "'";
      return signalPassFailure();
    }
    SmallVector<func::FuncOp> layers;
    for (auto fn : module.getOps<func::FuncOp>())
      if (fn.isPublic() && !fn.isExternal())
        layers.push_back(fn);
    for (func::FuncOp layer : layers) {
      FailureOr<LayerABI> abi = describeLayerABI(layer);
      if (failed(abi))
        return signalPassFailure();
      abi->cudaStream = target == "cuda";
      EntryPointBuilder(module, layer, *abi).build();
    }
  }
};
} // namespace
