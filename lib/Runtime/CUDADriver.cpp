//===- CUDADriver.cpp - loading the CUDA driver and making a context ------===//
//
// The driver is opened with dlopen on first use, not linked: a layer library
// for --target=cuda must load on machines without a GPU, where every CUDA
// call then fails with MOE_ERROR_CUDA and a message that says why. Loading,
// cuInit and the retain of device 0's primary context happen once per
// process; the driver is never unloaded.
//
//===----------------------------------------------------------------------===//

#include "CUDADriver.h"

#include "moe-c/moe_runtime.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <pthread.h>

using namespace moe::cuda;

namespace {
pthread_once_t driverOnce = PTHREAD_ONCE_INIT;
// Written once under driverOnce, read-only afterwards.
Driver driver;
bool driverLoaded = false;
bool driverHasNoDevice = false;
char driverFailure[384] = "";

// Guards primaryContext: a failed retain (no device yet, out of memory) is
// tried again by the next call.
pthread_mutex_t primaryMutex = PTHREAD_MUTEX_INITIALIZER;
CUcontext primaryContext = nullptr;

/// dlsym of `name` into `slot`; false (with driverFailure set) if missing.
template <typename Fn>
bool resolve(void *library, const char *path, const char *name, Fn &slot) {
  slot = reinterpret_cast<Fn>(dlsym(library, name));
  if (slot)
    return true;
  std::snprintf(driverFailure, sizeof(driverFailure),
                "no CUDA driver: %s has no %s (not a CUDA driver, or one "
                "older than CUDA 11.2)",
                path, name);
  return false;
}

void loadDriverOnce() {
  // For tests (a fake driver) and installs without libcuda.so.1 on the
  // loader's path.
  const char *path = std::getenv("MOE_CUDA_DRIVER");
  if (!path || !*path)
    path = "libcuda.so.1";
  void *library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    const char *error = dlerror();
    std::snprintf(driverFailure, sizeof(driverFailure),
                  "no CUDA driver: dlopen(%s) failed: %s", path,
                  error ? error : "unknown error");
    return;
  }
  Driver table;
#define MOE_RESOLVE(name)                                                      \
  if (!resolve(library, path, #name, table.name))                              \
    return;
  MOE_RESOLVE(cuInit)
  MOE_RESOLVE(cuDeviceGetCount)
  MOE_RESOLVE(cuDeviceGet)
  MOE_RESOLVE(cuDevicePrimaryCtxRetain)
  MOE_RESOLVE(cuCtxGetCurrent)
  MOE_RESOLVE(cuCtxSetCurrent)
  MOE_RESOLVE(cuCtxGetDevice)
  MOE_RESOLVE(cuModuleLoadData)
  MOE_RESOLVE(cuModuleGetFunction)
  MOE_RESOLVE(cuFuncSetAttribute)
  MOE_RESOLVE(cuLaunchKernel)
  MOE_RESOLVE(cuMemAllocAsync)
  MOE_RESOLVE(cuMemFreeAsync)
  MOE_RESOLVE(cuMemPoolCreate)
  MOE_RESOLVE(cuMemPoolSetAttribute)
  MOE_RESOLVE(cuMemPoolGetAttribute)
  MOE_RESOLVE(cuMemPoolTrimTo)
  MOE_RESOLVE(cuMemAllocFromPoolAsync)
  MOE_RESOLVE(cuMemAlloc_v2)
  MOE_RESOLVE(cuMemFree_v2)
  MOE_RESOLVE(cuMemcpyHtoDAsync_v2)
  MOE_RESOLVE(cuMemcpyDtoHAsync_v2)
  MOE_RESOLVE(cuStreamSynchronize)
  MOE_RESOLVE(cuGetErrorName)
  MOE_RESOLVE(cuGetErrorString)
#undef MOE_RESOLVE
  // The error strings work before cuInit: describe its failure with them.
  driver = table;
  CUresult result = driver.cuInit(0);
  if (result == CUDA_ERROR_NO_DEVICE) {
    driverHasNoDevice = true;
    std::snprintf(driverFailure, sizeof(driverFailure),
                  "no CUDA device (cuInit returned CUDA_ERROR_NO_DEVICE)");
    return;
  }
  if (result != CUDA_SUCCESS) {
    char description[256];
    describeCUDAError(result, description, sizeof(description));
    std::snprintf(driverFailure, sizeof(driverFailure),
                  "CUDA error %s in cuInit", description);
    return;
  }
  driverLoaded = true;
}

/// Device 0's primary context, retained on first use; null after
/// moe_rt_fail with a message that starts with `who`. Called under
/// primaryMutex.
CUcontext retainPrimaryContext(const char *who) {
  if (primaryContext)
    return primaryContext;
  int count = 0;
  CUresult result = driver.cuDeviceGetCount(&count);
  const char *call = "cuDeviceGetCount";
  if (result == CUDA_SUCCESS && count < 1) {
    char message[512];
    std::snprintf(message, sizeof(message),
                  "%s: no CUDA device (cuDeviceGetCount returned %d)", who,
                  count);
    moe_rt_fail(MOE_ERROR_CUDA, message);
    return nullptr;
  }
  CUdevice device = 0;
  if (result == CUDA_SUCCESS) {
    call = "cuDeviceGet";
    result = driver.cuDeviceGet(&device, 0);
  }
  if (result == CUDA_SUCCESS) {
    // Retained for the life of the process: it is what the CUDA runtime
    // (and so PyTorch) uses too, and releasing it would tear down modules.
    call = "cuDevicePrimaryCtxRetain";
    CUcontext context = nullptr;
    result = driver.cuDevicePrimaryCtxRetain(&context, device);
    if (result == CUDA_SUCCESS)
      primaryContext = context;
  }
  if (result != CUDA_SUCCESS)
    failWithCUDAError(who, result, call);
  return primaryContext;
}
} // namespace

const Driver *moe::cuda::loadDriver(const char **reason, bool *noDevice) {
  pthread_once(&driverOnce, loadDriverOnce);
  *noDevice = driverHasNoDevice;
  if (driverLoaded)
    return &driver;
  *reason = driverFailure;
  return nullptr;
}

const Driver *moe::cuda::acquireContext(const char *who, CUcontext *context) {
  const char *reason = nullptr;
  bool noDevice = false;
  const Driver *loaded = loadDriver(&reason, &noDevice);
  char message[512];
  if (!loaded) {
    std::snprintf(message, sizeof(message), "%s: %s", who, reason);
    moe_rt_fail(MOE_ERROR_CUDA, message);
    return nullptr;
  }
  // A framework (PyTorch) makes its context current on its threads: kernels
  // must run there, beside its tensors.
  CUcontext current = nullptr;
  CUresult result = loaded->cuCtxGetCurrent(&current);
  if (result != CUDA_SUCCESS) {
    failWithCUDAError(who, result, "cuCtxGetCurrent");
    return nullptr;
  }
  if (!current) {
    pthread_mutex_lock(&primaryMutex);
    current = retainPrimaryContext(who);
    pthread_mutex_unlock(&primaryMutex);
    if (!current)
      return nullptr;
    result = loaded->cuCtxSetCurrent(current);
    if (result != CUDA_SUCCESS) {
      failWithCUDAError(who, result, "cuCtxSetCurrent");
      return nullptr;
    }
  }
  *context = current;
  return loaded;
}

void *moe::cuda::zeroSizeAllocation() {
  alignas(64) static char placeholder;
  return &placeholder;
}

void moe::cuda::describeCUDAError(CUresult error, char *buffer, size_t size) {
  const char *name = nullptr;
  const char *description = nullptr;
  // Only called once the driver's table is filled in.
  if (driver.cuGetErrorName(error, &name) != CUDA_SUCCESS || !name)
    name = nullptr;
  if (driver.cuGetErrorString(error, &description) != CUDA_SUCCESS ||
      !description)
    description = "unknown error";
  if (name)
    std::snprintf(buffer, size, "%s (%s)", name, description);
  else
    std::snprintf(buffer, size, "%d (%s)", error, description);
}

int32_t moe::cuda::failWithCUDAError(const char *who, CUresult error,
                                     const char *call, const char *detail) {
  char description[256];
  describeCUDAError(error, description, sizeof(description));
  char message[512];
  std::snprintf(message, sizeof(message), "%s: CUDA error %s in %s%s", who,
                description, call, detail);
  return moe_rt_fail(MOE_ERROR_CUDA, message);
}
