/* emu.cpp — the grid runner of the CUDA emulation (see cuda_runtime.h here). */
#include "cuda_runtime.h"
#include <cstdio>
thread_local uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim, gridDim;
float smem_emu[1 << 17];
namespace emu {
std::mutex atomic_mu;
std::barrier<> *block_bar;
std::vector<std::barrier<> *> warp_bars;
double warp_buf[64][32];
void run_grid(dim3 g, dim3 b, std::function<void()> body) {
    gridDim = g; blockDim = b;
    unsigned nt = b.x * b.y * b.z;
    if (nt % 32) { fprintf(stderr, "emu: block size %u not a multiple of 32\n", nt); abort(); }
    for (unsigned z = 0; z < g.z; z++) for (unsigned y = 0; y < g.y; y++) for (unsigned x = 0; x < g.x; x++) {
        blockIdx = {x, y, z};
        std::barrier<> bb(nt);
        block_bar = &bb;
        std::vector<std::barrier<> *> wb;
        for (unsigned w = 0; w < nt / 32; w++) wb.push_back(new std::barrier<>(32));
        warp_bars = wb;
        memset(smem_emu, 0xff, sizeof smem_emu);   /* garbage: NaN patterns */
        std::vector<std::thread> th;
        for (unsigned t = 0; t < nt; t++)
            th.emplace_back([=]() { threadIdx = {t % b.x, (t / b.x) % b.y, t / (b.x * b.y)}; body(); });
        for (auto &t : th) t.join();
        for (auto *p : wb) delete p;
    }
}
}
