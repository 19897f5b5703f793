/* cuda_runtime.h (emulation) — lets kernels/ .cu files compile as host C++ for
 * tools/cuda_emu/run.sh: each CUDA thread is a std::thread, blocks run one after another,
 * __syncthreads is a std::barrier over the block and warp shuffles go through a per-warp
 * buffer and barrier.  __shared__ arrays become statics (blocks never overlap) and the
 * dynamic shared memory is one global buffer filled with NaN bits before each block.
 * Only what kernels/ uses is here. */
#ifndef EMU_CUDA_RUNTIME_H
#define EMU_CUDA_RUNTIME_H
#include "cuda_runtime_api.h"
#include <math.h>
#include <algorithm>
#include <barrier>
#include <thread>
#include <vector>
#include <functional>
#include <mutex>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#ifndef INFINITY
#define INFINITY (__builtin_inff())
#endif
struct dim3 { unsigned x, y, z; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
struct uint3 { unsigned x, y, z; };
struct double2 { double x, y; };
struct float2 { float x, y; };
static inline double2 make_double2(double a, double b) { return {a, b}; }
static inline float2 make_float2(float a, float b) { return {a, b}; }
using std::min; using std::max;
extern thread_local uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim, gridDim;
extern float smem_emu[];
#define smem smem_emu
namespace emu {
extern std::barrier<> *block_bar;
extern std::vector<std::barrier<> *> warp_bars;
extern double warp_buf[64][32];
}
static inline void __syncthreads() { emu::block_bar->arrive_and_wait(); }
template <class T> static inline T __shfl_xor_sync(unsigned, T v, int o) {
    unsigned t = threadIdx.x + threadIdx.y * blockDim.x;
    unsigned w = t / 32, l = t % 32;
    emu::warp_buf[w][l] = (double)v;
    emu::warp_bars[w]->arrive_and_wait();
    T r = (T)emu::warp_buf[w][l ^ o];
    emu::warp_bars[w]->arrive_and_wait();
    return r;
}
namespace emu { extern std::mutex atomic_mu; }
static inline float atomicAdd(float *p, float v) { std::lock_guard<std::mutex> g(emu::atomic_mu); float o = *p; *p = o + v; return o; }
namespace emu {
void run_grid(dim3 g, dim3 b, std::function<void()> body);
template <class K> struct Launch {
    K k; dim3 g, b;
    template <class... A> void operator()(A... a) { K kk = k; run_grid(g, b, [kk, a...]() { kk(a...); }); }
};
template <class K> Launch<K> launch(K k, dim3 g, dim3 b, size_t = 0, void * = nullptr) { return Launch<K>{k, g, b}; }
}
#endif
