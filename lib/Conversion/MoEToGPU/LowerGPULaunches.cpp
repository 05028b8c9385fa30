//===- LowerGPULaunches.cpp - kernel launches to runtime calls ------------===//
//
// The host side of the CUDA target without upstream's mgpu* wrappers: every
// gpu.binary becomes a constant global holding its image, and every
// gpu.launch_func a call of the runtime's moe_rt_cuda_launch, which loads
// the image once and launches on the stream of the running entry point.
//
//===----------------------------------------------------------------------===//

#include "moe/Conversion/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMTypes.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/SymbolTable.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOELOWERGPULAUNCHES
#include "moe/Conversion/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

constexpr llvm::StringLiteral kLaunchFunction = "moe_rt_cuda_launch";

class LaunchLowering {
public:
  explicit LaunchLowering(ModuleOp module)
      : module(module), ctx(module.getContext()), symbols(module) {}

  LogicalResult run() {
    SmallVector<gpu::BinaryOp> binaries(module.getOps<gpu::BinaryOp>());
    for (gpu::BinaryOp binary : binaries)
      if (failed(lowerBinary(binary)))
        return failure();
    SmallVector<gpu::LaunchFuncOp> launches;
    module.walk([&](gpu::LaunchFuncOp launch) { launches.push_back(launch); });
    for (gpu::LaunchFuncOp launch : launches)
      if (failed(lowerLaunch(launch)))
        return failure();
    for (gpu::BinaryOp binary : binaries)
      binary.erase();
    return success();
  }

private:
  Type ptrType() { return LLVM::LLVMPointerType::get(ctx); }
  Type i64() { return IntegerType::get(ctx, 64); }
  Type i32() { return IntegerType::get(ctx, 32); }

  LLVM::GlobalOp constantBytes(Location loc, StringRef name, StringRef data,
                               uint64_t alignment) {
    OpBuilder b = OpBuilder::atBlockBegin(module.getBody());
    auto type = LLVM::LLVMArrayType::get(IntegerType::get(ctx, 8), data.size());
    auto global = LLVM::GlobalOp::create(
        b, loc, type, /*isConstant=*/true, LLVM::Linkage::Internal, name,
        b.getStringAttr(data), alignment);
    symbols.insert(global); // renames on collision
    return global;
  }

  /// One image per gpu.binary: the object of its (single) target.
  LogicalResult lowerBinary(gpu::BinaryOp binary) {
    ArrayRef<Attribute> objects = binary.getObjects().getValue();
    if (objects.size() != 1)
      return binary.emitOpError("needs exactly one object (one target), has ")
             << objects.size();
    auto object = cast<gpu::ObjectAttr>(objects.front());
    // cubin and fatbin images are read in place: align as the loader wants.
    images[binary.getName()] =
        constantBytes(binary.getLoc(), (binary.getName() + "_image").str(),
                      object.getObject().getValue(), /*alignment=*/64);
    return success();
  }

  func::FuncOp launchFunction(Location loc) {
    if (auto fn = module.lookupSymbol<func::FuncOp>(kLaunchFunction))
      return fn;
    OpBuilder b = OpBuilder::atBlockBegin(module.getBody());
    Type p = ptrType(), l = i64();
    auto type = FunctionType::get(ctx, {p, p, l, l, l, l, l, l, i32(), p}, {});
    auto fn = func::FuncOp::create(b, loc, kLaunchFunction, type);
    fn.setPrivate();
    return fn;
  }

  /// The kernel's parameters as the NVVM lowering expands them: a memref is
  /// (allocated, aligned, offset, sizes..., strides...), an index an i64.
  LogicalResult expandOperand(OpBuilder &b, Location loc, Value operand,
                              SmallVectorImpl<Value> &params) {
    Type type = operand.getType();
    auto toI64 = [&](Value index) {
      return arith::IndexCastOp::create(b, loc, i64(), index).getResult();
    };
    if (auto memref = dyn_cast<MemRefType>(type)) {
      Value address =
          memref::ExtractAlignedPointerAsIndexOp::create(b, loc, operand);
      Value pointer = LLVM::IntToPtrOp::create(b, loc, ptrType(),
                                               toI64(address));
      auto metadata =
          memref::ExtractStridedMetadataOp::create(b, loc, operand);
      // The kernel only reads the aligned pointer; the allocated one is
      // passed for the calling convention.
      params.append({pointer, pointer, toI64(metadata.getOffset())});
      for (Value size : metadata.getSizes())
        params.push_back(toI64(size));
      for (Value stride : metadata.getStrides())
        params.push_back(toI64(stride));
      return success();
    }
    if (type.isIndex()) {
      params.push_back(toI64(operand));
      return success();
    }
    // Scalars, and memref descriptors the entry point built in LLVM types
    // (passed by value as the kernel's aggregate parameter).
    if (LLVM::isCompatibleType(type)) {
      params.push_back(operand);
      return success();
    }
    return emitError(loc) << "cannot pass a kernel argument of type " << type
                          << " to a CUDA launch";
  }

  LogicalResult lowerLaunch(gpu::LaunchFuncOp launch) {
    Location loc = launch.getLoc();
    auto image = images.find(launch.getKernelModuleName().getValue());
    if (image == images.end())
      return launch.emitOpError("launches a kernel of a module that was not "
                                "compiled to a gpu.binary");
    if (!launch.getAsyncDependencies().empty() || launch.getAsyncToken())
      return launch.emitOpError("async launches are not supported");
    if (launch.hasClusterSize())
      return launch.emitOpError("thread block clusters are not supported");

    OpBuilder b(launch);
    SmallVector<Value> params;
    for (Value operand : launch.getKernelOperands())
      if (failed(expandOperand(b, loc, operand, params)))
        return failure();

    // One stack slot per parameter, in the entry block so that a launch in
    // a loop reuses them: the driver copies the values at launch.
    auto fn = launch->getParentOfType<FunctionOpInterface>();
    OpBuilder entry = OpBuilder::atBlockBegin(&fn.getFunctionBody().front());
    Value count = LLVM::ConstantOp::create(entry, loc, i64(), 1);
    auto arrayType = LLVM::LLVMArrayType::get(ptrType(), params.size());
    Value array = LLVM::AllocaOp::create(entry, loc, ptrType(), arrayType,
                                         count, /*alignment=*/8);
    for (auto [i, param] : llvm::enumerate(params)) {
      Value slot = LLVM::AllocaOp::create(entry, loc, ptrType(),
                                          param.getType(), count,
                                          /*alignment=*/8);
      LLVM::StoreOp::create(b, loc, param, slot);
      Value element = LLVM::GEPOp::create(
          b, loc, ptrType(), arrayType, array,
          ArrayRef<LLVM::GEPArg>{0, static_cast<int32_t>(i)});
      LLVM::StoreOp::create(b, loc, slot, element);
    }

    Value imageAddress = LLVM::AddressOfOp::create(b, loc, image->second);
    auto &name = kernelNames[launch.getKernelName().getValue()];
    if (!name) {
      std::string text = (launch.getKernelName().getValue() + Twine('\0')).str();
      name = constantBytes(loc, (launch.getKernelName().getValue() + "_name").str(),
                           text, /*alignment=*/1);
    }
    Value nameAddress = LLVM::AddressOfOp::create(b, loc, name);
    auto dim = [&](Value index) {
      return arith::IndexCastOp::create(b, loc, i64(), index).getResult();
    };
    gpu::KernelDim3 grid = launch.getGridSizeOperandValues();
    gpu::KernelDim3 block = launch.getBlockSizeOperandValues();
    Value shared = launch.getDynamicSharedMemorySize();
    if (!shared)
      shared = arith::ConstantIntOp::create(b, loc, i32(), 0);
    func::CallOp::create(b, loc, launchFunction(loc),
                         ValueRange{imageAddress, nameAddress, dim(grid.x),
                                    dim(grid.y), dim(grid.z), dim(block.x),
                                    dim(block.y), dim(block.z), shared, array});
    launch.erase();
    return success();
  }

  ModuleOp module;
  MLIRContext *ctx;
  SymbolTable symbols;
  llvm::StringMap<LLVM::GlobalOp> images;
  llvm::StringMap<LLVM::GlobalOp> kernelNames;
};

struct MoELowerGPULaunchesPass
    : moe::impl::MoELowerGPULaunchesBase<MoELowerGPULaunchesPass> {
  void runOnOperation() override {
    if (failed(LaunchLowering(getOperation()).run()))
      signalPassFailure();
  }
};

} // namespace
