//===- CUDALaunch.cpp - kernel launches of generated --target=cuda code ---===//
//
// A generated entry point runs moe_rt_cuda_begin, its scratch allocations,
// one moe_rt_cuda_launch per kernel, the frees and moe_rt_cuda_end. The
// generated code has no branches between the launches, so a failure is kept
// in the calling thread's call state: the first error is recorded (with
// moe_rt_fail) and every later launch of the call is skipped until end
// returns it.
//
// Modules are loaded on first use and cached per (context, image address),
// functions per (module, kernel name), in two open-addressing tables under
// one mutex: pthreads and malloc only, as in ThreadPool.cpp (the archive is
// linked into layer libraries without libstdc++).
//
//===----------------------------------------------------------------------===//

#include "CUDADriver.h"

#include "moe-c/moe_runtime.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <pthread.h>

using namespace moe::cuda;

namespace {
/// The call in progress on this thread, between moe_rt_cuda_begin and
/// moe_rt_cuda_end.
struct CallState {
  const Driver *driver = nullptr;
  CUcontext context = nullptr;
  CUstream stream = nullptr;
  // MOE_OK, or the code of the call's first error.
  int32_t status = MOE_OK;
  // Set by a successful begin; launches outside a call are errors.
  bool active = false;
  // A copy: messages of later failures name the entry point.
  char entryPoint[128] = "";
};
thread_local CallState call;

// Hardware limits of every GPU since compute capability 3.0.
constexpr int64_t kMaxGridX = (int64_t{1} << 31) - 1;
constexpr int64_t kMaxGridYZ = 65535;
constexpr int64_t kMaxBlockXY = 1024;
constexpr int64_t kMaxBlockZ = 64;
constexpr int64_t kMaxBlockThreads = 1024;
// Above this a kernel must opt in to dynamic shared memory.
constexpr int32_t kDefaultSharedLimit = 48 * 1024;

/// Records the first error of the current call (later ones are consequences)
/// and returns its code.
int32_t recordCallError(int32_t code) {
  if (call.status == MOE_OK)
    call.status = code;
  return code;
}

uint64_t mixBits(uint64_t x) {
  // splitmix64's finaliser: pointers differ in few bits.
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t hashPointers(const void *a, const void *b) {
  return mixBits(reinterpret_cast<uintptr_t>(a) * 31 +
                 mixBits(reinterpret_cast<uintptr_t>(b)));
}

uint64_t hashName(const void *module, const char *name) {
  uint64_t hash = 0xcbf29ce484222325ULL; // FNV-1a
  for (const char *c = name; *c; ++c)
    hash = (hash ^ static_cast<unsigned char>(*c)) * 0x100000001b3ULL;
  return hashPointers(module, reinterpret_cast<const void *>(hash));
}

struct ModuleEntry {
  uint64_t hash;
  CUcontext context;
  const void *image;
  CUmodule module; // null: empty slot
  bool occupied() const { return module != nullptr; }
};

struct FunctionEntry {
  uint64_t hash;
  CUmodule module;
  char *name; // a malloc'ed copy; null: empty slot
  CUfunction function;
  // The dynamic shared memory the function is allowed so far.
  int32_t sharedLimit;
  bool occupied() const { return name != nullptr; }
};

/// Linear probing over a power-of-two array that never shrinks.
template <typename Entry> struct HashTable {
  Entry *slots = nullptr;
  size_t capacity = 0;
  size_t used = 0;

  /// The slot holding a key with `hash` for which matches(entry) holds, or
  /// the empty slot where it belongs; null while the table is empty.
  template <typename Match> Entry *find(uint64_t hash, Match matches) {
    if (!capacity)
      return nullptr;
    for (size_t i = hash & (capacity - 1);; i = (i + 1) & (capacity - 1)) {
      Entry &entry = slots[i];
      if (!entry.occupied() || (entry.hash == hash && matches(entry)))
        return &entry;
    }
  }

  /// Makes room for one more entry, keeping the load at most 1/2 so that
  /// probes stay short and an empty slot always exists. False when out of
  /// host memory.
  bool reserveOneMore() {
    if (2 * (used + 1) <= capacity)
      return true;
    size_t newCapacity = capacity ? 2 * capacity : 64;
    auto *newSlots =
        static_cast<Entry *>(std::calloc(newCapacity, sizeof(Entry)));
    if (!newSlots)
      return false;
    for (size_t i = 0; i < capacity; ++i) {
      if (!slots[i].occupied())
        continue;
      size_t j = slots[i].hash & (newCapacity - 1);
      while (newSlots[j].occupied())
        j = (j + 1) & (newCapacity - 1);
      newSlots[j] = slots[i];
    }
    std::free(slots);
    slots = newSlots;
    capacity = newCapacity;
    return true;
  }
};

pthread_mutex_t cacheMutex = PTHREAD_MUTEX_INITIALIZER;
HashTable<ModuleEntry> modules;
HashTable<FunctionEntry> functions;

/// The module of `image` in the current context, loaded on first use. Called
/// under cacheMutex; null after recording an error.
CUmodule findModule(const void *image, const char *kernel) {
  uint64_t hash = hashPointers(call.context, image);
  auto sameKey = [&](const ModuleEntry &entry) {
    return entry.context == call.context && entry.image == image;
  };
  if (ModuleEntry *entry = modules.find(hash, sameKey);
      entry && entry->occupied())
    return entry->module;
  char detail[192];
  std::snprintf(detail, sizeof(detail), " for kernel %s", kernel);
  if (!modules.reserveOneMore()) {
    recordCallError(MOE_ERROR_OUT_OF_MEMORY);
    char message[512];
    std::snprintf(message, sizeof(message),
                  "%s: out of host memory caching the module%s",
                  call.entryPoint, detail);
    moe_rt_fail(MOE_ERROR_OUT_OF_MEMORY, message);
    return nullptr;
  }
  CUmodule module = nullptr;
  CUresult result = call.driver->cuModuleLoadData(&module, image);
  if (result != CUDA_SUCCESS || !module) {
    recordCallError(MOE_ERROR_CUDA);
    failWithCUDAError(call.entryPoint, result, "cuModuleLoadData", detail);
    return nullptr;
  }
  ModuleEntry *slot = modules.find(hash, sameKey);
  *slot = {hash, call.context, image, module};
  ++modules.used;
  return module;
}

/// The function `kernel` of `image`, loaded on first use and allowed
/// `sharedBytes` of dynamic shared memory. Called under cacheMutex; null
/// after recording an error.
CUfunction findFunction(const void *image, const char *kernel,
                        int32_t sharedBytes) {
  CUmodule module = findModule(image, kernel);
  if (!module)
    return nullptr;
  uint64_t hash = hashName(module, kernel);
  auto sameKey = [&](const FunctionEntry &entry) {
    return entry.module == module && std::strcmp(entry.name, kernel) == 0;
  };
  FunctionEntry *entry = functions.find(hash, sameKey);
  char detail[192];
  std::snprintf(detail, sizeof(detail), " for kernel %s", kernel);
  if (!entry || !entry->occupied()) {
    size_t length = std::strlen(kernel);
    char *name = static_cast<char *>(std::malloc(length + 1));
    if (!name || !functions.reserveOneMore()) {
      std::free(name);
      recordCallError(MOE_ERROR_OUT_OF_MEMORY);
      char message[512];
      std::snprintf(message, sizeof(message),
                    "%s: out of host memory caching the function%s",
                    call.entryPoint, detail);
      moe_rt_fail(MOE_ERROR_OUT_OF_MEMORY, message);
      return nullptr;
    }
    std::memcpy(name, kernel, length + 1);
    CUfunction function = nullptr;
    CUresult result =
        call.driver->cuModuleGetFunction(&function, module, kernel);
    if (result != CUDA_SUCCESS || !function) {
      std::free(name);
      recordCallError(MOE_ERROR_CUDA);
      failWithCUDAError(call.entryPoint, result, "cuModuleGetFunction", detail);
      return nullptr;
    }
    entry = functions.find(hash, sameKey);
    *entry = {hash, module, name, function, kDefaultSharedLimit};
    ++functions.used;
  }
  if (sharedBytes > entry->sharedLimit) {
    CUresult result = call.driver->cuFuncSetAttribute(
        entry->function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        sharedBytes);
    if (result != CUDA_SUCCESS) {
      recordCallError(MOE_ERROR_CUDA);
      failWithCUDAError(call.entryPoint, result,
                        "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)",
                        detail);
      return nullptr;
    }
    entry->sharedLimit = sharedBytes;
  }
  return entry->function;
}

/// Records MOE_ERROR_CUDA with "<entry point>: <what>" for the current call.
void failCall(const char *what) {
  char message[512];
  std::snprintf(message, sizeof(message), "%s: %s", call.entryPoint, what);
  moe_rt_fail(recordCallError(MOE_ERROR_CUDA), message);
}

void copyEntryPoint(const char *entryPoint) {
  std::snprintf(call.entryPoint, sizeof(call.entryPoint), "%s",
                entryPoint ? entryPoint : "(unnamed entry point)");
}
} // namespace

extern "C" int32_t moe_rt_cuda_begin(void *stream, const char *entryPoint) {
  copyEntryPoint(entryPoint);
  call.active = false;
  call.status = MOE_OK;
  call.stream = static_cast<CUstream>(stream);
  CUcontext context = nullptr;
  const Driver *driver = acquireContext(call.entryPoint, &context);
  if (!driver)
    return recordCallError(MOE_ERROR_CUDA);
  call.driver = driver;
  call.context = context;
  call.active = true;
  return MOE_OK;
}

extern "C" void moe_rt_cuda_launch(const void *image, const char *kernel,
                                   int64_t gridX, int64_t gridY, int64_t gridZ,
                                   int64_t blockX, int64_t blockY,
                                   int64_t blockZ, int32_t sharedBytes,
                                   void **params) {
  if (!kernel)
    kernel = "(unnamed kernel)";
  char what[384];
  if (!call.active) {
    // A failed begin recorded its error already.
    if (call.status == MOE_OK) {
      std::snprintf(what, sizeof(what),
                    "moe_rt_cuda_launch of kernel %s outside "
                    "moe_rt_cuda_begin/moe_rt_cuda_end",
                    kernel);
      moe_rt_fail(recordCallError(MOE_ERROR_CUDA), what);
    }
    return;
  }
  if (call.status != MOE_OK)
    return;
  bool gridOk = gridX >= 0 && gridX <= kMaxGridX && gridY >= 0 &&
                gridY <= kMaxGridYZ && gridZ >= 0 && gridZ <= kMaxGridYZ;
  bool blockOk = blockX >= 1 && blockX <= kMaxBlockXY && blockY >= 1 &&
                 blockY <= kMaxBlockXY && blockZ >= 1 && blockZ <= kMaxBlockZ &&
                 blockX * blockY * blockZ <= kMaxBlockThreads;
  if (!gridOk || !blockOk || sharedBytes < 0) {
    std::snprintf(
        what, sizeof(what),
        "kernel %s: launch of grid (%lld, %lld, %lld), block (%lld, %lld, "
        "%lld), %d bytes of shared memory is outside the limits (grid x < "
        "2^31, y and z < 65536; block x and y <= 1024, z <= 64, x*y*z <= "
        "1024, each >= 1)",
        kernel, static_cast<long long>(gridX), static_cast<long long>(gridY),
        static_cast<long long>(gridZ), static_cast<long long>(blockX),
        static_cast<long long>(blockY), static_cast<long long>(blockZ),
        sharedBytes);
    failCall(what);
    return;
  }
  // No tokens routed to an expert, or an empty batch: nothing to do.
  if (gridX == 0 || gridY == 0 || gridZ == 0)
    return;
  if (!image) {
    std::snprintf(what, sizeof(what), "kernel %s: no module image", kernel);
    failCall(what);
    return;
  }
  pthread_mutex_lock(&cacheMutex);
  CUfunction function = findFunction(image, kernel, sharedBytes);
  pthread_mutex_unlock(&cacheMutex);
  if (!function)
    return;
  CUresult result = call.driver->cuLaunchKernel(
      function, static_cast<unsigned>(gridX), static_cast<unsigned>(gridY),
      static_cast<unsigned>(gridZ), static_cast<unsigned>(blockX),
      static_cast<unsigned>(blockY), static_cast<unsigned>(blockZ),
      static_cast<unsigned>(sharedBytes), call.stream, params, nullptr);
  if (result != CUDA_SUCCESS) {
    recordCallError(MOE_ERROR_CUDA);
    std::snprintf(what, sizeof(what), " of kernel %s", kernel);
    failWithCUDAError(call.entryPoint, result, "cuLaunchKernel", what);
  }
}

extern "C" int32_t moe_rt_cuda_end(void) {
  int32_t status = call.status;
  call.status = MOE_OK;
  call.active = false;
  return status;
}

extern "C" void *moe_rt_cuda_alloc_scratch(int64_t size,
                                           const char *entryPoint) {
  if (!entryPoint)
    entryPoint = call.entryPoint;
  char message[512];
  int64_t limit = moe_get_scratch_limit();
  if (size < 0 || (limit >= 0 && size > limit)) {
    if (size < 0)
      // The sizes overflowed 64 bits: more than any device holds.
      std::snprintf(message, sizeof(message),
                    "%s: out of memory: the device scratch memory needed "
                    "exceeds 2^63 bytes",
                    entryPoint);
    else
      std::snprintf(message, sizeof(message),
                    "%s: out of memory allocating %lld bytes of device "
                    "scratch memory (over the limit of %lld bytes set by "
                    "moe_set_scratch_limit)",
                    entryPoint, static_cast<long long>(size),
                    static_cast<long long>(limit));
    moe_rt_fail(recordCallError(MOE_ERROR_OUT_OF_MEMORY), message);
    return nullptr;
  }
  if (size == 0)
    return zeroSizeAllocation();
  if (!call.active) {
    std::snprintf(message, sizeof(message),
                  "%s: moe_rt_cuda_alloc_scratch outside "
                  "moe_rt_cuda_begin/moe_rt_cuda_end",
                  entryPoint);
    moe_rt_fail(recordCallError(MOE_ERROR_CUDA), message);
    return nullptr;
  }
  CUdeviceptr ptr = 0;
  const char *failedCall = "cuMemAllocFromPoolAsync";
  CUresult result = allocateScratch(
      call.driver, &ptr, static_cast<size_t>(size), call.stream, &failedCall);
  if (result == CUDA_SUCCESS)
    return reinterpret_cast<void *>(static_cast<uintptr_t>(ptr));
  char description[256];
  describeCUDAError(result, description, sizeof(description));
  if (result == CUDA_ERROR_OUT_OF_MEMORY) {
    std::snprintf(message, sizeof(message),
                  "%s: out of memory allocating %lld bytes of device scratch "
                  "memory (%s in %s)",
                  entryPoint, static_cast<long long>(size), description,
                  failedCall);
    moe_rt_fail(recordCallError(MOE_ERROR_OUT_OF_MEMORY), message);
  } else {
    std::snprintf(message, sizeof(message),
                  "%s: CUDA error %s in %s of %lld bytes of device scratch "
                  "memory",
                  entryPoint, description, failedCall,
                  static_cast<long long>(size));
    moe_rt_fail(recordCallError(MOE_ERROR_CUDA), message);
  }
  return nullptr;
}

extern "C" void moe_rt_cuda_free_scratch(void *ptr) {
  if (!ptr || ptr == zeroSizeAllocation())
    return;
  // Only a call's scratch is freed here, and the driver is loaded then; a
  // free after end still orders on the call's stream.
  if (!call.driver)
    return;
  CUresult result = call.driver->cuMemFreeAsync(
      static_cast<CUdeviceptr>(reinterpret_cast<uintptr_t>(ptr)), call.stream);
  if (result != CUDA_SUCCESS && call.active) {
    recordCallError(MOE_ERROR_CUDA);
    failWithCUDAError(call.entryPoint, result, "cuMemFreeAsync");
  }
}
