/* What generated --target=cuda code calls, in C: linked against the static
 * runtime by the C compiler driver, as moe-compile links layer libraries
 * (-Wl,--no-undefined, no libstdc++), by cuda-runtime.test. */

#include "moe-c/moe_runtime.h"

#include <stdio.h>
#include <string.h>

static const unsigned char image[] = {0x7f, 'E', 'L', 'F', 2, 1, 1, 0};

int32_t layer_forward(int64_t tokens, const float *x, float *out,
                      void *stream) {
  int32_t status = moe_rt_cuda_begin(stream, "layer_forward");
  if (status != MOE_OK)
    return status;
  void *scratch = moe_rt_cuda_alloc_scratch(tokens * 256, "layer_forward");
  if (!scratch) {
    moe_rt_cuda_end();
    return MOE_ERROR_OUT_OF_MEMORY;
  }
  void *params[] = {&x, &scratch, &out, &tokens};
  moe_rt_cuda_launch(image, "router", tokens, 1, 1, 128, 1, 1, 0, params);
  moe_rt_cuda_launch(image, "experts", (tokens + 63) / 64, 8, 1, 256, 1, 1,
                     98304, params);
  moe_rt_cuda_free_scratch(scratch);
  return moe_rt_cuda_end();
}

#ifdef WITH_MAIN
int main(void) {
  if (moe_cuda_device_count() < 1) {
    printf("no device: %s\n", moe_last_error());
    return 0;
  }
  float host[4] = {1, 2, 3, 4}, back[4] = {0};
  void *x = moe_cuda_malloc(sizeof(host));
  void *out = moe_cuda_malloc(sizeof(host));
  int32_t status = moe_cuda_memcpy_to_device(x, host, sizeof(host), NULL);
  if (status == MOE_OK)
    status = layer_forward(4, (const float *)x, (float *)out, NULL);
  if (status == MOE_OK)
    status = moe_cuda_memcpy_to_host(back, x, sizeof(back), NULL);
  if (status == MOE_OK)
    status = moe_cuda_synchronize(NULL);
  moe_cuda_free(x);
  moe_cuda_free(out);
  printf("layer_forward: %s %s\n", moe_status_name(status),
         memcmp(host, back, sizeof(host)) == 0 ? "round trip ok"
                                               : "round trip wrong");
  return status == MOE_OK ? 0 : 1;
}
#endif
