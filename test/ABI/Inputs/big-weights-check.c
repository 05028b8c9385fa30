/* The header's sizes are exact in C: no int arithmetic wraps them. */
#include "big_weights.h"

_Static_assert(BIG_WEIGHTS_W1_SIZE == INT64_C(4294967296), "w1 is 2^32");
_Static_assert(BIG_WEIGHTS_W2_SIZE == INT64_C(4294967296), "w2 is 2^32");
_Static_assert(BIG_WEIGHTS_X_SIZE(INT64_C(1) << 40) == INT64_C(1) << 52,
               "2^40 tokens of 4096");
_Static_assert(BIG_WEIGHTS_MAX_TOKENS == INT64_C(268435455),
               "(2^31 - 1) / 8 slots");
