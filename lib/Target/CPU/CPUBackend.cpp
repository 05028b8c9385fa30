//===- CPUBackend.cpp - LLVM-dialect modules to CPU code ------------------===//

#include "moe/Target/CPU/CPUBackend.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/PassManager.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/Transforms/Instrumentation/AddressSanitizer.h"

using namespace mlir;
using namespace mlir::moe;

/// The sanitizers this compiler was built with (CMake's MOE_SANITIZE, e.g.
/// "address,undefined"); empty for a plain build.
#ifdef MOE_SANITIZE
static constexpr llvm::StringLiteral kSanitizers = MOE_SANITIZE;
/// Where the shared sanitizer runtime lives (clang's resource directory).
static constexpr llvm::StringLiteral kSanitizerRuntimeDir =
    MOE_SANITIZER_RUNTIME_DIR;
#else
static constexpr llvm::StringLiteral kSanitizers = "";
static constexpr llvm::StringLiteral kSanitizerRuntimeDir = "";
#endif

static bool builtWithSanitizer(StringRef name) {
  SmallVector<StringRef> names;
  kSanitizers.split(names, ',', /*MaxSplit=*/-1, /*KeepEmpty=*/false);
  return llvm::is_contained(names, name);
}

static llvm::Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

llvm::Expected<std::unique_ptr<llvm::TargetMachine>>
mlir::moe::createCPUTargetMachine(const CPUTargetOptions &options) {
  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  llvm::InitializeNativeTargetAsmParser();

  llvm::Triple triple(options.triple.empty() ? llvm::sys::getProcessTriple()
                                             : options.triple);
  std::string error;
  const llvm::Target *target =
      llvm::TargetRegistry::lookupTarget(triple, error);
  if (!target)
    return makeError("no target for triple '" + triple.str() + "': " + error);

  bool host = options.cpu.empty() || options.cpu == "native";
  std::string cpu = host ? llvm::sys::getHostCPUName().str() : options.cpu;
  // LLVM only warns about an unknown CPU and then may abort in codegen.
  std::unique_ptr<llvm::MCSubtargetInfo> subtarget(
      target->createMCSubtargetInfo(triple, cpu, ""));
  if (!subtarget || !subtarget->isCPUStringValid(cpu))
    return makeError("unknown CPU '" + cpu + "' for " + triple.str() +
                     " (llc -mtriple=" + triple.str() +
                     " -mcpu=help lists them)");
  SmallVector<std::string> features;
  if (host)
    for (const auto &[name, enabled] : llvm::sys::getHostCPUFeatures())
      features.push_back((enabled ? "+" : "-") + name.str());
  if (!options.features.empty())
    features.push_back(options.features);

  llvm::TargetOptions targetOptions;
  auto level = llvm::CodeGenOpt::getLevel(options.optLevel);
  if (!level)
    return makeError("optimisation level " + Twine(options.optLevel) +
                     " is not in 0..3");
  std::unique_ptr<llvm::TargetMachine> machine(target->createTargetMachine(
      triple, cpu, llvm::join(features, ","), targetOptions,
      llvm::Reloc::PIC_, std::nullopt, *level));
  if (!machine)
    return makeError("cannot create a target machine for cpu '" + cpu + "'");
  return machine;
}

void mlir::moe::internalizeAllButEntryPoints(ModuleOp module) {
  auto internal = LLVM::LinkageAttr::get(module.getContext(),
                                         LLVM::Linkage::Internal);
  module.walk([&](LLVM::LLVMFuncOp fn) {
    StringRef name = fn.getName();
    if (fn.isExternal() || name.ends_with("_forward") ||
        name.ends_with("_forward_packed") || name.ends_with("_pack_weights") ||
        name.ends_with("_route"))
      return;
    fn.setLinkageAttr(internal);
    fn.setVisibility_(LLVM::Visibility::Default);
  });
}

llvm::Expected<std::unique_ptr<llvm::Module>>
mlir::moe::translateAndOptimize(ModuleOp module, llvm::LLVMContext &context,
                                llvm::TargetMachine &machine,
                                unsigned optLevel) {
  std::unique_ptr<llvm::Module> llvmModule =
      translateModuleToLLVMIR(module, context);
  if (!llvmModule)
    return makeError("translation to LLVM IR failed");
  llvmModule->setTargetTriple(machine.getTargetTriple());
  llvmModule->setDataLayout(machine.createDataLayout());
  auto optimize = makeOptimizingTransformer(optLevel, /*sizeLevel=*/0,
                                            &machine);
  if (llvm::Error err = optimize(llvmModule.get()))
    return std::move(err);
  // A sanitized compiler generates sanitized kernels, so the test suite of
  // that build checks every buffer access of the generated code as well.
  if (builtWithSanitizer("address"))
    instrumentWithAddressSanitizer(*llvmModule, machine);
  return llvmModule;
}

void mlir::moe::instrumentWithAddressSanitizer(llvm::Module &module,
                                               llvm::TargetMachine &machine) {
  // As clang: the attribute selects the functions to instrument, and the
  // pass runs after the optimisation pipeline, on the code that will run.
  for (llvm::Function &fn : module)
    if (!fn.isDeclaration())
      fn.addFnAttr(llvm::Attribute::SanitizeAddress);
  llvm::LoopAnalysisManager loopAnalyses;
  llvm::FunctionAnalysisManager functionAnalyses;
  llvm::CGSCCAnalysisManager cgsccAnalyses;
  llvm::ModuleAnalysisManager moduleAnalyses;
  llvm::PassBuilder builder(&machine);
  builder.registerModuleAnalyses(moduleAnalyses);
  builder.registerCGSCCAnalyses(cgsccAnalyses);
  builder.registerFunctionAnalyses(functionAnalyses);
  builder.registerLoopAnalyses(loopAnalyses);
  builder.crossRegisterProxies(loopAnalyses, functionAnalyses, cgsccAnalyses,
                               moduleAnalyses);
  llvm::ModulePassManager passes;
  passes.addPass(llvm::AddressSanitizerPass(llvm::AddressSanitizerOptions()));
  passes.run(module, moduleAnalyses);
}

llvm::Error mlir::moe::emitMachineCode(llvm::Module &module,
                                       llvm::TargetMachine &machine,
                                       llvm::CodeGenFileType type,
                                       llvm::raw_pwrite_stream &os) {
  llvm::legacy::PassManager codegen;
  if (machine.addPassesToEmitFile(codegen, os, nullptr, type))
    return makeError("the target cannot emit this file type");
  codegen.run(module);
  return llvm::Error::success();
}

llvm::Error mlir::moe::linkSharedLibrary(llvm::StringRef linker,
                                         llvm::StringRef objectPath,
                                         llvm::StringRef runtimeArchive,
                                         llvm::StringRef outputPath) {
  llvm::ErrorOr<std::string> program = llvm::sys::findProgramByName(linker);
  if (!program)
    return makeError("linker driver '" + linker + "' not found on PATH");
  SmallVector<StringRef> args = {*program, "-shared", "-o", outputPath,
                                 objectPath};
  if (!runtimeArchive.empty()) {
    // The library exports the thread controls of its runtime copy even when
    // its kernel has no parallel loop: callers set every layer's the same way.
    args.append({"-Wl,--undefined=moe_set_num_threads",
                 "-Wl,--undefined=moe_get_num_threads"});
    // And the device memory helpers, for callers of a CUDA layer without a
    // framework of their own (Python with NumPy inputs), and the controls of
    // its scratch pools (in one object file with the pools).
    args.append({"-Wl,--undefined=moe_cuda_device_count",
                 "-Wl,--undefined=moe_cuda_malloc",
                 "-Wl,--undefined=moe_cuda_trim_scratch"});
    args.push_back(runtimeArchive);
  }
  // A sanitized kernel and runtime call the sanitizer runtime: the shared
  // one, as every program of a sanitized build links (Python preloads it).
  std::string sanitize = ("-fsanitize=" + kSanitizers).str();
  std::string rpath = ("-Wl,-rpath," + kSanitizerRuntimeDir).str();
  if (!kSanitizers.empty())
    args.append({sanitize, "-shared-libsan", rpath});
  // The runtime's thread pool needs pthreads and its CUDA calls dlopen (both
  // part of libc since glibc 2.34).
  args.append({"-lpthread", "-lm", "-ldl", "-Wl,--no-undefined"});
  std::string error;
  int status = llvm::sys::ExecuteAndWait(*program, args, std::nullopt, {}, 0,
                                         0, &error);
  if (status != 0)
    return makeError("linking " + outputPath + " failed" +
                     (error.empty() ? "" : ": " + error));
  return llvm::Error::success();
}
