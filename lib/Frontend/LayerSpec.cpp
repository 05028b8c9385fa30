//===- LayerSpec.cpp - parse and validate YAML/JSON layer specs -----------===//
//
// The spec is read with LLVM's YAML node API (JSON is flow YAML) into a small
// owned tree, checked key by key against per-mapping field tables, and then
// checked for the size constraints of its layer kind. Every diagnostic goes
// through the SourceMgr at the node it is about.
//
//===----------------------------------------------------------------------===//

#include "moe/Frontend/LayerSpec.h"

#include "moe/ABI/SizeLimits.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallVectorExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/YAMLParser.h"

#include <cmath>
#include <limits>
#include <memory>
#include <vector>

using namespace mlir;
using namespace mlir::moe;
using llvm::SMLoc;
using llvm::SMRange;

StringRef mlir::moe::stringifyEnum(LayerKind kind) {
  switch (kind) {
  case LayerKind::moe:
    return "moe";
  case LayerKind::peer:
    return "peer";
  case LayerKind::pkm:
    return "pkm";
  case LayerKind::mh_moe:
    return "mh_moe";
  }
  return "";
}

StringRef mlir::moe::stringifyEnum(WeightType type) {
  switch (type) {
  case WeightType::f32:
    return "f32";
  case WeightType::bf16:
    return "bf16";
  case WeightType::f16:
    return "f16";
  }
  return "";
}

StringRef mlir::moe::stringifyEnum(SwiGLUClamp clamp) {
  switch (clamp) {
  case SwiGLUClamp::before_activation:
    return "before_activation";
  case SwiGLUClamp::after_activation:
    return "after_activation";
  }
  return "";
}

int64_t LayerSpec::numSubKeys() const {
  auto n = static_cast<int64_t>(std::llround(std::sqrt(double(experts))));
  return n * n == experts ? n : 0;
}

int64_t LayerSpec::numRouterChoices() const {
  if (!capacity || capacity->overflow != OverflowPolicy::next_choice)
    return router.topK;
  // Fallbacks come from the kept groups only.
  int64_t available = router.topkGroups * (experts / router.groups);
  return std::min(2 * router.topK, available);
}

std::optional<SpecLocation> LayerSpec::locationOf(StringRef path) const {
  while (true) {
    auto it = fieldLocations.find(path);
    if (it != fieldLocations.end())
      return it->second;
    size_t dot = path.rfind('.');
    if (dot == StringRef::npos)
      break;
    path = path.take_front(dot);
  }
  auto root = fieldLocations.find("");
  if (root != fieldLocations.end())
    return root->second;
  return std::nullopt;
}

//===----------------------------------------------------------------------===//
// Enum spellings
//===----------------------------------------------------------------------===//

/// Every enum used in specs numbers its cases 0, 1, ... and stringifies an
/// out-of-range value as "".
template <typename EnumT> static SmallVector<StringRef> enumSpellings() {
  SmallVector<StringRef> spellings;
  for (uint32_t value = 0;; ++value) {
    StringRef spelling = stringifyEnum(static_cast<EnumT>(value));
    if (spelling.empty())
      return spellings;
    spellings.push_back(spelling);
  }
}

template <typename EnumT>
static std::optional<EnumT> parseEnum(StringRef text) {
  for (auto [value, spelling] : llvm::enumerate(enumSpellings<EnumT>()))
    if (spelling == text)
      return static_cast<EnumT>(value);
  return std::nullopt;
}

//===----------------------------------------------------------------------===//
// The owned YAML tree
//===----------------------------------------------------------------------===//

namespace {
/// A YAML node read in full. The streaming yaml::Node tree can be walked only
/// once, in document order, while validation needs to look fields up.
struct SpecNode {
  enum class Kind { null, scalar, mapping, sequence };
  struct Entry {
    std::string key;
    SMRange keyRange;
    std::unique_ptr<SpecNode> value;
  };

  Kind kind = Kind::null;
  SMRange range;
  /// Scalar text with escapes resolved.
  std::string text;
  /// Unquoted scalars alone may be read as integers, floats or booleans, so a
  /// JSON string "4096" is not a size.
  bool plain = false;
  std::vector<Entry> entries;
  std::vector<std::unique_ptr<SpecNode>> items;

  bool isScalar() const { return kind == Kind::scalar; }
};
} // namespace

static std::string describe(const SpecNode &node) {
  switch (node.kind) {
  case SpecNode::Kind::null:
    return "null";
  case SpecNode::Kind::mapping:
    return "a mapping";
  case SpecNode::Kind::sequence:
    return "a list";
  case SpecNode::Kind::scalar:
    return node.plain ? "'" + node.text + "'"
                      : "the string \"" + node.text + "\"";
  }
  return "";
}

//===----------------------------------------------------------------------===//
// Field tables
//===----------------------------------------------------------------------===//

namespace {
/// Bit set of the layer kinds that accept a field.
enum KindMask : unsigned {
  kMoE = 1u << unsigned(LayerKind::moe),
  kPeer = 1u << unsigned(LayerKind::peer),
  kPkm = 1u << unsigned(LayerKind::pkm),
  kMhMoE = 1u << unsigned(LayerKind::mh_moe),
  kRouted = kMoE | kMhMoE,
  kProductKey = kPeer | kPkm,
  kAllKinds = kMoE | kPeer | kPkm | kMhMoE,
};

/// A key of one spec mapping. A required field is required for every kind
/// that accepts it.
struct FieldRule {
  StringLiteral key;
  unsigned kinds;
  bool required;
};
} // namespace

// clang-format off
static constexpr FieldRule kLayerFields[] = {
    {"name", kAllKinds, true},
    {"kind", kAllKinds, true},
    {"d_model", kAllKinds, true},
    {"experts", kAllKinds, true},
    {"expert_hidden", kRouted, true},
    {"heads", kProductKey | kMhMoE, true},
    {"top_k", kProductKey, true},
    {"key_dim", kProductKey, true},
    {"activation", kRouted | kPeer, false},
    {"weight_dtype", kAllKinds, false},
    {"router", kRouted, true},
    {"shared_experts", kMoE, false},
    {"capacity", kRouted, false},
    {"aux_losses", kRouted, false},
    {"score", kProductKey, false},
    {"query_batchnorm", kProductKey, false},
    {"query_layernorm", kProductKey, false},
    {"keys_per_head", kProductKey, false},
    {"tiles", kAllKinds, false},
    {"swiglu", kRouted, false},
    {"expert_bias", kRouted, false},
    {"expert_scale", kRouted, false},
    {"output_bias", kRouted, false},
    {"expert_rms_norm", kRouted, false},
    {"expert_rms_norm_eps", kRouted, false},
};

static constexpr FieldRule kRouterFields[] = {
    {"top_k", kAllKinds, true},
    {"score", kAllKinds, false},
    {"order", kAllKinds, false},
    {"normalize", kAllKinds, false},
    {"scaling", kAllKinds, false},
    {"selection_bias", kAllKinds, false},
    {"groups", kAllKinds, false},
    {"topk_groups", kAllKinds, false},
    {"group_score", kAllKinds, false},
    {"noise", kAllKinds, false},
    {"logit_bias", kAllKinds, false},
    {"softcap", kAllKinds, false},
    {"rms_norm", kAllKinds, false},
    {"rms_norm_eps", kAllKinds, false},
    {"apply_score", kAllKinds, false},
    {"jitter_eps", kAllKinds, false},
    {"hash_vocab", kAllKinds, false},
};

static constexpr FieldRule kSharedExpertFields[] = {
    {"hidden", kAllKinds, false},
    {"gate", kAllKinds, false},
};

static constexpr FieldRule kSwiGLUFields[] = {
    {"limit", kAllKinds, false},
    {"alpha", kAllKinds, false},
    {"up_offset", kAllKinds, false},
    {"clamp", kAllKinds, false},
};

static constexpr FieldRule kCapacityFields[] = {
    {"factor", kAllKinds, false},
    {"tokens", kAllKinds, false},
    {"token_fraction", kAllKinds, false},
    {"overflow", kAllKinds, false},
    {"priority", kAllKinds, false},
    {"renormalize", kAllKinds, false},
};
// clang-format on

/// Sizes index i32 tensors (expert ids, token ids), so they stay below 2^31.
static constexpr int64_t kMaxSize = kMaxInt32Count;

namespace {
/// A spec size in a product of sizes: the field it comes from (where an
/// error about the product points) and how the product names it.
struct SizeFactor {
  StringRef path;
  std::string name;
  int64_t value;
};
} // namespace

/// Numbers as a user would write them (`1.25`, `-1`), not `1.250000e+00`.
static std::string formatNumber(double value) {
  std::string text;
  llvm::raw_string_ostream(text) << llvm::format("%g", value);
  return text;
}

static bool isCKeyword(StringRef name) {
  static constexpr StringLiteral keywords[] = {
      "auto",     "bool",    "break",  "case",     "char",     "const",
      "continue", "default", "do",     "double",   "else",     "enum",
      "extern",   "false",   "float",  "for",      "goto",     "if",
      "inline",   "int",     "long",   "register", "restrict", "return",
      "short",    "signed",  "sizeof", "static",   "struct",   "switch",
      "true",     "typedef", "union",  "unsigned", "void",     "volatile",
      "while"};
  return llvm::is_contained(keywords, name);
}

static bool isCIdentifier(StringRef name) {
  if (name.empty() || !(llvm::isAlpha(name.front()) || name.front() == '_'))
    return false;
  return llvm::all_of(name,
                      [](char c) { return llvm::isAlnum(c) || c == '_'; });
}

//===----------------------------------------------------------------------===//
// The parser
//===----------------------------------------------------------------------===//

namespace {
class SpecParser;

/// One mapping of the spec with its field table: checks its keys and reads
/// typed values into the spec, recording where each was written.
class Section {
public:
  Section(SpecParser &parser, const SpecNode &node, std::string path,
          ArrayRef<FieldRule> rules, SMRange anchor)
      : parser(parser), node(node), path(std::move(path)), rules(rules),
        anchor(anchor) {}

  /// Reports unknown and duplicate keys, and missing required fields, for a
  /// layer of `kind` (any kind, when the kind itself is unknown).
  void checkKeys(std::optional<LayerKind> kind);

  const SpecNode *lookup(StringRef key) const {
    const SpecNode::Entry *entry = findEntry(key);
    return entry ? entry->value.get() : nullptr;
  }

  void read(StringRef key, int64_t &out);
  void read(StringRef key, double &out);
  void read(StringRef key, bool &out);
  void read(StringRef key, std::string &out);
  template <typename EnumT>
  void readEnum(StringRef key, EnumT &out, ArrayRef<EnumT> accepted = {},
                StringRef restriction = "");
  /// A mapping or list field; null stands for an absent optional section.
  const SpecNode *readMapping(StringRef key);
  const SpecNode *readList(StringRef key);

  std::string pathOf(StringRef key) const {
    return path.empty() ? key.str() : path + "." + key.str();
  }

private:
  /// The first entry of `key`; later duplicates are errors.
  const SpecNode::Entry *findEntry(StringRef key) const {
    auto entry = llvm::find_if(
        node.entries, [&](const SpecNode::Entry &e) { return e.key == key; });
    return entry == node.entries.end() ? nullptr : &*entry;
  }
  /// The value of `key` if it was written with the type `expected`.
  const SpecNode *typed(StringRef key, bool ok(const SpecNode &),
                        StringRef expected);
  std::string where() const {
    return path.empty() ? "the layer spec" : "'" + path + "'";
  }
  /// Where a key is looked for, in diagnostics.
  std::string context(std::optional<LayerKind> kind) const {
    if (path.empty() && kind)
      return "for kind '" + stringifyEnum(*kind).str() + "'";
    return "in " + where();
  }

  SpecParser &parser;
  const SpecNode &node;
  std::string path;
  ArrayRef<FieldRule> rules;
  /// Where to report a missing field: the section's key, or the document.
  SMRange anchor;
};

class SpecParser {
public:
  SpecParser(llvm::SourceMgr &sourceMgr, unsigned bufferId,
             const TileOptionTable *tileOptions)
      : sourceMgr(sourceMgr), bufferId(bufferId), tileOptions(tileOptions) {}

  FailureOr<LayerSpec> parse();

  void error(SMRange range, const Twine &message) {
    report(range, llvm::SourceMgr::DK_Error, message);
    ++numErrors;
  }
  void note(SMRange range, const Twine &message) {
    report(range, llvm::SourceMgr::DK_Note, message);
  }
  /// Records where the key of `path` and its value were written.
  void recordField(StringRef path, SMRange keyRange, SMRange valueRange);
  /// Where the value of `path` (else its closest parent) was written.
  SMRange rangeOf(StringRef path) const;
  /// Where the key of `path` was written (the document start if it was not).
  SMRange keyRangeOf(StringRef path) const {
    auto it = keyRanges.find(path);
    return it == keyRanges.end() ? rootRange : it->second;
  }
  /// Reads the plain scalar `value` of the field `path` as a decimal integer;
  /// reports and fails if it is not one.
  LogicalResult readInteger(const SpecNode &value, StringRef path,
                            int64_t &out);

private:
  void report(SMRange range, llvm::SourceMgr::DiagKind kind,
              const Twine &message) {
    // A range spanning lines would be clipped; the caret is what matters.
    ArrayRef<SMRange> ranges;
    if (range.isValid() && sourceMgr.FindLineNumber(range.Start) ==
                               sourceMgr.FindLineNumber(range.End))
      ranges = range;
    sourceMgr.PrintMessage(range.Start, kind, message, ranges);
  }

  /// Reads `node`, a collection `depth` levels deep (the top one is 1), and
  /// everything under it.
  std::unique_ptr<SpecNode> readNode(llvm::yaml::Node *node, unsigned depth);
  /// Field by field: keys, types and enum spellings.
  void readFields(const SpecNode &root);
  void readRouter(Section &layer);
  void readSharedExperts(Section &layer);
  void readCapacity(Section &layer);
  void checkSparsemixer(Section &router);
  void checkHash(Section &router);
  void readSwiGLU(Section &layer);
  void readAuxLosses(Section &layer);
  void readTiles(Section &layer);
  /// The constraints between fields of the layer kind.
  void checkSizes();
  void checkPositive(StringRef path, int64_t value, bool allowZero = false);
  /// Every product of sizes that a buffer or a 32-bit count depends on, for
  /// the weights and for one token (SizeLimits.h; the entry point bounds the
  /// tokens of a call).
  void checkAddressable();
  /// Reports `what`, `factors` elements of `elementBytes` bytes, if it does
  /// not fit in kMaxBufferBytes; returns whether it fits.
  bool checkBufferFits(StringRef what, ArrayRef<SizeFactor> factors,
                       int64_t elementBytes, StringRef elementType);

  llvm::SourceMgr &sourceMgr;
  unsigned bufferId;
  const TileOptionTable *tileOptions;
  LayerSpec spec;
  llvm::StringMap<SMRange> valueRanges;
  llvm::StringMap<SMRange> keyRanges;
  SMRange rootRange;
  unsigned numErrors = 0;
};
} // namespace

//===----------------------------------------------------------------------===//
// Section
//===----------------------------------------------------------------------===//

static bool kindAccepts(unsigned kinds, std::optional<LayerKind> kind) {
  return !kind || (kinds & (1u << unsigned(*kind)));
}

void Section::checkKeys(std::optional<LayerKind> kind) {
  auto accepted = [&](const FieldRule &rule) {
    return kindAccepts(rule.kinds, kind);
  };
  llvm::StringMap<SMRange> seen;
  for (const SpecNode::Entry &entry : node.entries) {
    const FieldRule *rule = llvm::find_if(
        rules, [&](const FieldRule &r) { return r.key == entry.key; });
    if (rule == rules.end() || !accepted(*rule)) {
      SmallVector<StringRef> keys;
      for (const FieldRule &r : rules)
        if (accepted(r))
          keys.push_back(r.key);
      parser.error(entry.keyRange,
                   "unknown key '" + entry.key + "' " + context(kind) +
                       " (accepted keys: " + llvm::join(keys, ", ") + ")");
      continue;
    }
    auto [it, inserted] = seen.try_emplace(entry.key, entry.keyRange);
    if (!inserted) {
      parser.error(entry.keyRange,
                   "duplicate key '" + entry.key + "' in " + where());
      parser.note(it->second, "previous occurrence of '" + entry.key + "'");
    }
  }
  for (const FieldRule &rule : rules) {
    // Without a valid kind only the fields every kind requires are missing.
    bool requiredHere = kind ? accepted(rule) : rule.kinds == kAllKinds;
    if (!rule.required || !requiredHere || seen.contains(rule.key))
      continue;
    parser.error(anchor, "missing required field '" + rule.key.str() + "' " +
                             context(kind));
  }
}

const SpecNode *Section::typed(StringRef key, bool ok(const SpecNode &),
                               StringRef expected) {
  const SpecNode::Entry *entry = findEntry(key);
  if (!entry)
    return nullptr;
  const SpecNode &value = *entry->value;
  parser.recordField(pathOf(key), entry->keyRange, value.range);
  if (ok(value))
    return &value;
  // An empty value has no position of its own; its key does.
  SMRange where = value.kind == SpecNode::Kind::null && !value.plain
                      ? entry->keyRange
                      : value.range;
  parser.error(where, "expected " + expected + " for '" + pathOf(key) +
                          "', got " + describe(value));
  return nullptr;
}

static bool isPlainScalar(const SpecNode &n) { return n.isScalar() && n.plain; }
static bool isAnyScalar(const SpecNode &n) { return n.isScalar(); }

void Section::read(StringRef key, int64_t &out) {
  if (const SpecNode *value = typed(key, isPlainScalar, "an integer"))
    (void)parser.readInteger(*value, pathOf(key), out);
}

void Section::read(StringRef key, double &out) {
  const SpecNode *value = typed(key, isPlainScalar, "a number");
  if (value && StringRef(value->text).getAsDouble(out))
    parser.error(value->range, "expected a number for '" + pathOf(key) +
                                   "', got " + describe(*value));
}

void Section::read(StringRef key, bool &out) {
  const SpecNode *value = typed(key, isPlainScalar, "true or false");
  if (!value)
    return;
  StringRef text = value->text;
  if (text == "true" || text == "True" || text == "TRUE")
    out = true;
  else if (text == "false" || text == "False" || text == "FALSE")
    out = false;
  else
    parser.error(value->range, "expected true or false for '" + pathOf(key) +
                                   "', got " + describe(*value));
}

void Section::read(StringRef key, std::string &out) {
  if (const SpecNode *value = typed(key, isAnyScalar, "a string"))
    out = value->text;
}

template <typename EnumT>
void Section::readEnum(StringRef key, EnumT &out, ArrayRef<EnumT> accepted,
                       StringRef restriction) {
  const SpecNode *value = typed(key, isAnyScalar, "a string");
  if (!value)
    return;
  std::optional<EnumT> parsed = parseEnum<EnumT>(value->text);
  if (parsed && (accepted.empty() || llvm::is_contained(accepted, *parsed))) {
    out = *parsed;
    return;
  }
  SmallVector<StringRef> spellings;
  if (accepted.empty())
    spellings = enumSpellings<EnumT>();
  for (EnumT e : accepted)
    spellings.push_back(stringifyEnum(e));
  parser.error(value->range,
               "invalid value '" + value->text + "' for '" + pathOf(key) + "'" +
                   restriction +
                   " (expected one of: " + llvm::join(spellings, ", ") + ")");
}

const SpecNode *Section::readMapping(StringRef key) {
  return typed(
      key,
      [](const SpecNode &n) {
        return n.kind == SpecNode::Kind::mapping ||
               n.kind == SpecNode::Kind::null;
      },
      "a mapping");
}

const SpecNode *Section::readList(StringRef key) {
  return typed(
      key,
      [](const SpecNode &n) {
        return n.kind == SpecNode::Kind::sequence ||
               n.kind == SpecNode::Kind::null;
      },
      "a list");
}

//===----------------------------------------------------------------------===//
// SpecParser
//===----------------------------------------------------------------------===//

void SpecParser::recordField(StringRef path, SMRange keyRange,
                             SMRange valueRange) {
  valueRanges[path] = valueRange;
  keyRanges[path] = keyRange;
  auto [line, column] = sourceMgr.getLineAndColumn(keyRange.Start, bufferId);
  spec.fieldLocations[path] = SpecLocation{line, column};
}

LogicalResult SpecParser::readInteger(const SpecNode &value, StringRef path,
                                      int64_t &out) {
  StringRef text = value.text;
  if (!text.getAsInteger(10, out))
    return success();
  StringRef digits = text.starts_with("-") ? text.drop_front() : text;
  if (!digits.empty() && llvm::all_of(digits, llvm::isDigit))
    error(value.range,
          "integer " + text + " for '" + path + "' is out of range");
  else
    error(value.range,
          "expected an integer for '" + path + "', got " + describe(value));
  return failure();
}

SMRange SpecParser::rangeOf(StringRef path) const {
  while (true) {
    auto it = valueRanges.find(path);
    if (it != valueRanges.end())
      return it->second;
    size_t dot = path.rfind('.');
    if (dot == StringRef::npos)
      return rootRange;
    path = path.take_front(dot);
  }
}

/// The deepest nesting of mappings and lists a spec may have. A real spec
/// nests 3 levels; the limit keeps the recursion of readNode, of the SpecNode
/// destructors and of llvm::yaml's node skipping (which recurses as deep as
/// the nodes it skips) far from the stack's end on hostile input.
static constexpr unsigned kMaxSpecNesting = 64;

std::unique_ptr<SpecNode> SpecParser::readNode(llvm::yaml::Node *node,
                                               unsigned depth) {
  // A null node pointer follows a syntax error the scanner has reported.
  if (!node)
    return nullptr;
  auto result = std::make_unique<SpecNode>();
  result->range = node->getSourceRange();
  if (auto *scalar = dyn_cast<llvm::yaml::ScalarNode>(node)) {
    SmallString<32> storage;
    StringRef raw = scalar->getRawValue();
    result->text = scalar->getValue(storage).str();
    result->plain = !raw.starts_with("'") && !raw.starts_with("\"");
    bool isNull = result->plain && (raw == "null" || raw == "Null" ||
                                    raw == "NULL" || raw == "~");
    result->kind = isNull ? SpecNode::Kind::null : SpecNode::Kind::scalar;
    return result;
  }
  if (auto *block = dyn_cast<llvm::yaml::BlockScalarNode>(node)) {
    result->kind = SpecNode::Kind::scalar;
    result->text = block->getValue().str();
    return result;
  }
  bool collection =
      isa<llvm::yaml::MappingNode, llvm::yaml::SequenceNode>(node);
  if (collection && depth > kMaxSpecNesting) {
    // Stop here, before anything under the node is parsed: nothing above
    // touches the node again (no iterator moves on, no value is read after
    // a failed key), so llvm::yaml never skips the rest of it recursively.
    // A flow collection's range starts after its bracket: point at it.
    const char *start = result->range.Start.getPointer();
    const char *bufferStart =
        sourceMgr.getMemoryBuffer(bufferId)->getBufferStart();
    const char *bracket = start;
    while (bracket > bufferStart && llvm::isSpace(bracket[-1]))
      --bracket;
    if (bracket > bufferStart && (bracket[-1] == '[' || bracket[-1] == '{'))
      start = bracket - 1;
    SMLoc at = SMLoc::getFromPointer(start);
    error(SMRange(at, at),
          "expected the layer spec nested at most " + Twine(kMaxSpecNesting) +
              " levels deep, found a " +
              (isa<llvm::yaml::MappingNode>(node) ? "mapping" : "list") +
              " nested deeper");
    return nullptr;
  }
  if (auto *mapping = dyn_cast<llvm::yaml::MappingNode>(node)) {
    result->kind = SpecNode::Kind::mapping;
    for (llvm::yaml::KeyValueNode &entry : *mapping) {
      std::unique_ptr<SpecNode> key = readNode(entry.getKey(), depth + 1);
      // Reading the value would first skip what is left of a failed key
      // (llvm::yaml skips recursively); nothing more is read after an error.
      if (!key)
        return nullptr;
      // The value must be read before the iterator moves on.
      llvm::yaml::Node *valueNode = entry.getValue();
      if (valueNode && isa<llvm::yaml::AliasNode>(valueNode)) {
        error(key->range, "YAML aliases are not supported in layer specs");
        return nullptr;
      }
      std::unique_ptr<SpecNode> value = readNode(valueNode, depth + 1);
      if (!value)
        return nullptr;
      if (!key->isScalar()) {
        error(key->range, "expected a string key, got " + describe(*key));
        continue;
      }
      result->entries.push_back({key->text, key->range, std::move(value)});
    }
    return result;
  }
  if (auto *sequence = dyn_cast<llvm::yaml::SequenceNode>(node)) {
    result->kind = SpecNode::Kind::sequence;
    for (llvm::yaml::Node &item : *sequence) {
      std::unique_ptr<SpecNode> value = readNode(&item, depth + 1);
      if (!value)
        return nullptr;
      result->items.push_back(std::move(value));
    }
    return result;
  }
  if (isa<llvm::yaml::AliasNode>(node)) {
    error(result->range, "YAML aliases are not supported in layer specs");
    return nullptr;
  }
  // An empty value (`capacity:`) is a null node.
  return result;
}

FailureOr<LayerSpec> SpecParser::parse() {
  const llvm::MemoryBuffer *buffer = sourceMgr.getMemoryBuffer(bufferId);
  spec.sourceName = buffer->getBufferIdentifier().str();
  SMLoc bufferStart = SMLoc::getFromPointer(buffer->getBufferStart());
  rootRange = SMRange(bufferStart, bufferStart);

  llvm::yaml::Stream stream(buffer->getMemBufferRef(), sourceMgr);
  std::unique_ptr<SpecNode> root;
  llvm::yaml::document_iterator document = stream.begin();
  if (document != stream.end()) {
    root = readNode(document->getRoot(), /*depth=*/1);
    if (!stream.failed() && root && ++document != stream.end()) {
      llvm::yaml::Node *extra = document->getRoot();
      error(extra ? extra->getSourceRange() : rootRange,
            "expected a single YAML document in the layer spec");
    }
  }
  if (stream.failed())
    return failure();
  if (numErrors)
    return failure();
  if (!root || root->kind == SpecNode::Kind::null) {
    error(rootRange, "empty layer spec: expected a mapping with at least "
                     "'name', 'kind', 'd_model' and 'experts'");
    return failure();
  }
  if (root->kind != SpecNode::Kind::mapping) {
    error(root->range, "expected a mapping at the top of the layer spec, got " +
                           describe(*root));
    return failure();
  }
  rootRange = SMRange(root->range.Start, root->range.Start);
  auto [line, column] = sourceMgr.getLineAndColumn(root->range.Start, bufferId);
  spec.fieldLocations[""] = SpecLocation{line, column};

  readFields(*root);
  if (numErrors)
    return failure();
  checkSizes();
  if (numErrors)
    return failure();
  return std::move(spec);
}

void SpecParser::readFields(const SpecNode &root) {
  Section layer(*this, root, "", kLayerFields, rootRange);

  // The kind decides which keys belong to the layer, so it goes first.
  std::optional<LayerKind> kind;
  if (layer.lookup("kind")) {
    unsigned errorsBefore = numErrors;
    layer.readEnum("kind", spec.kind);
    if (numErrors == errorsBefore)
      kind = spec.kind;
  }
  layer.checkKeys(kind);
  if (!kind)
    return;

  layer.read("name", spec.name);
  layer.read("d_model", spec.dModel);
  layer.read("experts", spec.experts);
  layer.readEnum("weight_dtype", spec.weightType);

  if (spec.isRouted()) {
    spec.activation = Activation::swiglu;
    layer.read("expert_hidden", spec.expertHidden);
    layer.readEnum("activation", spec.activation);
    readSwiGLU(layer);
    layer.read("expert_bias", spec.expertBias);
    layer.read("expert_scale", spec.expertScale);
    layer.read("output_bias", spec.outputBias);
    layer.read("expert_rms_norm", spec.expertRmsNorm);
    layer.read("expert_rms_norm_eps", spec.expertRmsNormEps);
    readRouter(layer);
    if (spec.kind == LayerKind::moe)
      readSharedExperts(layer);
    readCapacity(layer);
    readAuxLosses(layer);
  }
  if (spec.kind == LayerKind::peer) {
    // PEER experts are single neurons: there is no up projection to gate.
    static constexpr Activation neuronActivations[] = {
        Activation::gelu, Activation::relu, Activation::silu,
        Activation::gelu_tanh, Activation::relu2};
    spec.activation = Activation::gelu;
    layer.readEnum<Activation>("activation", spec.activation, neuronActivations,
                               " of a 'peer' layer");
  }
  if (spec.isProductKey()) {
    layer.read("top_k", spec.topK);
    layer.read("key_dim", spec.keyDim);
    static constexpr ScoreFunction productKeyScores[] = {
        ScoreFunction::softmax, ScoreFunction::sigmoid};
    std::string restriction =
        " of a '" + stringifyEnum(spec.kind).str() + "' layer";
    layer.readEnum<ScoreFunction>("score", spec.score, productKeyScores,
                                  restriction);
    layer.read("query_batchnorm", spec.queryBatchNorm);
    layer.read("query_layernorm", spec.queryLayerNorm);
    layer.read("keys_per_head", spec.keysPerHead);
  }
  if (spec.isProductKey() || spec.kind == LayerKind::mh_moe)
    layer.read("heads", spec.heads);
  readTiles(layer);
}

void SpecParser::readRouter(Section &layer) {
  const SpecNode *node = layer.readMapping("router");
  if (!node)
    return;
  Section router(*this, *node, "router", kRouterFields, keyRangeOf("router"));
  router.checkKeys(std::nullopt);
  RouterSpec &r = spec.router;
  router.read("top_k", r.topK);
  router.readEnum("score", r.score);
  router.readEnum("order", r.order);
  router.read("normalize", r.normalize);
  router.read("scaling", r.scaling);
  router.read("selection_bias", r.selectionBias);
  router.read("groups", r.groups);
  router.read("topk_groups", r.topkGroups);
  router.readEnum("group_score", r.groupScore);
  router.read("noise", r.noise);
  router.read("logit_bias", r.logitBias);
  // A null soft-cap is an absent one, as for the optional sections.
  if (const SpecNode *cap = router.lookup("softcap");
      cap && cap->kind != SpecNode::Kind::null) {
    unsigned before = numErrors;
    double value = 0.0;
    router.read("softcap", value);
    if (numErrors == before)
      r.softcap = value;
  }
  if (router.lookup("apply_score")) {
    std::string where;
    router.read("apply_score", where);
    if (where == "input")
      r.scoreOnInput = true;
    else if (where != "output" && !where.empty())
      error(rangeOf("router.apply_score"),
            "invalid value '" + where +
                "' for 'router.apply_score' (expected one of: output, input)");
  }
  router.read("rms_norm", r.rmsNorm);
  router.read("rms_norm_eps", r.rmsNormEps);
  checkSparsemixer(router);
  checkHash(router);
}

/// Hash routing (DeepSeek-V4) looks the experts up by token id: the scores
/// only weigh them, so nothing else may pick (order, bias, noise, groups),
/// there are no fallback choices, and the token ids are the layer's tokens
/// (not mh_moe's sub-tokens).
void SpecParser::checkHash(Section &router) {
  if (!router.lookup("hash_vocab"))
    return;
  RouterSpec &r = spec.router;
  unsigned before = numErrors;
  router.read("hash_vocab", r.hashVocab);
  if (numErrors != before)
    return;
  auto refuse = [&](StringRef path, const Twine &why) {
    error(rangeOf(path), "router.hash_vocab " + why);
  };
  if (r.hashVocab <= 0 || r.hashVocab > kMaxSize) {
    error(rangeOf("router.hash_vocab"),
          "expected router.hash_vocab in [1, " + Twine(kMaxSize) + "], got " +
              Twine(r.hashVocab));
    return;
  }
  if (spec.kind != LayerKind::moe)
    refuse("router.hash_vocab", "needs kind moe (token ids route whole tokens)");
  if (r.order != RoutingOrder::score_then_topk)
    refuse("router.order", "weighs the looked-up experts by their scores: "
                           "router.order must be score_then_topk");
  if (r.score == ScoreFunction::sparsemixer)
    refuse("router.score", "does not take router.score sparsemixer");
  if (r.selectionBias)
    refuse("router.selection_bias", "does not take router.selection_bias");
  if (r.noise)
    refuse("router.noise", "does not take router.noise");
  if (r.groups > 1)
    refuse("router.groups", "does not take router.groups");
}

/// sparsemixer (PhiMoE) picks the top-k logits, so its order is
/// topk_then_score (the default with it); jitter_eps belongs to it alone, and
/// a selection bias or groups would change the picks it weighs.
void SpecParser::checkSparsemixer(Section &router) {
  RouterSpec &r = spec.router;
  bool sparsemixer = r.score == ScoreFunction::sparsemixer;
  if (router.lookup("jitter_eps")) {
    router.read("jitter_eps", r.jitterEps);
    if (!sparsemixer)
      error(rangeOf("router.jitter_eps"),
            "router.jitter_eps applies to router.score sparsemixer only, got "
            "score " +
                stringifyScoreFunction(r.score));
    else if (!(r.jitterEps >= 0.0) || !std::isfinite(r.jitterEps))
      error(rangeOf("router.jitter_eps"),
            "expected a finite router.jitter_eps >= 0, got " +
                formatNumber(r.jitterEps));
  }
  if (!sparsemixer)
    return;
  if (!router.lookup("order"))
    r.order = RoutingOrder::topk_then_score;
  else if (r.order != RoutingOrder::topk_then_score)
    error(rangeOf("router.order"),
          "router.score sparsemixer chooses by the logits: router.order must "
          "be topk_then_score");
  if (r.selectionBias)
    error(rangeOf("router.selection_bias"),
          "router.score sparsemixer does not take router.selection_bias");
  if (r.groups > 1)
    error(rangeOf("router.groups"),
          "router.score sparsemixer does not take router.groups");
}

void SpecParser::readSharedExperts(Section &layer) {
  const SpecNode *node = layer.readMapping("shared_experts");
  if (!node || node->kind == SpecNode::Kind::null)
    return;
  Section shared(*this, *node, "shared_experts", kSharedExpertFields,
                 keyRangeOf("shared_experts"));
  shared.checkKeys(std::nullopt);
  shared.read("hidden", spec.sharedExperts.hidden);
  shared.read("gate", spec.sharedExperts.gate);
}

void SpecParser::readSwiGLU(Section &layer) {
  const SpecNode *node = layer.readMapping("swiglu");
  if (!node || node->kind == SpecNode::Kind::null)
    return;
  Section swiglu(*this, *node, "swiglu", kSwiGLUFields, keyRangeOf("swiglu"));
  swiglu.checkKeys(std::nullopt);
  SwiGLUSpec &s = spec.swiglu.emplace();
  if (swiglu.lookup("limit")) {
    double limit = 0.0;
    swiglu.read("limit", limit);
    s.limit = limit;
  }
  swiglu.read("alpha", s.alpha);
  swiglu.read("up_offset", s.upOffset);
  swiglu.readEnum("clamp", s.clamp);
}

void SpecParser::readCapacity(Section &layer) {
  const SpecNode *node = layer.readMapping("capacity");
  if (!node || node->kind == SpecNode::Kind::null)
    return;
  Section capacity(*this, *node, "capacity", kCapacityFields,
                   keyRangeOf("capacity"));
  capacity.checkKeys(std::nullopt);
  CapacitySpec &c = spec.capacity.emplace();
  // Exactly one of factor, tokens and token_fraction; a null one is an
  // absent one.
  auto present = [&](StringRef key) {
    const SpecNode *value = capacity.lookup(key);
    return value && value->kind != SpecNode::Kind::null;
  };
  if (present("factor"))
    capacity.read("factor", c.factor.emplace());
  if (present("tokens"))
    capacity.read("tokens", c.tokens.emplace());
  if (present("token_fraction"))
    capacity.read("token_fraction", c.tokenFraction.emplace());
  int sizes = int(present("factor")) + int(present("tokens")) +
              int(present("token_fraction"));
  if (sizes == 0)
    error(keyRangeOf("capacity"),
          "missing required field 'factor', 'tokens' or 'token_fraction' in "
          "'capacity'");
  else if (sizes > 1)
    error(rangeOf(present("token_fraction") ? "capacity.token_fraction"
                                            : "capacity.tokens"),
          "expected only one of capacity.factor, capacity.tokens and "
          "capacity.token_fraction");
  capacity.readEnum("overflow", c.overflow);
  capacity.readEnum("priority", c.priority);
  capacity.read("renormalize", c.renormalize);
}

void SpecParser::readAuxLosses(Section &layer) {
  const SpecNode *node = layer.readList("aux_losses");
  if (!node)
    return;
  llvm::SmallDenseMap<unsigned, SMRange> seen;
  for (const std::unique_ptr<SpecNode> &item : node->items) {
    if (!item->isScalar()) {
      error(item->range, "expected a string for an item of 'aux_losses', got " +
                             describe(*item));
      continue;
    }
    std::optional<AuxLossKind> loss = parseEnum<AuxLossKind>(item->text);
    if (!loss) {
      error(item->range, "invalid value '" + item->text +
                             "' in 'aux_losses' (expected one of: " +
                             llvm::join(enumSpellings<AuxLossKind>(), ", ") +
                             ")");
      continue;
    }
    auto [it, inserted] = seen.try_emplace(unsigned(*loss), item->range);
    if (!inserted) {
      error(item->range, "duplicate aux loss '" + item->text + "'");
      note(it->second, "previous occurrence of '" + item->text + "'");
      continue;
    }
    spec.auxLosses.push_back(*loss);
    recordField("aux_losses." + item->text, item->range, item->range);
  }
  // The canonical order (the enum's), so that specs listing the same losses
  // build the same function.
  llvm::sort(spec.auxLosses);
}

void SpecParser::readTiles(Section &layer) {
  const SpecNode *node = layer.readMapping("tiles");
  if (!node || node->kind == SpecNode::Kind::null)
    return;
  llvm::StringMap<SMRange> seen;
  for (const SpecNode::Entry &entry : node->entries) {
    auto [it, inserted] = seen.try_emplace(entry.key, entry.keyRange);
    if (!inserted) {
      error(entry.keyRange, "duplicate key '" + entry.key + "' in 'tiles'");
      note(it->second, "previous occurrence of '" + entry.key + "'");
      continue;
    }
    const TileOptionTable::Option *option = nullptr;
    if (tileOptions) {
      option = llvm::find_if(tileOptions->options,
                             [&](const TileOptionTable::Option &o) {
                               return o.name == entry.key;
                             });
      if (option == tileOptions->options.end()) {
        SmallVector<StringRef> names = llvm::map_to_vector(
            tileOptions->options,
            [](const TileOptionTable::Option &o) { return StringRef(o.name); });
        error(entry.keyRange, "unknown tile option '" + entry.key +
                                  "' in 'tiles' (accepted options: " +
                                  llvm::join(names, ", ") + ")");
        continue;
      }
    }
    std::string path = "tiles." + entry.key;
    const SpecNode &value = *entry.value;
    recordField(path, entry.keyRange, value.range);
    if (!value.isScalar()) {
      // An empty value has no position of its own; its key does.
      SMRange where = value.kind == SpecNode::Kind::null && !value.plain
                          ? entry.keyRange
                          : value.range;
      error(where, "expected an integer or a string for '" + path + "', got " +
                       describe(value));
      continue;
    }
    // Integers go on in decimal: llvm::cl would read `010` as octal.
    std::string text = value.text;
    if (option && option->integer) {
      int64_t size = 0;
      if (!value.plain) {
        error(value.range,
              "expected an integer for '" + path + "', got " + describe(value));
        continue;
      }
      if (failed(readInteger(value, path, size)))
        continue;
      if (size < 0) {
        error(value.range, "expected " + path +
                               " >= 0 (0: the target's default), got " +
                               Twine(size));
        continue;
      }
      text = std::to_string(size);
    }
    if (tileOptions && tileOptions->checkValue) {
      std::string problem = tileOptions->checkValue(entry.key, text);
      if (!problem.empty()) {
        std::string shown =
            value.plain ? "'" + value.text + "'" : "\"" + value.text + "\"";
        error(value.range,
              "invalid value " + shown + " for '" + path + "': " + problem);
        continue;
      }
    }
    spec.tiles.push_back({entry.key, text});
  }
}

//===----------------------------------------------------------------------===//
// Size constraints
//===----------------------------------------------------------------------===//

void SpecParser::checkPositive(StringRef path, int64_t value, bool allowZero) {
  if (value < 0 || (value == 0 && !allowZero))
    error(rangeOf(path), "expected " + path + (allowZero ? " >= 0" : " > 0") +
                             ", got " + Twine(value));
  else if (value > kMaxSize)
    error(rangeOf(path), "expected " + path + " <= " + Twine(kMaxSize) +
                             ", got " + Twine(value));
}

void SpecParser::checkSizes() {
  if (!isCIdentifier(spec.name))
    error(rangeOf("name"),
          "name '" + spec.name +
              "' is not a C identifier ([A-Za-z_][A-Za-z0-9_]*)");
  else if (isCKeyword(spec.name))
    error(rangeOf("name"), "name '" + spec.name + "' is a C keyword");

  unsigned errorsBefore = numErrors;
  checkPositive("d_model", spec.dModel);
  checkPositive("experts", spec.experts);
  if (spec.isRouted()) {
    checkPositive("expert_hidden", spec.expertHidden);
    checkPositive("router.top_k", spec.router.topK);
    checkPositive("router.groups", spec.router.groups);
    checkPositive("router.topk_groups", spec.router.topkGroups);
  }
  if (spec.kind == LayerKind::moe)
    checkPositive("shared_experts.hidden", spec.sharedExperts.hidden,
                  /*allowZero=*/true);
  if (spec.isProductKey() || spec.kind == LayerKind::mh_moe)
    checkPositive("heads", spec.heads);
  if (spec.isProductKey()) {
    checkPositive("top_k", spec.topK);
    checkPositive("key_dim", spec.keyDim);
  }
  // The relations below divide by these sizes.
  if (numErrors != errorsBefore)
    return;

  if (spec.isRouted()) {
    const RouterSpec &r = spec.router;
    if (r.topK > spec.experts)
      error(rangeOf("router.top_k"), "expected router.top_k (" + Twine(r.topK) +
                                         ") <= experts (" +
                                         Twine(spec.experts) + ")");
    // A routed scaling factor only rescales the expert mix; zero or a sign
    // flip is a mistake in a spec, though the IR allows any finite value.
    if (!(r.scaling > 0.0) || !std::isfinite(r.scaling))
      error(rangeOf("router.scaling"),
            "expected a finite router.scaling > 0, got " +
                formatNumber(r.scaling));
    if (r.softcap && (!(*r.softcap > 0.0) || !std::isfinite(*r.softcap)))
      error(rangeOf("router.softcap"),
            "expected a finite router.softcap > 0, got " +
                formatNumber(*r.softcap));
    if (!(spec.expertRmsNormEps > 0.0) || !std::isfinite(spec.expertRmsNormEps))
      error(rangeOf("expert_rms_norm_eps"),
            "expected a finite expert_rms_norm_eps > 0, got " +
                formatNumber(spec.expertRmsNormEps));
    if (!(r.rmsNormEps > 0.0) || !std::isfinite(r.rmsNormEps))
      error(rangeOf("router.rms_norm_eps"),
            "expected a finite router.rms_norm_eps > 0, got " +
                formatNumber(r.rmsNormEps));
    if (spec.experts % r.groups != 0) {
      error(rangeOf("router.groups"),
            "expected experts (" + Twine(spec.experts) +
                ") divisible by router.groups (" + Twine(r.groups) + ")");
    } else if (r.topkGroups > r.groups) {
      error(rangeOf("router.topk_groups"),
            "expected router.topk_groups (" + Twine(r.topkGroups) +
                ") <= router.groups (" + Twine(r.groups) + ")");
    } else {
      int64_t groupSize = spec.experts / r.groups;
      if (r.topK <= spec.experts && r.topK > r.topkGroups * groupSize)
        error(rangeOf("router.top_k"),
              "expected router.top_k (" + Twine(r.topK) +
                  ") <= experts in the kept groups (" + Twine(r.topkGroups) +
                  " x " + Twine(groupSize) + " = " +
                  Twine(r.topkGroups * groupSize) + ")");
      if (r.groups > 1 && r.groupScore == GroupScore::top2_sum && groupSize < 2)
        error(rangeOf("router.group_score"),
              "expected at least 2 experts per group for router.group_score "
              "top2_sum, got " +
                  Twine(groupSize) + " (experts " + Twine(spec.experts) +
                  " / groups " + Twine(r.groups) + ")");
    }
    if (const std::optional<SwiGLUSpec> &s = spec.swiglu) {
      if (spec.activation != Activation::swiglu)
        error(rangeOf("swiglu"),
              "expected activation swiglu with the 'swiglu' options, got "
              "activation " +
                  stringifyActivation(spec.activation));
      if (s->limit && (!(*s->limit > 0.0) || !std::isfinite(*s->limit)))
        error(rangeOf("swiglu.limit"),
              "expected a finite swiglu.limit > 0, got " +
                  formatNumber(*s->limit));
      if (!(s->alpha > 0.0) || !std::isfinite(s->alpha))
        error(rangeOf("swiglu.alpha"),
              "expected a finite swiglu.alpha > 0, got " +
                  formatNumber(s->alpha));
      if (!std::isfinite(s->upOffset))
        error(rangeOf("swiglu.up_offset"),
              "expected a finite swiglu.up_offset, got " +
                  formatNumber(s->upOffset));
      if (s->clamp == SwiGLUClamp::after_activation && !s->limit)
        error(rangeOf("swiglu.clamp"),
              "expected swiglu.limit with swiglu.clamp after_activation");
    }
    if (spec.capacity && spec.capacity->factor &&
        (!(*spec.capacity->factor > 0.0) ||
         !std::isfinite(*spec.capacity->factor)))
      error(rangeOf("capacity.factor"),
            "expected a finite capacity.factor > 0, got " +
                formatNumber(*spec.capacity->factor));
    if (spec.capacity && r.hashVocab &&
        spec.capacity->overflow == OverflowPolicy::next_choice)
      error(rangeOf("capacity.overflow"),
            "router.hash_vocab has no fallback choices: capacity.overflow "
            "must be drop");
    if (spec.capacity && spec.capacity->tokenFraction &&
        (!(*spec.capacity->tokenFraction > 0.0) ||
         !std::isfinite(*spec.capacity->tokenFraction)))
      error(rangeOf("capacity.token_fraction"),
            "expected a finite capacity.token_fraction > 0, got " +
                formatNumber(*spec.capacity->tokenFraction));
    if (spec.capacity && spec.capacity->tokens &&
        *spec.capacity->tokens <= 0)
      error(rangeOf("capacity.tokens"),
            "expected capacity.tokens > 0, got " +
                Twine(*spec.capacity->tokens));
    if (spec.capacity && spec.capacity->tokens &&
        *spec.capacity->tokens > kMaxSize)
      error(rangeOf("capacity.tokens"),
            "expected capacity.tokens <= " + Twine(kMaxSize) + ", got " +
                Twine(*spec.capacity->tokens));
  }

  if (spec.kind == LayerKind::moe && spec.sharedExperts.gate &&
      spec.sharedExperts.hidden == 0)
    error(rangeOf("shared_experts.gate"),
          "expected shared_experts.hidden > 0 for a gated shared expert");

  if (spec.kind == LayerKind::mh_moe && spec.dModel % spec.heads != 0)
    error(rangeOf("heads"), "expected d_model (" + Twine(spec.dModel) +
                                ") divisible by heads (" + Twine(spec.heads) +
                                ")");

  if (spec.isProductKey()) {
    if (spec.numSubKeys() == 0)
      error(rangeOf("experts"), "expected experts (" + Twine(spec.experts) +
                                    ") to be a perfect square n*n for kind '" +
                                    stringifyEnum(spec.kind) +
                                    "' (product keys)");
    if (spec.keyDim % 2 != 0)
      error(rangeOf("key_dim"),
            "expected an even key_dim (two sub-key halves), got " +
                Twine(spec.keyDim));
    // Each stage keeps min(top_k, n) sub-keys; the k'*k' candidates cover
    // top_k as long as top_k <= n*n experts.
    if (spec.numSubKeys() != 0 && spec.topK > spec.experts)
      error(rangeOf("top_k"), "expected top_k (" + Twine(spec.topK) +
                                  ") <= experts (n*n = " +
                                  Twine(spec.experts) + ")");
    if (spec.queryBatchNorm && spec.queryLayerNorm)
      error(rangeOf("query_layernorm"),
            "expected at most one query norm: query_batchnorm and "
            "query_layernorm are both true");
  }
  // The products below take the relations above for granted.
  if (numErrors == errorsBefore)
    checkAddressable();
}

/// `a x b x c = 1 x 2 x 3`: a product as the spec writes its factors.
static std::string describeProduct(ArrayRef<SizeFactor> factors) {
  SmallVector<std::string> names, values;
  for (const SizeFactor &f : factors) {
    names.push_back(f.name);
    values.push_back(std::to_string(f.value));
  }
  return llvm::join(names, " x ") + " = " + llvm::join(values, " x ");
}

/// The factor an error about a product points at: the largest, the first of
/// equals.
static const SizeFactor &largestFactor(ArrayRef<SizeFactor> factors) {
  return *llvm::max_element(factors,
                            [](const SizeFactor &a, const SizeFactor &b) {
                              return a.value < b.value;
                            });
}

bool SpecParser::checkBufferFits(StringRef what, ArrayRef<SizeFactor> factors,
                                 int64_t elementBytes, StringRef elementType) {
  SmallVector<int64_t> values =
      llvm::map_to_vector(factors, [](const SizeFactor &f) { return f.value; });
  std::optional<int64_t> count = checkedProduct(values);
  if (count && fitsInBuffer(*count, elementBytes))
    return true;
  std::optional<int64_t> bytes =
      count ? checkedMul(*count, elementBytes) : std::nullopt;
  error(rangeOf(largestFactor(factors).path),
        "expected " + what + " (" + describeProduct(factors) + " " +
            elementType + ") to fit in 2^47 bytes, the address space a " +
            "buffer may span, got " +
            (bytes ? Twine(*bytes) + " bytes" : Twine("more than 2^63 bytes")));
  return false;
}

void SpecParser::checkAddressable() {
  int64_t weightBytes = spec.weightType == WeightType::f32 ? 4 : 2;
  StringRef weightType = stringifyEnum(spec.weightType);
  SizeFactor d{"d_model", "d_model", spec.dModel};
  SizeFactor e{"experts", "experts", spec.experts};
  // One error per layer: the weights of a layer grow together.
  auto weightsFit =
      [&](ArrayRef<std::pair<StringRef, SmallVector<SizeFactor>>> weights) {
        for (const auto &[name, factors] : weights)
          if (!checkBufferFits(("weight '" + name + "'").str(), factors,
                               weightBytes, weightType))
            return false;
        return true;
      };

  if (spec.isRouted()) {
    int64_t width = spec.expertWidth();
    SizeFactor w = spec.kind == LayerKind::mh_moe
                       ? SizeFactor{"d_model", "d_model / heads", width}
                       : d;
    SizeFactor f{"expert_hidden", "expert_hidden", spec.expertHidden};
    SmallVector<std::pair<StringRef, SmallVector<SizeFactor>>> weights;
    if (spec.kind == LayerKind::mh_moe)
      weights.push_back({"head_proj", {d, d}});
    weights.push_back({"gate", {e, w}});
    weights.push_back({"w1", {e, f, w}});
    if (spec.hasSharedExperts())
      weights.push_back({"shared_w1",
                         {{"shared_experts.hidden", "shared_experts.hidden",
                           spec.sharedExperts.hidden},
                          d}});
    if (!weightsFit(weights))
      return;
    if (spec.router.hashVocab &&
        !checkBufferFits("weight 'tid2eid'",
                         {{"router.hash_vocab", "router.hash_vocab",
                           spec.router.hashVocab},
                          {"router.top_k", "router.top_k", spec.router.topK}},
                         4, "i32"))
      return;

    // Per token: heads x choices dispatch slots, counted in i32, each with
    // an expert row and a hidden row of f32.
    int64_t choices = spec.numRouterChoices();
    SmallVector<SizeFactor> slots;
    if (spec.kind == LayerKind::mh_moe)
      slots.push_back({"heads", "heads", spec.heads});
    slots.push_back(
        {"router.top_k",
         choices == spec.router.topK ? "router.top_k" : "router choices",
         choices});
    std::optional<int64_t> perToken = checkedProduct(llvm::map_to_vector(
        slots, [](const SizeFactor &s) { return s.value; }));
    if (!perToken || *perToken > kMaxInt32Count) {
      error(rangeOf(largestFactor(slots).path),
            "expected at most " + Twine(kMaxInt32Count) +
                " dispatch slots per token (their counts and offsets are "
                "32-bit), got " +
                describeProduct(slots) +
                (perToken ? " = " + Twine(*perToken) : Twine()));
      return;
    }
    slots.push_back(width > spec.expertHidden ? w : f);
    checkBufferFits("one token's expert rows", slots, 4, "f32");
    return;
  }

  // Product keys.
  int64_t n = spec.numSubKeys();
  SizeFactor heads{"heads", "heads", spec.heads};
  SizeFactor keyDim{"key_dim", "key_dim", spec.keyDim};
  SizeFactor subKeys{"experts", "n", n};
  SizeFactor halfKey{"key_dim", "key_dim / 2", spec.keyDim / 2};
  SmallVector<SizeFactor> keys = {subKeys, halfKey};
  if (spec.keysPerHead)
    keys.insert(keys.begin(), heads);
  if (!weightsFit(
          {{"query", {heads, keyDim, d}},
           {"keys1", keys},
           {spec.kind == LayerKind::peer ? "expert_in" : "values", {e, d}}}))
    return;
  // Per token: the f32 queries of every head (the bf16/f16 query weight may
  // fit where they do not), and each head ranks min(top_k, n)^2 candidates.
  if (!checkBufferFits("one token's queries", {heads, keyDim}, 4, "f32"))
    return;
  int64_t kept = std::min(spec.topK, n);
  SizeFactor candidates{"top_k", "min(top_k, n)", kept};
  checkBufferFits("one token's product-key candidates",
                  {heads, candidates, candidates}, 4, "f32");
}

FailureOr<LayerSpec>
mlir::moe::parseLayerSpec(llvm::SourceMgr &sourceMgr, unsigned bufferId,
                          const TileOptionTable *tileOptions) {
  if (bufferId == 0)
    bufferId = sourceMgr.getMainFileID();
  return SpecParser(sourceMgr, bufferId, tileOptions).parse();
}
