/* Calls limits_forward with token counts past what its buffers and 32-bit
 * dispatch counts can index: each must fail with MOE_ERROR_BAD_SIZE before
 * touching the (small) buffers, and the header's sizes must be exact 64-bit
 * constants. */
#include "limits.h"

#include <stdio.h>
#include <string.h>

/* (2^31 - 1) / (4 heads x 2 slots). */
_Static_assert(LIMITS_MAX_TOKENS == 268435455, "max tokens");
_Static_assert(sizeof(LIMITS_W1_SIZE) == 8, "64-bit sizes");
_Static_assert(LIMITS_X_SIZE(INT64_C(1) << 40) == (INT64_C(1) << 40) * 8,
               "per-token sizes in 64 bits");

static float x[8 * 2], gate[4 * 2], w1[4 * 4 * 2], w2[4 * 2 * 4],
    head_proj[8 * 8], merge_proj[8 * 8], out[8 * 2];

static void call(const char *what, int64_t tokens) {
  int32_t status = limits_forward(tokens, LIMITS_D_MODEL, x, head_proj,
                                  merge_proj, gate, w1, w2, out, NULL, NULL,
                                  NULL, NULL);
  printf("%s: %s: %s\n", what, moe_status_name(status),
         status ? moe_last_error() : "");
}

int main(void) {
  memset(out, 0, sizeof out);
  call("tokens = 1", 1);
  call("tokens = max + 1", LIMITS_MAX_TOKENS + 1);
  call("tokens = 2^62", INT64_C(1) << 62);
  call("tokens = INT64_MAX", INT64_MAX);
  return 0;
}
