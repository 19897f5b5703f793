/* test_advice.c — server/advice.c: the big-size warning (CLI and daemon) and the line a
 * machine without a GPU logs at start. */
#include "advice.h"
#include "tap.h"

int main(void) {
    char b[512];
    ok(!advice_size(64, 64, 64, 64, b, sizeof b) && !b[0], "the native size: no warning");
    ok(!advice_size(96, 96, 64, 64, b, sizeof b), "1.5x a side (96 for 64): no warning");
    ok(!advice_size(1536, 1024, 1024, 1024, b, sizeof b), "SDXL 1536x1024: no warning");
    ok(advice_size(128, 64, 64, 64, b, sizeof b) && strstr(b, "128x64") && strstr(b, "native 64x64")
       && strstr(b, "tiled"), "twice the native width: a warning naming both sizes (%s)", b);
    ok(advice_size(64, 128, 64, 64, b, sizeof b), "twice the native height alone: a warning too");
    ok(advice_size(2048, 2048, 1024, 1024, b, sizeof b), "SDXL at 2048x2048: a warning");
    ok(!advice_size(4096, 4096, 0, 0, b, sizeof b), "native size unknown (0): no warning");
    char small[16];
    ok(advice_size(512, 512, 64, 64, small, sizeof small) && strlen(small) == sizeof small - 1,
       "a short buffer is cut, still terminated");

    const char *no_driver = "cuda: no usable GPU: CUDA driver version is insufficient for CUDA runtime version";
    ok(advice_cpu_fallback(no_driver, 0, b, sizeof b) && !strcmp(b, "no GPU found, serving on the CPU"),
       "no GPU (the runtime says 'driver insufficient' when there is no driver): information, "
       "no driver talk (%s)", b);
    ok(advice_cpu_fallback("cuda: no usable GPU: no devices", 0, b, sizeof b), "no devices: the same line");
    ok(!advice_cpu_fallback(no_driver, 1, b, sizeof b) && strstr(b, "insufficient"),
       "an NVIDIA device present but its driver too old: a warning with the runtime's words");
    ok(!advice_cpu_fallback("cuda: out of memory allocating the weights", 0, b, sizeof b) &&
       strstr(b, "out of memory") && strstr(b, "falling back to cpu"),
       "any other CUDA failure: a warning that carries the error (%s)", b);
    return done_testing();
}
