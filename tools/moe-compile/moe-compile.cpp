//===- moe-compile.cpp - compile MoE layer specs and moe-dialect modules --===//
//
// Input: a layer spec (.yaml, .yml, .json) or a moe-dialect module (.mlir).
// Both become a verified module, which is then emitted in the requested form:
// the layer IR, its C header, or (through moe-lower-to-cpu, the same pipeline
// moe-opt registers) LLVM IR, assembly, an object or a shared library.
//
//===----------------------------------------------------------------------===//

#include "moe/ABI/LayerABI.h"
#include "moe/ABI/Passes.h"
#include "moe/Frontend/LayerBuilder.h"
#include "moe/Frontend/LayerSpec.h"
#include "moe/InitAllDialects.h"
#include "moe/InitAllPasses.h"
#include "moe/Pipelines/Pipelines.h"
#include "moe/Pipelines/TileOptions.h"
#include "moe/Target/CPU/CPUBackend.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"

#include "mlir/IR/AsmState.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"

using namespace mlir;
namespace cl = llvm::cl;

namespace {
/// What the driver produces; each value is a stage of the pipeline.
enum class EmitKind {
  mlir,
  header,
  abi,
  llvm,
  assembly,
  object,
  shared,
  ptx,
  cubin
};

enum class Target { cpu, cuda };

enum class InputKind { automatic, spec, mlir };
} // namespace

static cl::OptionCategory compileCategory("moe-compile options");

static cl::opt<std::string>
    inputFilename(cl::Positional,
                  cl::desc("<layer spec (.yaml, .yml, .json) or .mlir, "
                           "- for stdin>"),
                  cl::init("-"), cl::cat(compileCategory));

static cl::opt<std::string> outputFilename("o", cl::desc("Output file"),
                                           cl::value_desc("filename"),
                                           cl::init("-"),
                                           cl::cat(compileCategory));

static cl::opt<EmitKind> emitKind(
    "emit", cl::desc("What to emit"), cl::init(EmitKind::mlir),
    cl::values(
        clEnumValN(EmitKind::mlir, "mlir",
                   "the layer as a moe-dialect MLIR module"),
        clEnumValN(EmitKind::header, "header",
                   "the C header of the layer's entry point"),
        clEnumValN(EmitKind::abi, "abi",
                   "the layer's C ABI as JSON (for language bindings)"),
        clEnumValN(EmitKind::llvm, "llvm", "optimised LLVM IR"),
        clEnumValN(EmitKind::assembly, "asm", "target assembly"),
        clEnumValN(EmitKind::object, "obj", "a relocatable object file"),
        clEnumValN(EmitKind::shared, "shared",
                   "a shared library exporting <layer>_forward"),
        clEnumValN(EmitKind::ptx, "ptx", "the GPU kernels as PTX (cuda)"),
        clEnumValN(EmitKind::cubin, "cubin",
                   "the GPU kernels as a cubin for --gpu-arch (cuda)")),
    cl::cat(compileCategory));

static cl::opt<Target>
    target("target", cl::desc("Target to compile for"), cl::init(Target::cpu),
           cl::values(clEnumValN(Target::cpu, "cpu",
                                 "x86-64 CPU (the host unless --mcpu)"),
                      clEnumValN(Target::cuda, "cuda",
                                 "NVIDIA GPU (--gpu-arch); host code for "
                                 "the host CPU")),
           cl::cat(compileCategory));

static cl::opt<std::string>
    gpuArch("gpu-arch",
            cl::desc("GPU architecture of --target=cuda: sm_90 (default; "
                     "H100/H200), sm_80 (A100), sm_90a, ..."),
            cl::init("sm_90"), cl::cat(compileCategory));

static cl::opt<std::string>
    gpuFeatures("gpu-features",
                cl::desc("PTX features of --target=cuda (default +ptx80)"),
                cl::init("+ptx80"), cl::cat(compileCategory));

static cl::opt<bool> gpuTensorCores(
    "gpu-tensor-cores",
    cl::desc("Run the expert GEMMs of bf16 weights of --target=cuda on "
             "tensor cores (mma.sync, sm_80 and newer; default true); false: "
             "one thread per output, the reference's bits"),
    cl::init(true), cl::cat(compileCategory));

static cl::opt<std::string> gpuMMAPrecision(
    "gpu-mma-precision",
    cl::desc("Activations on tensor cores: f32 (three exact bf16 terms; "
             "default) or bf16 (rounded once, a third of the MMAs)"),
    cl::init("f32"), cl::cat(compileCategory));

static cl::opt<std::string> gpuBinary(
    "gpu-binary",
    cl::desc("Kernel image embedded by --target=cuda: fatbin (SASS for "
             "--gpu-arch and PTX for newer GPUs; default), bin (SASS only) "
             "or isa (PTX only, compiled by the driver)"),
    cl::init("fatbin"), cl::cat(compileCategory));

static cl::opt<std::string>
    cudaPath("cuda-path",
             cl::desc("CUDA toolkit with ptxas and fatbinary (default: "
                      "$CUDA_HOME, /usr/local/cuda, or PATH)"),
             cl::init(""), cl::cat(compileCategory));

namespace {
enum class PipelineKind { fast, reference };
} // namespace

static cl::opt<PipelineKind> pipelineKind(
    "pipeline", cl::desc("Kernels to generate"), cl::init(PipelineKind::fast),
    cl::values(clEnumValN(PipelineKind::fast, "fast",
                          "tiled, vectorised, multithreaded kernels"),
               clEnumValN(PipelineKind::reference, "reference",
                          "the reference lowering (scalar, one thread)")),
    cl::cat(compileCategory));

static cl::opt<std::string> tileOptions(
    "tiles",
    cl::desc("Tile sizes of the fast kernels, as moe-lower-to-cpu options "
             "(e.g. \"row-block=32 col-block=128\")"),
    cl::init(""), cl::cat(compileCategory));

static cl::opt<bool> packedWeights(
    "packed-weights",
    cl::desc("Also export <layer>_pack_weights and <layer>_forward_packed, "
             "which runs on expert weights packed once into the kernels' "
             "panel layout (fast pipeline; default on)"),
    cl::init(true), cl::cat(compileCategory));

static cl::opt<std::string> targetCPU(
    "mcpu", cl::desc("CPU to generate code for (default: the host CPU)"),
    cl::init("native"), cl::cat(compileCategory));

static cl::opt<std::string>
    targetFeatures("mattr",
                   cl::desc("Target features to add or remove, e.g. "
                            "+avx2,-avx512f (default: the CPU's)"),
                   cl::init(""), cl::cat(compileCategory));

static cl::opt<unsigned>
    optLevel("O", cl::desc("LLVM optimisation level (0-3, default 3)"),
             cl::Prefix, cl::init(3), cl::cat(compileCategory));

static cl::opt<std::string> linker(
    "linker",
    cl::desc("C compiler driver that links --emit=shared (default: the one "
             "that built moe-compile)"),
    cl::init(MOE_DEFAULT_LINKER), cl::cat(compileCategory));

static cl::opt<std::string> runtimeArchive(
    "runtime-lib",
    cl::desc("Static runtime archive linked into --emit=shared (default: "
             "libmoe_runtime.a in ../lib beside moe-compile)"),
    cl::init(""), cl::cat(compileCategory));

static cl::opt<InputKind> inputKind(
    "input-kind",
    cl::desc("How to read the input (default: by extension; stdin is a spec)"),
    cl::init(InputKind::automatic),
    cl::values(
        clEnumValN(InputKind::automatic, "auto", "decide by file extension"),
        clEnumValN(InputKind::spec, "spec", "a YAML or JSON layer spec"),
        clEnumValN(InputKind::mlir, "mlir", "a moe-dialect MLIR module")),
    cl::cat(compileCategory));

static FailureOr<InputKind> resolveInputKind() {
  if (inputKind != InputKind::automatic)
    return inputKind.getValue();
  if (inputFilename == "-")
    return InputKind::spec;
  std::string extension = llvm::sys::path::extension(inputFilename).lower();
  std::optional<InputKind> kind =
      llvm::StringSwitch<std::optional<InputKind>>(extension)
          .Cases({".yaml", ".yml", ".json"}, InputKind::spec)
          .Case(".mlir", InputKind::mlir)
          .Default(std::nullopt);
  if (kind)
    return *kind;
  llvm::errs() << "moe-compile: cannot tell the kind of input '"
               << inputFilename << "' from its extension (expected .yaml, "
               << ".yml, .json or .mlir); use --input-kind=spec|mlir\n";
  return failure();
}

/// Reads the main buffer of `sourceMgr` as a spec or a module and verifies
/// the module; a spec's tile options go to `specTiles`.
static OwningOpRef<ModuleOp>
loadModule(MLIRContext &context, llvm::SourceMgr &sourceMgr, InputKind kind,
           SmallVectorImpl<moe::TileOptionSpec> &specTiles) {
  OwningOpRef<ModuleOp> module;
  if (kind == InputKind::mlir) {
    // The parser verifies what it parsed.
    return parseSourceFile<ModuleOp>(sourceMgr, ParserConfig(&context));
  }
  const moe::TileOptionTable &tileOptions = moe::getSpecTileOptions();
  FailureOr<moe::LayerSpec> spec =
      moe::parseLayerSpec(sourceMgr, /*bufferId=*/0, &tileOptions);
  if (failed(spec))
    return nullptr;
  specTiles.assign(spec->tiles.begin(), spec->tiles.end());
  module = moe::buildLayerModule(context, *spec);
  if (failed(verify(*module))) {
    llvm::errs() << "moe-compile: internal error: the module built from the "
                    "layer spec does not verify\n";
    return nullptr;
  }
  return module;
}

/// The ABI of every public layer function of `module`.
static FailureOr<SmallVector<moe::LayerABI>> describeLayers(ModuleOp module) {
  SmallVector<moe::LayerABI> layers;
  for (auto fn : module.getOps<func::FuncOp>()) {
    if (!fn.isPublic() || fn.isExternal())
      continue;
    FailureOr<moe::LayerABI> abi = moe::describeLayerABI(fn);
    if (failed(abi))
      return failure();
    layers.push_back(std::move(*abi));
  }
  if (layers.empty()) {
    module.emitError("no public layer function to export");
    return failure();
  }
  return layers;
}

/// The options of moe-lower-to-cpu: the layer spec's tiles, then --tiles on
/// top (the command line wins per option), with the vector width of
/// `machine` where neither sets one.
/// Null (after an error message) for bad options.
static std::unique_ptr<moe::CPUPipelineOptions>
resolvePipelineOptions(llvm::TargetMachine &machine,
                       ArrayRef<moe::TileOptionSpec> specTiles) {
  auto parsed = std::make_unique<moe::CPUPipelineOptions>();
  moe::CPUPipelineOptions &options = *parsed;
  for (const moe::TileOptionSpec &tile : specTiles) {
    // The spec parser has checked each of them.
    std::string problem =
        moe::setCPUPipelineOption(options, tile.name, tile.value);
    if (!problem.empty()) {
      llvm::errs() << "moe-compile: internal error: tile option " << tile.name
                   << " of the layer spec: " << problem << "\n";
      return nullptr;
    }
  }
  if (failed(options.parseFromString(tileOptions))) {
    llvm::errs() << "moe-compile: bad --tiles '" << tileOptions << "'\n";
    return nullptr;
  }
  std::string problem = moe::checkCPUPipelineOptions(options);
  if (!problem.empty()) {
    if (tileOptions.empty())
      llvm::errs() << "moe-compile: bad tiles in the layer spec: " << problem
                   << "\n";
    else
      llvm::errs() << "moe-compile: bad --tiles '" << tileOptions
                   << "': " << problem << "\n";
    return nullptr;
  }
  options.reference = pipelineKind == PipelineKind::reference;
  // The fast kernels' vector shape follows the target, not the host.
  const llvm::MCSubtargetInfo *subtarget = machine.getMCSubtargetInfo();
  bool avx512 = subtarget && subtarget->checkFeatures("+avx512f");
  if (options.vectorWidth == 0)
    options.vectorWidth = avx512 ? 16 : 8;
  // Exported kernels take their scratch memory from the runtime they embed.
  options.runtimeAllocator = true;
  return parsed;
}

/// The functions exported beside each layer: its routing alone, and with the
/// fast pipeline's panel kernels and --packed-weights, its packing function
/// and packed forward (which gives the bits of the panel kernels: row-dot
/// tiles would differ).
static void addLayerVariants(OpPassManager &pm,
                             const moe::CPUPipelineOptions &options) {
  pm.addPass(moe::createMoEAddRouteVariant());
  if (options.reference || !packedWeights ||
      options.expertKernel.getValue() == "row-dot")
    return;
  moe::MoEPackExpertWeightsOptions packing;
  packing.vectorWidth = options.vectorWidth;
  packing.panelColVectors = options.panelColVectors;
  pm.addPass(moe::createMoEPackExpertWeights(packing));
}

static FailureOr<std::unique_ptr<llvm::TargetMachine>> createTargetMachine() {
  moe::CPUTargetOptions targetOptions;
  targetOptions.cpu = targetCPU;
  targetOptions.features = targetFeatures;
  targetOptions.optLevel = optLevel;
  auto machine = moe::createCPUTargetMachine(targetOptions);
  if (!machine) {
    llvm::errs() << "moe-compile: " << llvm::toString(machine.takeError())
                 << "\n";
    return failure();
  }
  return std::move(*machine);
}

static LogicalResult emitHeader(ModuleOp module,
                                ArrayRef<moe::TileOptionSpec> specTiles,
                                llvm::raw_ostream &os) {
  FailureOr<std::unique_ptr<llvm::TargetMachine>> machine =
      createTargetMachine();
  if (failed(machine))
    return failure();
  std::unique_ptr<moe::CPUPipelineOptions> options =
      resolvePipelineOptions(**machine, specTiles);
  if (!options)
    return failure();
  PassManager pm(module.getContext());
  if (target == Target::cuda)
    pm.addPass(moe::createMoEAddRouteVariant());
  else
    addLayerVariants(pm, *options);
  if (failed(pm.run(module)))
    return failure();
  FailureOr<SmallVector<moe::LayerABI>> layers = describeLayers(module);
  if (failed(layers))
    return failure();
  for (moe::LayerABI &layer : *layers)
    layer.cudaStream = target == Target::cuda;
  if (emitKind == EmitKind::abi) {
    os << moe::emitABIDescription(*layers);
    return success();
  }
  StringRef stem = outputFilename == "-"
                       ? StringRef(layers->front().layerName)
                       : llvm::sys::path::stem(outputFilename);
  os << moe::emitCHeader(*layers, stem);
  return success();
}

/// The options of moe-lower-to-nvvm from the command line; null after an
/// error message.
static std::unique_ptr<moe::NVVMPipelineOptions> resolveNVVMOptions() {
  auto options = std::make_unique<moe::NVVMPipelineOptions>();
  options->chip = gpuArch;
  options->features = gpuFeatures;
  options->format = gpuBinary;
  options->cudaPath = cudaPath;
  options->optLevel = optLevel;
  options->tensorCores = gpuTensorCores;
  options->mmaPrecision = gpuMMAPrecision;
  std::string problem = moe::checkNVVMPipelineOptions(*options);
  if (!problem.empty()) {
    llvm::errs() << "moe-compile: " << problem << "\n";
    return nullptr;
  }
  if (!tileOptions.empty() || pipelineKind != PipelineKind::fast) {
    llvm::errs() << "moe-compile: --tiles and --pipeline are options of "
                    "--target=cpu\n";
    return nullptr;
  }
  return options;
}

/// The CUDA target's passes up to the kernels (all of them with `binary`:
/// up to the gpu.binary of the kernels, the PTX or cubin).
static LogicalResult lowerForCUDA(ModuleOp module, bool toHostLLVM) {
  std::unique_ptr<moe::NVVMPipelineOptions> options = resolveNVVMOptions();
  if (!options)
    return failure();
  if (emitKind == EmitKind::ptx)
    options->format = "isa";
  else if (emitKind == EmitKind::cubin)
    options->format = "bin";
  PassManager pm(module.getContext());
  if (failed(applyPassManagerCLOptions(pm)))
    return failure();
  applyDefaultTimingPassManagerCLOptions(pm);
  pm.addPass(moe::createMoEAddRouteVariant());
  moe::MoECreateCEntryPointsOptions entryPoints;
  entryPoints.target = "cuda";
  pm.addPass(moe::createMoECreateCEntryPoints(entryPoints));
  if (toHostLLVM) {
    moe::buildMoELowerToNVVMPipeline(pm, *options);
  } else {
    moe::buildMoELowerToGPUPipeline(pm, *options);
    moe::buildKernelsToBinaryPipeline(pm, *options);
  }
  if (failed(pm.run(module)))
    return failure();
  if (toHostLLVM)
    moe::internalizeAllButEntryPoints(module);
  return success();
}

/// --emit=ptx|cubin: the image of the layer's kernels.
static LogicalResult emitKernelImage(ModuleOp module) {
  if (target != Target::cuda) {
    llvm::errs() << "moe-compile: --emit=ptx and --emit=cubin need "
                    "--target=cuda\n";
    return failure();
  }
  if (failed(lowerForCUDA(module, /*toHostLLVM=*/false)))
    return failure();
  std::string errorMessage;
  auto output = openOutputFile(outputFilename, &errorMessage);
  if (!output) {
    llvm::errs() << "moe-compile: " << errorMessage << "\n";
    return failure();
  }
  for (auto binary : module.getOps<gpu::BinaryOp>())
    for (Attribute object : binary.getObjects())
      output->os() << cast<gpu::ObjectAttr>(object).getObject().getValue();
  output->keep();
  return success();
}

/// The moe module -> the LLVM dialect, with C entry points.
static LogicalResult
lowerToLLVMDialect(ModuleOp module, llvm::TargetMachine &machine,
                   ArrayRef<moe::TileOptionSpec> specTiles) {
  PassManager pm(module.getContext());
  if (failed(applyPassManagerCLOptions(pm)))
    return failure();
  applyDefaultTimingPassManagerCLOptions(pm);
  std::unique_ptr<moe::CPUPipelineOptions> options =
      resolvePipelineOptions(machine, specTiles);
  if (!options)
    return failure();
  addLayerVariants(pm, *options);
  pm.addPass(moe::createMoECreateCEntryPoints());
  moe::buildMoELowerToCPUPipeline(pm, *options);
  if (failed(pm.run(module)))
    return failure();
  moe::internalizeAllButEntryPoints(module);
  return success();
}

static std::string defaultRuntimeArchive(const char *argv0) {
  std::string exe = llvm::sys::fs::getMainExecutable(
      argv0, reinterpret_cast<void *>(&defaultRuntimeArchive));
  SmallString<256> path(llvm::sys::path::parent_path(
      llvm::sys::path::parent_path(exe)));
  llvm::sys::path::append(path, "lib", "libmoe_runtime.a");
  return std::string(path);
}

static LogicalResult reportError(llvm::Error error) {
  llvm::errs() << "moe-compile: " << llvm::toString(std::move(error)) << "\n";
  return failure();
}

static LogicalResult emitMachineOutput(ModuleOp module,
                                       ArrayRef<moe::TileOptionSpec> specTiles,
                                       const char *argv0) {
  FailureOr<std::unique_ptr<llvm::TargetMachine>> machine =
      createTargetMachine();
  if (failed(machine))
    return failure();
  if (target == Target::cuda
          ? failed(lowerForCUDA(module, /*toHostLLVM=*/true))
          : failed(lowerToLLVMDialect(module, **machine, specTiles)))
    return failure();
  llvm::LLVMContext llvmContext;
  auto llvmModule = moe::translateAndOptimize(module, llvmContext, **machine,
                                              optLevel);
  if (!llvmModule)
    return reportError(llvmModule.takeError());

  std::string errorMessage;
  std::string objectPath = outputFilename;
  SmallString<128> tempObject;
  if (emitKind == EmitKind::shared) {
    if (outputFilename == "-") {
      llvm::errs() << "moe-compile: --emit=shared needs -o <file>\n";
      return failure();
    }
    if (std::error_code ec = llvm::sys::fs::createTemporaryFile(
            "moe-compile", "o", tempObject))
      return reportError(llvm::errorCodeToError(ec));
    objectPath = std::string(tempObject);
  }
  auto output = openOutputFile(objectPath, &errorMessage);
  if (!output) {
    llvm::errs() << "moe-compile: " << errorMessage << "\n";
    return failure();
  }
  if (emitKind == EmitKind::llvm) {
    (*llvmModule)->print(output->os(), nullptr);
  } else {
    auto fileType = emitKind == EmitKind::assembly
                        ? llvm::CodeGenFileType::AssemblyFile
                        : llvm::CodeGenFileType::ObjectFile;
    if (llvm::Error err = moe::emitMachineCode(**llvmModule, **machine,
                                               fileType, output->os()))
      return reportError(std::move(err));
  }
  output->keep();
  if (emitKind != EmitKind::shared)
    return success();

  output->os().close();
  std::string runtime = runtimeArchive.empty() ? defaultRuntimeArchive(argv0)
                                               : runtimeArchive.getValue();
  llvm::Error linked =
      moe::linkSharedLibrary(linker, objectPath, runtime, outputFilename);
  llvm::sys::fs::remove(objectPath);
  if (linked)
    return reportError(std::move(linked));
  return success();
}

int main(int argc, char **argv) {
  llvm::InitLLVM initLLVM(argc, argv);
  // --mlir-print-ir-after=<pass> and friends name passes by their argument:
  // the passes must be registered before those options are.
  registerAllPasses();
  moe::registerAllPasses();
  registerAsmPrinterCLOptions();
  registerMLIRContextCLOptions();
  registerPassManagerCLOptions();
  registerDefaultTimingManagerCLOptions();
  // libLLVM registers every backend's options; --help-hidden still lists them.
  cl::HideUnrelatedOptions(compileCategory);
  cl::ParseCommandLineOptions(argc, argv, "MoE-MLIR layer compiler\n");

  FailureOr<InputKind> kind = resolveInputKind();
  if (failed(kind))
    return 1;

  std::string errorMessage;
  std::unique_ptr<llvm::MemoryBuffer> input =
      openInputFile(inputFilename, &errorMessage);
  if (!input) {
    llvm::errs() << "moe-compile: " << errorMessage << "\n";
    return 1;
  }
  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(std::move(input), llvm::SMLoc());

  DialectRegistry registry;
  moe::registerLayerBuilderDialects(registry);
  // The lowering pipeline needs every dialect it passes through, their
  // bufferization and to-LLVM interfaces, and the LLVM IR translations.
  registerAllDialects(registry);
  registerAllExtensions(registry);
  moe::registerAllDialects(registry);
  registerAllToLLVMIRTranslations(registry);
  MLIRContext context(registry);
  SourceMgrDiagnosticHandler diagnosticHandler(sourceMgr, &context);

  SmallVector<moe::TileOptionSpec> specTiles;
  OwningOpRef<ModuleOp> module =
      loadModule(context, sourceMgr, *kind, specTiles);
  if (!module)
    return 1;

  if (emitKind == EmitKind::ptx || emitKind == EmitKind::cubin)
    return failed(emitKernelImage(*module)) ? 1 : 0;
  if (emitKind == EmitKind::object || emitKind == EmitKind::shared ||
      emitKind == EmitKind::assembly || emitKind == EmitKind::llvm)
    return failed(emitMachineOutput(*module, specTiles, argv[0])) ? 1 : 0;

  std::unique_ptr<llvm::ToolOutputFile> output =
      openOutputFile(outputFilename, &errorMessage);
  if (!output) {
    llvm::errs() << "moe-compile: " << errorMessage << "\n";
    return 1;
  }
  if (emitKind == EmitKind::header || emitKind == EmitKind::abi) {
    if (failed(emitHeader(*module, specTiles, output->os())))
      return 1;
  } else {
    module->print(output->os());
    output->os() << "\n";
  }
  output->keep();
  return 0;
}
