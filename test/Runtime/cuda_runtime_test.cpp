//===- cuda_runtime_test.cpp - checks of the runtime's CUDA driver calls --===//
//
// Links the static runtime and runs against the driver $MOE_CUDA_DRIVER
// names: a missing path or test/Runtime/fake_cuda_driver.c, which logs the
// driver calls (see cuda-runtime.test). Prints one line per check and
// "FAILED: ..." for every failed expectation; exits 1 if any failed. The
// first argument picks the scenario: `no-driver`, `no-device`, `main`,
// `stress`, `launch-fail`, `alloc-fail`.
//
//===----------------------------------------------------------------------===//

#include "moe-c/moe_runtime.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <pthread.h>
#include <thread>

namespace {
int failures = 0;

void expect(bool ok, const char *what) {
  if (ok)
    return;
  ++failures;
  std::printf("FAILED: %s (last error: %s)\n", what, moe_last_error());
}

void expectStatus(int32_t got, int32_t want, const char *what) {
  if (got == want)
    return;
  ++failures;
  std::printf("FAILED: %s: got %s, want %s (last error: %s)\n", what,
              moe_status_name(got), moe_status_name(want), moe_last_error());
}

// Images as the fake driver recognises them: only the first bytes matter.
const unsigned char kCubin[] = {0x7f, 'E', 'L', 'F', 2, 1, 1, 0};
const unsigned char kFatbin[] = {0x50, 0xED, 0x55, 0xBA, 1, 0, 0, 0};
const char kPtx[] = "// PTX\n.version 8.0\n";
const char kBadImage[] = "not a module";

void *const kStreamA = reinterpret_cast<void *>(0x1000);
void *const kStreamB = reinterpret_cast<void *>(0x2000);

/// One entry point's worth: begin, launch, end; returns end's status.
int32_t launchOnce(const void *image, const char *kernel, int64_t gx,
                   int64_t gy, int64_t gz, int64_t bx, int64_t by, int64_t bz,
                   int32_t smem = 0) {
  int32_t status = moe_rt_cuda_begin(kStreamA, "layer_forward");
  expectStatus(status, MOE_OK, "begin");
  moe_rt_cuda_launch(image, kernel, gx, gy, gz, bx, by, bz, smem, nullptr);
  return moe_rt_cuda_end();
}

int noDriver() {
  moe_clear_error();
  int32_t count = moe_cuda_device_count();
  std::printf("device count: %d\n", count);
  std::printf("device count error: %s: %s\n",
              moe_status_name(moe_last_error_code()), moe_last_error());
  moe_clear_error();
  int32_t status = moe_rt_cuda_begin(nullptr, "layer_forward");
  std::printf("begin: %s: %s\n", moe_status_name(status), moe_last_error());
  // Generated code returns begin's error; launches after it change nothing.
  moe_rt_cuda_launch(kCubin, "gemm", 1, 1, 1, 32, 1, 1, 0, nullptr);
  std::printf("end: %s\n", moe_status_name(moe_rt_cuda_end()));
  std::printf("malloc: %p\n", moe_cuda_malloc(16));
  std::printf("synchronize: %s\n",
              moe_status_name(moe_cuda_synchronize(nullptr)));
  // No pool exists: the pool controls succeed without a driver.
  std::printf("pool: trim %s, reserved %lld, limit %s %lld\n",
              moe_status_name(moe_cuda_trim_scratch()),
              static_cast<long long>(moe_cuda_scratch_reserved()),
              moe_status_name(moe_cuda_set_scratch_cache_limit(1 << 20)),
              static_cast<long long>(moe_cuda_get_scratch_cache_limit()));
  return 0;
}

void sectionLaunches() {
  std::printf("== launches\n");
  float input = 1.0f;
  void *params[] = {&input};
  std::printf("params at %p\n", static_cast<void *>(params));
  expectStatus(moe_rt_cuda_begin(kStreamA, "layer_forward"), MOE_OK, "begin");
  void *scratch = moe_rt_cuda_alloc_scratch(1024, "layer_forward");
  expect(scratch != nullptr, "scratch of 1024 bytes");
  void *empty = moe_rt_cuda_alloc_scratch(0, "layer_forward");
  expect(empty != nullptr, "scratch of 0 bytes is not NULL");
  // The same image and kernel twice: one module load, one function lookup.
  moe_rt_cuda_launch(kCubin, "gemm", 4, 2, 1, 128, 1, 1, 0, params);
  moe_rt_cuda_launch(kCubin, "gemm", 4, 2, 1, 128, 1, 1, 0, params);
  // A second kernel of the same module: a lookup, no load.
  moe_rt_cuda_launch(kCubin, "softmax", 7, 1, 1, 256, 1, 1, 0, params);
  // A kernel name in a buffer the caller then reuses: found by content.
  char name[16];
  std::strcpy(name, "gemm");
  moe_rt_cuda_launch(kCubin, name, 1, 1, 1, 32, 1, 1, 0, params);
  std::strcpy(name, "topk");
  moe_rt_cuda_launch(kCubin, name, 1, 1, 1, 32, 1, 1, 0, params);
  // Other image kinds load their own modules.
  moe_rt_cuda_launch(kFatbin, "gemm", 1, 1, 1, 32, 1, 1, 0, params);
  moe_rt_cuda_launch(kPtx, "gemm", 1, 1, 1, 32, 1, 1, 0, params);
  // More than 48 KiB of shared memory needs the opt-in once per raise.
  moe_rt_cuda_launch(kCubin, "softmax", 1, 1, 1, 32, 1, 1, 49152, params);
  moe_rt_cuda_launch(kCubin, "softmax", 1, 1, 1, 32, 1, 1, 65536, params);
  moe_rt_cuda_launch(kCubin, "softmax", 1, 1, 1, 32, 1, 1, 65536, params);
  moe_rt_cuda_launch(kCubin, "softmax", 1, 1, 1, 32, 1, 1, 50000, params);
  // The largest grid and block the hardware takes.
  moe_rt_cuda_launch(kCubin, "gemm", 2147483647, 65535, 65535, 1024, 1, 1, 0,
                     params);
  moe_rt_cuda_launch(kCubin, "gemm", 1, 1, 1, 16, 1, 64, 0, params);
  moe_rt_cuda_free_scratch(empty);
  moe_rt_cuda_free_scratch(scratch);
  expectStatus(moe_rt_cuda_end(), MOE_OK, "end of the launches");
  std::printf("launches: done\n");
}

void sectionBadImage() {
  std::printf("== bad image\n");
  moe_clear_error();
  expectStatus(moe_rt_cuda_begin(kStreamA, "bad_forward"), MOE_OK, "begin");
  moe_rt_cuda_launch(kBadImage, "broken", 1, 1, 1, 32, 1, 1, 0, nullptr);
  // Skipped: the call already failed.
  moe_rt_cuda_launch(kCubin, "after_broken", 1, 1, 1, 32, 1, 1, 0, nullptr);
  int32_t status = moe_rt_cuda_end();
  std::printf("bad image end: %s: %s\n", moe_status_name(status),
              moe_last_error());
  // The next call starts clean, and the failed load is tried again.
  moe_clear_error();
  status = launchOnce(kCubin, "after_broken", 1, 1, 1, 32, 1, 1);
  std::printf("next call: %s\n", moe_status_name(status));
  std::printf(
      "bad image again: %s\n",
      moe_status_name(launchOnce(kBadImage, "broken", 1, 1, 1, 32, 1, 1)));
}

void sectionLimits() {
  std::printf("== limits\n");
  struct Case {
    const char *what;
    int64_t grid[3];
    int64_t block[3];
    int32_t smem;
  } cases[] = {
      {"grid x 2^31", {2147483648LL, 1, 1}, {32, 1, 1}, 0},
      {"grid y 65536", {1, 65536, 1}, {32, 1, 1}, 0},
      {"grid z 65536", {1, 1, 65536}, {32, 1, 1}, 0},
      {"grid x -1", {-1, 1, 1}, {32, 1, 1}, 0},
      {"block x 1025", {1, 1, 1}, {1025, 1, 1}, 0},
      {"block 32x32x2", {1, 1, 1}, {32, 32, 2}, 0},
      {"block z 65", {1, 1, 1}, {1, 1, 65}, 0},
      {"block y 0", {1, 1, 1}, {32, 0, 1}, 0},
      {"shared -1", {1, 1, 1}, {32, 1, 1}, -1},
  };
  for (const Case &c : cases) {
    moe_clear_error();
    int32_t status = moe_rt_cuda_begin(kStreamA, "layer_forward");
    moe_rt_cuda_launch(kCubin, "gemm", c.grid[0], c.grid[1], c.grid[2],
                       c.block[0], c.block[1], c.block[2], c.smem, nullptr);
    status = moe_rt_cuda_end();
    std::printf("%s: %s\n", c.what, moe_status_name(status));
    expectStatus(status, MOE_ERROR_CUDA, c.what);
  }
  std::printf("message: %s\n", moe_last_error());
  moe_clear_error();
  // Empty grids launch nothing and are no error.
  int32_t status = moe_rt_cuda_begin(kStreamA, "layer_forward");
  moe_rt_cuda_launch(kCubin, "gemm", 0, 1, 1, 32, 1, 1, 0, nullptr);
  moe_rt_cuda_launch(kCubin, "gemm", 5, 0, 1, 32, 1, 1, 0, nullptr);
  moe_rt_cuda_launch(kCubin, "gemm", 5, 1, 0, 32, 1, 1, 0, nullptr);
  status = moe_rt_cuda_end();
  std::printf("zero grids: %s\n", moe_status_name(status));
  // A launch outside a call is a bug of the caller.
  moe_clear_error();
  moe_rt_cuda_launch(kCubin, "gemm", 1, 1, 1, 32, 1, 1, 0, nullptr);
  std::printf("outside a call: %s: %s\n", moe_status_name(moe_rt_cuda_end()),
              moe_last_error());
}

void sectionScratchLimit() {
  std::printf("== scratch limit\n");
  moe_clear_error();
  int64_t previous = moe_set_scratch_limit(100);
  expectStatus(moe_rt_cuda_begin(kStreamA, "big_forward"), MOE_OK, "begin");
  void *within = moe_rt_cuda_alloc_scratch(100, "big_forward");
  expect(within != nullptr, "100 bytes under a limit of 100");
  moe_rt_cuda_free_scratch(within);
  expectStatus(moe_last_error_code(), MOE_OK, "no error under the limit");
  void *over = moe_rt_cuda_alloc_scratch(101, "big_forward");
  expect(over == nullptr, "101 bytes over a limit of 100");
  std::printf("over the limit: %s: %s\n",
              moe_status_name(moe_last_error_code()), moe_last_error());
  // Generated code returns after a failed allocation; end reports it too.
  std::printf("end: %s\n", moe_status_name(moe_rt_cuda_end()));
  moe_set_scratch_limit(previous);
  moe_clear_error();
  expectStatus(moe_rt_cuda_begin(kStreamA, "big_forward"), MOE_OK, "begin");
  expect(moe_rt_cuda_alloc_scratch(-8, "big_forward") == nullptr,
         "negative scratch size");
  std::printf("negative: %s: %s\n", moe_status_name(moe_rt_cuda_end()),
              moe_last_error());
}

/// One call that allocates `bytes` of scratch on stream A and frees it.
void scratchCall(int64_t bytes) {
  expectStatus(moe_rt_cuda_begin(kStreamA, "pool_forward"), MOE_OK, "begin");
  void *scratch = moe_rt_cuda_alloc_scratch(bytes, "pool_forward");
  expect(scratch != nullptr, "scratch from the pool");
  moe_rt_cuda_free_scratch(scratch);
  expectStatus(moe_rt_cuda_end(), MOE_OK, "end");
}

void printReserved(const char *when) {
  std::printf("reserved %s: %lld\n", when,
              static_cast<long long>(moe_cuda_scratch_reserved()));
}

/// The runtime's pool per device keeps freed scratch up to the cache limit.
void sectionScratchPool(const char *driverPath) {
  std::printf("== scratch pool\n");
  moe_clear_error();
  std::printf("cache limit: %lld\n",
              static_cast<long long>(moe_cuda_get_scratch_cache_limit()));
  // The earlier sections' calls took 1024 bytes at most.
  printReserved("after the calls");
  expectStatus(moe_cuda_synchronize(kStreamA), MOE_OK, "synchronize");
  printReserved("after a synchronisation");
  scratchCall(4096);
  scratchCall(2048); // reuses the cached 4096
  printReserved("after 4096 and 2048");
  expectStatus(moe_cuda_set_scratch_cache_limit(1000), MOE_OK, "limit 1000");
  std::printf("cache limit: %lld\n",
              static_cast<long long>(moe_cuda_get_scratch_cache_limit()));
  printReserved("under a limit of 1000, before a synchronisation");
  expectStatus(moe_cuda_synchronize(kStreamA), MOE_OK, "synchronize");
  printReserved("under a limit of 1000, after a synchronisation");
  expectStatus(moe_cuda_trim_scratch(), MOE_OK, "trim");
  printReserved("after a trim");
  expectStatus(moe_cuda_set_scratch_cache_limit(-5), MOE_OK, "no limit");
  std::printf("cache limit: %lld\n",
              static_cast<long long>(moe_cuda_get_scratch_cache_limit()));

  // Another device gets a pool of its own, with the limit in effect.
  void *driver = dlopen(driverPath, RTLD_NOW | RTLD_LOCAL);
  auto retain = reinterpret_cast<int (*)(void **, int)>(
      driver ? dlsym(driver, "cuDevicePrimaryCtxRetain") : nullptr);
  auto setCurrent = reinterpret_cast<int (*)(void *)>(
      driver ? dlsym(driver, "cuCtxSetCurrent") : nullptr);
  expect(retain && setCurrent, "the fake driver's context calls");
  if (!retain || !setCurrent)
    return;
  std::thread t([&] {
    void *context = nullptr;
    expect(retain(&context, 1) == 0, "device 1's primary context");
    setCurrent(context);
    scratchCall(512);
  });
  t.join();
  printReserved("with device 1's 512");
}

void sectionMemory() {
  std::printf("== memory\n");
  moe_clear_error();
  std::printf("device count: %d\n", moe_cuda_device_count());
  float host[16];
  for (int i = 0; i < 16; ++i)
    host[i] = static_cast<float>(i) * 0.5f;
  void *device = moe_cuda_malloc(sizeof(host));
  expect(device != nullptr, "moe_cuda_malloc");
  expectStatus(moe_cuda_memcpy_to_device(device, host, sizeof(host), kStreamB),
               MOE_OK, "memcpy to device");
  float back[16] = {};
  expectStatus(moe_cuda_memcpy_to_host(back, device, sizeof(back), kStreamB),
               MOE_OK, "memcpy to host");
  expectStatus(moe_cuda_synchronize(kStreamB), MOE_OK, "synchronize");
  expect(std::memcmp(host, back, sizeof(host)) == 0, "round trip");
  moe_cuda_free(device);
  void *none = moe_cuda_malloc(0);
  expect(none != nullptr, "moe_cuda_malloc(0) is not NULL");
  moe_cuda_free(none);
  moe_cuda_free(nullptr);
  expectStatus(moe_cuda_memcpy_to_device(nullptr, host, 4, nullptr),
               MOE_ERROR_NULL_ARGUMENT, "memcpy to NULL");
  expectStatus(moe_cuda_memcpy_to_host(back, device, -1, nullptr),
               MOE_ERROR_BAD_SIZE, "memcpy of -1 bytes");
  expectStatus(moe_cuda_memcpy_to_host(nullptr, nullptr, 0, nullptr), MOE_OK,
               "memcpy of 0 bytes");
  expect(moe_cuda_malloc(-1) == nullptr, "moe_cuda_malloc(-1)");
  std::printf("memory: round trip ok\n");
}

/// Two threads in calls of their own at once: one fails, one does not.
void sectionThreads() {
  std::printf("== threads\n");
  pthread_barrier_t barrier;
  pthread_barrier_init(&barrier, nullptr, 2);
  int32_t statusA = -1, statusB = -1;
  char messageA[512] = "", messageB[512] = "";
  std::thread a([&] {
    moe_clear_error();
    expectStatus(moe_rt_cuda_begin(kStreamA, "thread_a"), MOE_OK, "begin a");
    pthread_barrier_wait(&barrier);
    moe_rt_cuda_launch(kBadImage, "kernel_a", 1, 1, 1, 32, 1, 1, 0, nullptr);
    pthread_barrier_wait(&barrier);
    moe_rt_cuda_launch(kCubin, "kernel_a", 1, 1, 1, 32, 1, 1, 0, nullptr);
    pthread_barrier_wait(&barrier);
    statusA = moe_rt_cuda_end();
    std::snprintf(messageA, sizeof(messageA), "%s", moe_last_error());
  });
  std::thread b([&] {
    moe_clear_error();
    expectStatus(moe_rt_cuda_begin(kStreamB, "thread_b"), MOE_OK, "begin b");
    pthread_barrier_wait(&barrier);
    moe_rt_cuda_launch(kCubin, "kernel_b", 2, 1, 1, 32, 1, 1, 0, nullptr);
    pthread_barrier_wait(&barrier);
    moe_rt_cuda_launch(kCubin, "kernel_b", 3, 1, 1, 32, 1, 1, 0, nullptr);
    pthread_barrier_wait(&barrier);
    statusB = moe_rt_cuda_end();
    std::snprintf(messageB, sizeof(messageB), "%s", moe_last_error());
  });
  a.join();
  b.join();
  pthread_barrier_destroy(&barrier);
  std::printf("thread a: %s: %s\n", moe_status_name(statusA), messageA);
  std::printf("thread b: %s: '%s'\n", moe_status_name(statusB), messageB);
}

/// A framework's context, current before the call, is the one used.
void sectionFrameworkContext(const char *driverPath) {
  std::printf("== framework context\n");
  void *driver = dlopen(driverPath, RTLD_NOW | RTLD_LOCAL);
  auto setCurrent = reinterpret_cast<int (*)(void *)>(
      driver ? dlsym(driver, "cuCtxSetCurrent") : nullptr);
  expect(setCurrent != nullptr, "the fake driver's cuCtxSetCurrent");
  if (!setCurrent)
    return;
  static char frameworkContext;
  std::printf("framework context %p\n", static_cast<void *>(&frameworkContext));
  std::thread t([&] {
    setCurrent(&frameworkContext);
    int32_t status = launchOnce(kCubin, "gemm", 1, 1, 1, 32, 1, 1);
    std::printf("framework call: %s\n", moe_status_name(status));
  });
  t.join();
}

int mainScenario() {
  std::printf("== begin\n");
  int32_t status = moe_rt_cuda_begin(kStreamA, "layer_forward");
  std::printf("begin: %s\n", moe_status_name(status));
  moe_rt_cuda_end();
  sectionLaunches();
  sectionBadImage();
  sectionLimits();
  sectionScratchLimit();
  sectionScratchPool(std::getenv("MOE_CUDA_DRIVER"));
  sectionMemory();
  sectionThreads();
  sectionFrameworkContext(std::getenv("MOE_CUDA_DRIVER"));
  return 0;
}

/// Threads launching many kernels of many images at once: the caches grow
/// while other threads look up. The log shows one load per image and one
/// lookup per kernel of each image.
int stress() {
  constexpr int kImages = 40, kKernels = 20, kThreads = 4;
  static unsigned char images[kImages][16];
  for (auto &image : images)
    std::memcpy(image, kCubin, sizeof(kCubin));
  int32_t statuses[kThreads];
  std::thread threads[kThreads];
  for (int t = 0; t < kThreads; ++t)
    threads[t] = std::thread([t, &statuses] {
      int32_t status = moe_rt_cuda_begin(kStreamA, "stress_forward");
      for (int round = 0; round < 2; ++round)
        for (int i = 0; i < kImages; ++i)
          for (int k = 0; k < kKernels; ++k) {
            // Each thread walks the images in its own order.
            int image = (i + t * 7) % kImages;
            char kernel[32];
            std::snprintf(kernel, sizeof(kernel), "kernel_%d_%d", image, k);
            moe_rt_cuda_launch(images[image], kernel, 1, 1, 1, 32, 1, 1, 0,
                               nullptr);
          }
      int32_t end = moe_rt_cuda_end();
      statuses[t] = status != MOE_OK ? status : end;
    });
  for (std::thread &thread : threads)
    thread.join();
  for (int32_t status : statuses)
    expectStatus(status, MOE_OK, "stress call");
  std::printf("stress: %d threads, %d launches each\n", kThreads,
              2 * kImages * kKernels);
  return 0;
}

int launchFail() {
  int32_t status = moe_rt_cuda_begin(kStreamA, "layer_forward");
  expectStatus(status, MOE_OK, "begin");
  moe_rt_cuda_launch(kCubin, "expert_gemm", 8, 1, 1, 128, 1, 1, 0, nullptr);
  moe_rt_cuda_launch(kCubin, "combine", 8, 1, 1, 128, 1, 1, 0, nullptr);
  status = moe_rt_cuda_end();
  std::printf("end: %s: %s\n", moe_status_name(status), moe_last_error());
  return 0;
}

int allocFail() {
  int32_t status = moe_rt_cuda_begin(kStreamA, "layer_forward");
  expectStatus(status, MOE_OK, "begin");
  void *scratch = moe_rt_cuda_alloc_scratch(4096, "layer_forward");
  std::printf("scratch: %s: %s: %s\n", scratch ? "allocated" : "NULL",
              moe_status_name(moe_last_error_code()), moe_last_error());
  std::printf("end: %s\n", moe_status_name(moe_rt_cuda_end()));
  if (scratch)
    moe_rt_cuda_free_scratch(scratch); // after end, as generated code does
  moe_clear_error();
  void *buffer = moe_cuda_malloc(4096);
  std::printf("malloc: %s: %s\n", buffer ? "allocated" : "NULL",
              moe_last_error());
  if (buffer)
    moe_cuda_free(buffer);
  return 0;
}
} // namespace

int main(int argc, char **argv) {
  // Interleaves with the fake driver's log on stderr in call order.
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  const char *scenario = argc > 1 ? argv[1] : "main";
  if (std::strcmp(scenario, "no-driver") == 0 ||
      std::strcmp(scenario, "no-device") == 0)
    noDriver();
  else if (std::strcmp(scenario, "main") == 0)
    mainScenario();
  else if (std::strcmp(scenario, "stress") == 0)
    stress();
  else if (std::strcmp(scenario, "launch-fail") == 0)
    launchFail();
  else if (std::strcmp(scenario, "alloc-fail") == 0)
    allocFail();
  else {
    std::printf("unknown scenario %s\n", scenario);
    return 2;
  }
  if (failures)
    std::printf("FAILED: %d checks\n", failures);
  else
    std::printf("PASS\n");
  return failures ? 1 : 0;
}
