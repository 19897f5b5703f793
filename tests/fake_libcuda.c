/* fake_libcuda.c — a stand-in NVIDIA driver (libcuda.so.1) for test_cuda_module.sh: it
 * answers the two calls backend.c's probe makes as a machine with one device would, and
 * nothing else, so the CUDA runtime inside the module then finds it unusable. */
int cuInit(unsigned flags);
int cuDeviceGetCount(int *count);

int cuInit(unsigned flags) { (void)flags; return 0; }
int cuDeviceGetCount(int *count) { *count = 1; return 0; }
