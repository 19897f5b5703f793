/* advice.c — see advice.h. */
#include "advice.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int too_big(int side, int native) { return native > 0 && 2LL * side > 3LL * native; }

int advice_size(int width, int height, int native_w, int native_h, char *buf, size_t n) {
    if (n) buf[0] = 0;
    if (!too_big(width, native_w) && !too_big(height, native_h)) return 0;
    snprintf(buf, n, "%dx%d is more than " ADVICE_SIZE_FACTOR "x the model's native %dx%d: expect its "
             "content repeated (tiled) across the picture; it draws best at %dx%d", width, height,
             native_w, native_h, native_w, native_h);
    return 1;
}

int advice_cpu_fallback(const char *cuda_error, int device_seen, char *buf, size_t n) {
    const char *err = cuda_error ? cuda_error : "";
    if (!device_seen && strstr(err, "no usable GPU")) {   /* backend_cuda_create found none */
        snprintf(buf, n, "no GPU found, serving on the CPU");
        return 1;
    }
    snprintf(buf, n, "cuda backend unavailable (%s); falling back to cpu", err);
    return 0;
}

int advice_gpu_device_seen(void) {
    struct stat sb;
    return !stat("/dev/nvidia0", &sb) || !stat("/proc/driver/nvidia/gpus", &sb);
}
