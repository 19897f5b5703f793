/* advice.h — what sdxld tells a user about a choice it could not make well for them,
 * written once for the offline CLI and the daemon:
 *
 *  - a size far above the model's native one: a UNet trained at one size repeats its
 *    content across a much larger picture (it "tiles"), so above ADVICE_SIZE_FACTOR times
 *    the native side `sdxld generate` logs a warning and the daemon logs one and returns
 *    it in the job (`warnings`, docs/daemon.md);
 *  - the CUDA backend not usable under backend=auto: on a machine without a GPU that is
 *    the ordinary case, said once at start as "no GPU found, serving on the CPU" (an
 *    information line; the CUDA runtime's own words, often "driver version is
 *    insufficient" when there is no driver at all, go to the debug log).  With an NVIDIA
 *    device present, or any other CUDA failure, it stays a warning carrying the error.
 *
 * Pure functions, unit-tested alone (tests/test_advice.c), but for the device probe. */
#ifndef SD_SERVER_ADVICE_H
#define SD_SERVER_ADVICE_H

#include <stddef.h>

/* A side above 3/2 of the native one draws a warning (1.5x: 96 for a 64 px model,
 * 1536 for SDXL's 1024). */
#define ADVICE_SIZE_FACTOR "1.5"

/* width x height against the model's native native_w x native_h: 1 with the warning in
 * buf (one line, ASCII, no trailing newline), 0 when the size is fine (buf = ""). */
int advice_size(int width, int height, int native_w, int native_h, char *buf, size_t n);

/* backend=auto and the CUDA backend failed with cuda_error (sd_last_error()); device_seen
 * says whether the machine has an NVIDIA device (advice_gpu_device_seen).  The line to
 * log in buf: 1 for the no-GPU case (log it as information, the error at debug level), 0
 * otherwise (log it as a warning; the error is in the line). */
int advice_cpu_fallback(const char *cuda_error, int device_seen, char *buf, size_t n);

/* 1 when the kernel shows an NVIDIA device (/dev/nvidia0 or /proc/driver/nvidia/gpus/). */
int advice_gpu_device_seen(void);

#endif
