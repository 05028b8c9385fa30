//===- TileOptions.cpp - the CPU pipeline's tile options by name ----------===//

#include "moe/Pipelines/TileOptions.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
using namespace mlir::moe;

namespace {
/// CPUPipelineOptions with its option table in view: PassOptions keeps the
/// llvm::cl::SubCommand that holds it as a protected base.
struct CPUPipelineOptionTable : CPUPipelineOptions {
  SmallVector<StringRef> getNames() const {
    SmallVector<StringRef> names;
    for (const auto &entry : OptionsMap)
      names.push_back(entry.first);
    llvm::sort(names);
    return names;
  }
};
} // namespace

/// Whether the option `name` holds an integer, judged by its default as
/// PassOptions::print spells it (`{... name=0 ...}`): llvm::cl does not say
/// an option's type, and an integer option prints its default as digits.
static bool printsAnInteger(StringRef printed, StringRef name) {
  for (StringRef before : {"{", " "}) {
    std::string key = (before + name + "=").str();
    size_t at = printed.find(key);
    if (at == StringRef::npos)
      continue;
    StringRef value =
        printed.drop_front(at + key.size()).take_until([](char c) {
          return c == ' ' || c == '}';
        });
    int64_t unused;
    return !value.empty() && !value.getAsInteger(10, unused);
  }
  return false;
}

SmallVector<CPUTileOption> mlir::moe::getCPUTileOptions() {
  CPUPipelineOptionTable table;
  std::string printed;
  llvm::raw_string_ostream os(printed);
  table.print(os);
  // What a driver decides for itself, not the tiling.
  StringRef driverOptions[] = {table.emitCInterface.ArgStr,
                               table.runtimeAllocator.ArgStr,
                               table.reference.ArgStr};
  SmallVector<CPUTileOption> options;
  for (StringRef name : table.getNames())
    if (!llvm::is_contained(driverOptions, name))
      options.push_back({name.str(), printsAnInteger(printed, name)});
  return options;
}

std::string mlir::moe::setCPUPipelineOption(CPUPipelineOptions &options,
                                            StringRef name, StringRef value) {
  // An option string splits at these, and takes quotes and braces apart.
  constexpr StringLiteral separators = " \t\n{}'\"";
  if (name.empty() || name.contains('=') ||
      name.find_first_of(separators) != StringRef::npos)
    return "no option named '" + name.str() + "'";
  if (value.find_first_of(separators) != StringRef::npos)
    return "an option value cannot hold spaces, quotes or braces";
  std::string parseErrors;
  llvm::raw_string_ostream errors(parseErrors);
  if (failed(options.parseFromString((name + "=" + value).str(), errors)))
    return parseErrors.empty()
               ? "'" + value.str() + "' is not a value of " + name.str()
               : StringRef(parseErrors).trim().str();
  return "";
}

const TileOptionTable &mlir::moe::getSpecTileOptions() {
  static const TileOptionTable table = [] {
    TileOptionTable table;
    for (const CPUTileOption &option : getCPUTileOptions())
      table.options.push_back({option.name, option.integer});
    table.checkValue = [](StringRef name, StringRef value) -> std::string {
      CPUPipelineOptions options;
      std::string problem = setCPUPipelineOption(options, name, value);
      if (!problem.empty())
        return problem;
      return checkCPUPipelineOptions(options);
    };
    return table;
  }();
  return table;
}
