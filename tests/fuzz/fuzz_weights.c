/* fuzz_weights.c — libFuzzer harness: any bytes as a weights file through st_open, which
 * dispatches to the safetensors reader or, by the ZIP magic, the torch checkpoint reader
 * (zip directory, pickle interpreter, storage views).  A file that opens has every
 * tensor's data read (so out-of-range views show under ASan). */
#include <stdint.h>
#include <stdlib.h>

#include "io/safetensors.h"
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file("weights", data, size);
    if (!path) return 0;
    struct st_file st;
    if (st_open(&st, path) == SD_OK) {
        volatile uint8_t sink = 0;
        for (int i = 0; i < st.ntensors; i++) {
            const uint8_t *p = st.tensors[i].data;
            for (uint64_t k = 0; k < st.tensors[i].end - st.tensors[i].begin; k += 4096) sink ^= p[k];
        }
        (void)sink;
        st_close(&st);
    }
    sd_clear_error();
    return 0;
}
