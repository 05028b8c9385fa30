/*===- moe_runtime.h - C ABI of the MoE-MLIR runtime ----------------------===*
 *
 * Generated layer entry points return one of these status codes; the message
 * of the last failure on the calling thread is kept by the runtime.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOE_RUNTIME_H
#define MOE_RUNTIME_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum moe_status {
  MOE_OK = 0,
  /* A required pointer argument was NULL. */
  MOE_ERROR_NULL_ARGUMENT = 1,
  /* A size argument disagrees with the compiled layer (or is < 1). */
  MOE_ERROR_BAD_SIZE = 2,
  /* Scratch memory could not be allocated. */
  MOE_ERROR_OUT_OF_MEMORY = 3,
} moe_status;

/* Records a failure of the calling thread; returns `code` for tail calls.
 * Called by generated code. */
int32_t moe_rt_fail(int32_t code, const char *message);

/* The message of the calling thread's last failure ("" if none). */
const char *moe_last_error(void);

/* The status code of the calling thread's last failure (MOE_OK if none). */
int32_t moe_last_error_code(void);

/* Clears the calling thread's failure record. */
void moe_clear_error(void);

/* Name of a status code ("MOE_OK", ...). */
const char *moe_status_name(int32_t code);

#ifdef __cplusplus
}
#endif

#endif /* MOE_RUNTIME_H */
