/* fuzz_pickle.c — libFuzzer harness: any bytes as a pickle through the interpreter that
 * never executes (src/io/pickle.c: allowlisted globals only, bounded memo, stack, depth). */
#include <stdint.h>

#include "io/pickle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct pickle p;
    pk_load(&p, "fuzz", data, size);
    pk_free(&p);   /* always safe, also after a failed load */
    sd_clear_error();
    return 0;
}
