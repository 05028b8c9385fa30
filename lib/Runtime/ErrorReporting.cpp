//===- ErrorReporting.cpp - per-thread failure record of generated code ---===//

#include "moe-c/moe_runtime.h"

#include <cstring>

namespace {
// Generated kernels may run on many threads at once; each keeps its own.
thread_local int32_t lastCode = MOE_OK;
thread_local char lastMessage[512] = "";
} // namespace

extern "C" int32_t moe_rt_fail(int32_t code, const char *message) {
  lastCode = code;
  std::strncpy(lastMessage, message ? message : "", sizeof(lastMessage) - 1);
  lastMessage[sizeof(lastMessage) - 1] = '\0';
  return code;
}

extern "C" const char *moe_last_error(void) { return lastMessage; }

extern "C" int32_t moe_last_error_code(void) { return lastCode; }

extern "C" void moe_clear_error(void) {
  lastCode = MOE_OK;
  lastMessage[0] = '\0';
}

extern "C" const char *moe_status_name(int32_t code) {
  switch (code) {
  case MOE_OK:
    return "MOE_OK";
  case MOE_ERROR_NULL_ARGUMENT:
    return "MOE_ERROR_NULL_ARGUMENT";
  case MOE_ERROR_BAD_SIZE:
    return "MOE_ERROR_BAD_SIZE";
  case MOE_ERROR_OUT_OF_MEMORY:
    return "MOE_ERROR_OUT_OF_MEMORY";
  case MOE_ERROR_CUDA:
    return "MOE_ERROR_CUDA";
  default:
    return "MOE_ERROR_UNKNOWN";
  }
}
