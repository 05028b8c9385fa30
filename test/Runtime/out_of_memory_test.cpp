//===- out_of_memory_test.cpp - a layer's calls when scratch memory fails -===//
//
// Loads a shared library of examples/app/tiny_moe.yaml (moe-compile
// --emit=shared, which embeds the runtime) and calls its entry points with
// the runtime's scratch limit (moe_set_scratch_limit) below and at what each
// call needs: below, the call must return MOE_ERROR_OUT_OF_MEMORY with a
// message naming the size and leave every output as it was; at the limit and
// without one, it must succeed with the same bits. Prints one line per check
// for FileCheck (see out-of-memory.test), "FAILED: ..." for every failed
// expectation, and exits 1 if any failed.
//
//===----------------------------------------------------------------------===//

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <string>
#include <thread>
#include <vector>

namespace {
// tiny_moe.yaml: d_model 64, 8 SwiGLU experts of width 128, top-2.
constexpr int64_t kDModel = 64, kExperts = 8, kHidden = 128, kTopK = 2;
constexpr int32_t kOutOfMemory = 3; // MOE_ERROR_OUT_OF_MEMORY

using Forward = int32_t (*)(int64_t, int64_t, const float *, const float *,
                            const float *, const float *, const float *,
                            float *, int32_t *, float *, int32_t *, int32_t *);
using Route = int32_t (*)(int64_t, int64_t, const float *, const float *,
                          int32_t *, float *);
using PackWeights = int32_t (*)(const float *, const float *, const float *,
                                float *, float *, float *);

struct Runtime {
  int64_t (*setLimit)(int64_t);
  const char *(*lastError)();
  int32_t (*lastErrorCode)();
  void (*clearError)();
};

int failures = 0;

void fail(const std::string &what) {
  ++failures;
  std::printf("FAILED: %s\n", what.c_str());
}

void *symbol(void *lib, const char *name) {
  void *sym = dlsym(lib, name);
  if (!sym) {
    std::printf("FAILED: no symbol %s\n", name);
    std::exit(1);
  }
  return sym;
}

std::vector<float> randomFloats(size_t n, unsigned &state) {
  std::vector<float> v(n);
  for (float &x : v) {
    state = state * 1664525u + 1013904223u;
    x = static_cast<float>(state >> 8) / static_cast<float>(1u << 24) - 0.5f;
  }
  return v;
}

/// Every output of one call, filled with a pattern no kernel writes.
struct Outputs {
  explicit Outputs(int64_t tokens)
      : out(tokens * kDModel), topkIds(tokens * kTopK),
        topkWeights(tokens * kTopK), expertCounts(kExperts), dropped(1) {
    fill();
  }
  void fill() {
    for (auto *v : {&out, &topkWeights})
      std::memset(v->data(), 0xA5, v->size() * sizeof(float));
    for (auto *v : {&topkIds, &expertCounts, &dropped})
      std::memset(v->data(), 0xA5, v->size() * sizeof(int32_t));
  }
  bool untouched() const {
    auto allA5 = [](const void *data, size_t bytes) {
      const auto *p = static_cast<const unsigned char *>(data);
      for (size_t i = 0; i < bytes; ++i)
        if (p[i] != 0xA5)
          return false;
      return true;
    };
    return allA5(out.data(), out.size() * 4) &&
           allA5(topkIds.data(), topkIds.size() * 4) &&
           allA5(topkWeights.data(), topkWeights.size() * 4) &&
           allA5(expertCounts.data(), expertCounts.size() * 4) &&
           allA5(dropped.data(), dropped.size() * 4);
  }
  bool operator==(const Outputs &o) const {
    return std::memcmp(out.data(), o.out.data(), out.size() * 4) == 0 &&
           topkIds == o.topkIds &&
           std::memcmp(topkWeights.data(), o.topkWeights.data(),
                       topkWeights.size() * 4) == 0 &&
           expertCounts == o.expertCounts && dropped == o.dropped;
  }
  std::vector<float> out;
  std::vector<int32_t> topkIds;
  std::vector<float> topkWeights;
  std::vector<int32_t> expertCounts;
  std::vector<int32_t> dropped;
};

/// The scratch size named by an out-of-memory message, or -1.
int64_t sizeInMessage(const char *message) {
  const char *at = std::strstr(message, "allocating ");
  if (!at)
    return -1;
  return std::strtoll(at + std::strlen("allocating "), nullptr, 10);
}

/// Calls `call(outputs)` for `tokens` with a limit of 0, then one byte below
/// the size the failure named, then at it, then without a limit.
template <typename Call>
void checkEntryPoint(const char *name, int64_t tokens, const Runtime &rt,
                     Call call) {
  std::string where =
      std::string(name) + ", " + std::to_string(tokens) + " tokens";
  rt.setLimit(0);
  rt.clearError();
  Outputs first(tokens);
  int32_t status = call(first);
  const char *message = rt.lastError();
  int64_t needed = sizeInMessage(message);
  if (status != kOutOfMemory || rt.lastErrorCode() != kOutOfMemory)
    fail(where + ": status " + std::to_string(status) +
         " with a limit of 0, want MOE_ERROR_OUT_OF_MEMORY");
  if (!first.untouched())
    fail(where + ": an output was written before running out of memory");
  if (needed <= 0)
    fail(where + ": no size in the message '" + message + "'");
  std::printf("%s: limit 0: %s\n", where.c_str(), message);

  rt.setLimit(needed - 1);
  rt.clearError();
  Outputs below(tokens);
  status = call(below);
  if (status != kOutOfMemory || sizeInMessage(rt.lastError()) != needed)
    fail(where + ": limit one byte short: status " + std::to_string(status) +
         ", message '" + rt.lastError() + "'");
  if (!below.untouched())
    fail(where + ": an output was written with the limit one byte short");

  // One allocation of exactly that size is all the call takes.
  rt.setLimit(needed);
  rt.clearError();
  Outputs at(tokens);
  status = call(at);
  if (status != 0)
    fail(where + ": status " + std::to_string(status) +
         " at a limit of the named size: " + rt.lastError());

  rt.setLimit(-1);
  Outputs unlimited(tokens);
  status = call(unlimited);
  if (status != 0)
    fail(where + ": status " + std::to_string(status) + " without a limit");
  if (!(at == unlimited))
    fail(where + ": the results at the limit differ from those without one");
  if (unlimited.untouched())
    fail(where + ": the call without a limit wrote nothing");
  std::printf("%s: %" PRId64 " bytes: ok\n", where.c_str(), needed);
}
} // namespace

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <tiny_moe.so>\n", argv[0]);
    return 2;
  }
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    std::printf("FAILED: dlopen: %s\n", dlerror());
    return 1;
  }
  Runtime rt;
  rt.setLimit = reinterpret_cast<int64_t (*)(int64_t)>(
      symbol(lib, "moe_set_scratch_limit"));
  rt.lastError =
      reinterpret_cast<const char *(*)()>(symbol(lib, "moe_last_error"));
  rt.lastErrorCode =
      reinterpret_cast<int32_t (*)()>(symbol(lib, "moe_last_error_code"));
  rt.clearError = reinterpret_cast<void (*)()>(symbol(lib, "moe_clear_error"));
  auto forward = reinterpret_cast<Forward>(symbol(lib, "tiny_moe_forward"));
  auto forwardPacked =
      reinterpret_cast<Forward>(dlsym(lib, "tiny_moe_forward_packed"));
  auto packWeights =
      reinterpret_cast<PackWeights>(dlsym(lib, "tiny_moe_pack_weights"));
  auto route = reinterpret_cast<Route>(dlsym(lib, "tiny_moe_route"));

  unsigned state = 7;
  std::vector<float> gate = randomFloats(kExperts * kDModel, state);
  std::vector<float> w1 = randomFloats(kExperts * kHidden * kDModel, state);
  std::vector<float> w3 = randomFloats(kExperts * kHidden * kDModel, state);
  std::vector<float> w2 = randomFloats(kExperts * kDModel * kHidden, state);
  // Panel layout: at most one column tile of padding per weight.
  std::vector<float> w1p(2 * w1.size()), w3p(2 * w3.size()), w2p(2 * w2.size());
  if (packWeights && packWeights(w1.data(), w3.data(), w2.data(), w1p.data(),
                                 w3p.data(), w2p.data()) != 0)
    fail("tiny_moe_pack_weights failed");

  for (int64_t tokens : {1, 37, 256}) {
    std::vector<float> x = randomFloats(tokens * kDModel, state);
    checkEntryPoint("tiny_moe_forward", tokens, rt, [&](Outputs &o) {
      return forward(tokens, kDModel, x.data(), gate.data(), w1.data(),
                     w3.data(), w2.data(), o.out.data(), o.topkIds.data(),
                     o.topkWeights.data(), o.expertCounts.data(),
                     o.dropped.data());
    });
    if (forwardPacked)
      checkEntryPoint("tiny_moe_forward_packed", tokens, rt, [&](Outputs &o) {
        return forwardPacked(tokens, kDModel, x.data(), gate.data(), w1p.data(),
                             w3p.data(), w2p.data(), o.out.data(),
                             o.topkIds.data(), o.topkWeights.data(),
                             o.expertCounts.data(), o.dropped.data());
      });
    if (route)
      checkEntryPoint("tiny_moe_route", tokens, rt, [&](Outputs &o) {
        // The other outputs stay untouched: route writes only these two.
        return route(tokens, kDModel, x.data(), gate.data(), o.topkIds.data(),
                     o.topkWeights.data());
      });
  }

  // The limit holds for kernels on every thread, and each thread gets its
  // own error record.
  {
    const int64_t tokens = 16;
    std::vector<float> x = randomFloats(tokens * kDModel, state);
    rt.setLimit(0);
    std::vector<std::thread> threads;
    std::vector<int32_t> statuses(4), codes(4);
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&, t] {
        Outputs o(tokens);
        statuses[t] = forward(tokens, kDModel, x.data(), gate.data(), w1.data(),
                              w3.data(), w2.data(), o.out.data(),
                              o.topkIds.data(), o.topkWeights.data(),
                              o.expertCounts.data(), o.dropped.data());
        codes[t] = o.untouched() ? rt.lastErrorCode() : -1;
      });
    for (std::thread &t : threads)
      t.join();
    rt.setLimit(-1);
    for (int t = 0; t < 4; ++t)
      if (statuses[t] != kOutOfMemory || codes[t] != kOutOfMemory)
        fail("thread " + std::to_string(t) + ": status " +
             std::to_string(statuses[t]) + ", code " +
             std::to_string(codes[t]));
    std::printf("threads: ok\n");
  }

  std::printf(failures ? "FAIL\n" : "PASS\n");
  return failures ? 1 : 0;
}
