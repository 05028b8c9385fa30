//===- CUDAScratchPool.cpp - cached device scratch memory -----------------===//
//
// A call's scratch is allocated and freed on its stream. The device's default
// memory pool has a release threshold of 0: it may unmap freed memory at
// every synchronisation, and the next call then maps it again, which costs
// more than a decode step's kernels. So the runtime allocates from a pool of
// its own per device, whose release threshold (the cache limit) keeps freed
// memory reserved for the next call, as PyTorch's caching allocator does,
// without changing the default pool that other libraries share.
//
// pthreads only, as in CUDALaunch.cpp (no libstdc++ in layer libraries).
//
//===----------------------------------------------------------------------===//

#include "CUDADriver.h"

#include "moe-c/moe_runtime.h"

#include <cstdio>
#include <pthread.h>

using namespace moe::cuda;

namespace {
// Device ordinals the runtime keeps a pool for; more devices than this
// allocate from their default pool.
constexpr int kMaxDevices = 64;

pthread_mutex_t poolMutex = PTHREAD_MUTEX_INITIALIZER;
// Guarded by poolMutex. The driver whose pools these are: set by the first
// pool, the only driver a process loads.
const Driver *poolDriver = nullptr;
CUmemoryPool pools[kMaxDevices] = {};
// The release threshold of every pool, -1: unlimited.
int64_t cacheLimit = -1;

uint64_t releaseThreshold(int64_t limit) {
  return limit < 0 ? ~uint64_t{0} : static_cast<uint64_t>(limit);
}

/// The pool of `device`, created on first use. Called under poolMutex.
CUresult poolOf(const Driver *driver, CUdevice device, CUmemoryPool *pool,
                const char **failedCall) {
  if (pools[device]) {
    *pool = pools[device];
    return CUDA_SUCCESS;
  }
  CUmemPoolProps props = {};
  props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
  props.handleTypes = CU_MEM_HANDLE_TYPE_NONE;
  props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  props.location.id = device;
  CUmemoryPool created = nullptr;
  CUresult result = driver->cuMemPoolCreate(&created, &props);
  if (result != CUDA_SUCCESS) {
    *failedCall = "cuMemPoolCreate";
    return result;
  }
  uint64_t threshold = releaseThreshold(cacheLimit);
  result = driver->cuMemPoolSetAttribute(
      created, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &threshold);
  if (result != CUDA_SUCCESS) {
    // The pool stays unused; a later call tries again with a new one.
    *failedCall = "cuMemPoolSetAttribute";
    return result;
  }
  poolDriver = driver;
  pools[device] = created;
  *pool = created;
  return CUDA_SUCCESS;
}

/// `call(pool)` on every pool, under poolMutex: MOE_OK, or the first
/// failure recorded as `who`'s (the later pools are still visited).
template <typename Call>
int32_t applyToPools(const char *who, const char *callName, Call call) {
  int32_t status = MOE_OK;
  for (CUmemoryPool pool : pools) {
    if (!pool)
      continue;
    CUresult result = call(pool);
    if (result != CUDA_SUCCESS && status == MOE_OK)
      status = failWithCUDAError(who, result, callName);
  }
  return status;
}

} // namespace

CUresult moe::cuda::allocateScratch(const Driver *driver, CUdeviceptr *ptr,
                                    size_t bytes, CUstream stream,
                                    const char **failedCall) {
  CUdevice device = 0;
  CUresult result = driver->cuCtxGetDevice(&device);
  if (result != CUDA_SUCCESS) {
    *failedCall = "cuCtxGetDevice";
    return result;
  }
  if (device < 0 || device >= kMaxDevices) {
    *failedCall = "cuMemAllocAsync";
    return driver->cuMemAllocAsync(ptr, bytes, stream);
  }
  CUmemoryPool pool = nullptr;
  pthread_mutex_lock(&poolMutex);
  result = poolOf(driver, device, &pool, failedCall);
  pthread_mutex_unlock(&poolMutex);
  if (result != CUDA_SUCCESS)
    return result;
  *failedCall = "cuMemAllocFromPoolAsync";
  return driver->cuMemAllocFromPoolAsync(ptr, bytes, pool, stream);
}

extern "C" int32_t moe_cuda_set_scratch_cache_limit(int64_t bytes) {
  if (bytes < 0)
    bytes = -1;
  pthread_mutex_lock(&poolMutex);
  cacheLimit = bytes;
  uint64_t threshold = releaseThreshold(bytes);
  int32_t status = applyToPools(
      "moe_cuda_set_scratch_cache_limit", "cuMemPoolSetAttribute",
      [&](CUmemoryPool pool) {
        return poolDriver->cuMemPoolSetAttribute(
            pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &threshold);
      });
  pthread_mutex_unlock(&poolMutex);
  return status;
}

extern "C" int64_t moe_cuda_get_scratch_cache_limit(void) {
  pthread_mutex_lock(&poolMutex);
  int64_t limit = cacheLimit;
  pthread_mutex_unlock(&poolMutex);
  return limit;
}

extern "C" int32_t moe_cuda_trim_scratch(void) {
  pthread_mutex_lock(&poolMutex);
  int32_t status = applyToPools(
      "moe_cuda_trim_scratch", "cuMemPoolTrimTo",
      [](CUmemoryPool pool) { return poolDriver->cuMemPoolTrimTo(pool, 0); });
  pthread_mutex_unlock(&poolMutex);
  return status;
}

extern "C" int64_t moe_cuda_scratch_reserved(void) {
  int64_t total = 0;
  pthread_mutex_lock(&poolMutex);
  for (CUmemoryPool pool : pools) {
    if (!pool)
      continue;
    uint64_t reserved = 0;
    CUresult result = poolDriver->cuMemPoolGetAttribute(
        pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &reserved);
    if (result != CUDA_SUCCESS) {
      failWithCUDAError("moe_cuda_scratch_reserved", result,
                        "cuMemPoolGetAttribute");
      total = -1;
      break;
    }
    total += static_cast<int64_t>(reserved);
  }
  pthread_mutex_unlock(&poolMutex);
  return total;
}
