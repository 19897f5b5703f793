/* test_kernels.cpp — every launcher of kernels/kernels.h, run on the CPU through the CUDA
 * emulation (tools/cuda_emu/run.sh), against double-precision references: elementwise
 * ops, layer and group norm (in place, a mean far from 0), and attention at each head-width
 * template with causal masks, ragged tiles, padded strides and Lk = 0.  Checks the
 * kernels' indexing, masking and barriers without a GPU; says nothing about speed.
 * Outputs start as NaN, so unwritten elements fail. */
#include "cuda_runtime.h"
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <random>
#include <vector>
#include <array>
extern "C" {
#include "kernels.h"
}
static std::mt19937 rng(7);
static std::vector<float> rnd(size_t n) { std::normal_distribution<float> d; std::vector<float> v(n); for (auto &x : v) x = d(rng); return v; }
static int fails = 0, total = 0;
static void report(const char *what, const std::vector<float> &g, const std::vector<double> &r, double tol) {
    double e = 0, rr = 0;
    for (size_t i = 0; i < r.size(); i++) { double d = g[i] - r[i]; e += d * d; rr += r[i] * r[i]; }
    double err = rr > 0 ? sqrt(e / rr) : sqrt(e);
    bool ok = err < tol;   /* NaN fails */
    total++; if (!ok) fails++;
    printf("%s %s: %.3g\n", ok ? "ok" : "NOT OK", what, err);
}
static void test_attention(int N, int H, int Lq, int Lk, int D, int pad, int causal) {
    int ld = H * D + pad;
    auto q = rnd((size_t)N * Lq * ld), k = rnd((size_t)N * Lk * ld), v = rnd((size_t)N * Lk * ld);
    std::vector<float> o((size_t)N * Lq * ld, NAN);
    float scale = 1.0f / sqrtf((float)D);
    cudaError_t e = k_attention(o.data(), q.data(), k.data(), v.data(), N, H, Lq, Lk, D, ld, ld, ld, ld, scale, causal, nullptr);
    if (e) { printf("NOT OK launch %d\n", e); fails++; return; }
    std::vector<double> ref(o.size());
    std::vector<float> got(o.size());
    for (size_t i = 0; i < o.size(); i++) got[i] = o[i];
    for (int n = 0; n < N; n++) for (int h = 0; h < H; h++) for (int i = 0; i < Lq; i++) {
        int nk = causal ? std::min(i + 1, Lk) : Lk;
        std::vector<double> s(Lk); double mx = -1e300, sum = 0;
        for (int j = 0; j < nk; j++) { double d = 0; for (int c = 0; c < D; c++) d += (double)q[((size_t)n * Lq + i) * ld + h * D + c] * k[((size_t)n * Lk + j) * ld + h * D + c]; s[j] = d * scale; mx = std::max(mx, s[j]); }
        for (int j = 0; j < nk; j++) { s[j] = exp(s[j] - mx); sum += s[j]; }
        for (int c = 0; c < D; c++) { double a = 0; for (int j = 0; j < nk; j++) a += s[j] / sum * v[((size_t)n * Lk + j) * ld + h * D + c]; ref[((size_t)n * Lq + i) * ld + h * D + c] = a; }
        for (int c = H * D; c < ld; c++) { ref[((size_t)n * Lq + i) * ld + c] = 0; got[((size_t)n * Lq + i) * ld + c] = std::isnan(o[((size_t)n * Lq + i) * ld + c]) ? 0 : 1e9; }
    }
    char w[160]; snprintf(w, sizeof w, "attention N%d H%d Lq%d Lk%d D%d pad%d causal%d", N, H, Lq, Lk, D, pad, causal);
    report(w, got, ref, 1e-5);
}
static void test_gn(int N, int C, int HW, int G, int silu, bool inplace) {
    auto x = rnd((size_t)N * C * HW), w = rnd(C), b = rnd(C);
    for (auto &a : x) a = a * 3 + 5;
    std::vector<float> y(x.size(), NAN);
    std::vector<char> scratch(k_group_norm_scratch_bytes(N, C, HW, G));
    std::vector<float> xin = x;
    float *out = inplace ? xin.data() : y.data();
    k_group_norm(out, xin.data(), w.data(), b.data(), scratch.data(), N, C, HW, G, 1e-6f, silu, nullptr);
    std::vector<double> ref(x.size());
    int cpg = C / G;
    for (int n = 0; n < N; n++) for (int g = 0; g < G; g++) {
        size_t base = ((size_t)n * C + g * cpg) * HW, cnt = (size_t)cpg * HW; double m = 0, vv = 0;
        for (size_t i = 0; i < cnt; i++) m += x[base + i]; m /= cnt;
        for (size_t i = 0; i < cnt; i++) vv += (x[base + i] - m) * (x[base + i] - m); vv /= cnt;
        for (size_t i = 0; i < cnt; i++) { int c = g * cpg + i / HW; double o = (x[base + i] - m) / sqrt(vv + 1e-6) * w[c] + b[c]; if (silu) o = o / (1 + exp(-o)); ref[base + i] = o; }
    }
    char wn[96]; snprintf(wn, sizeof wn, "group_norm N%d C%d HW%d G%d silu%d inplace%d", N, C, HW, G, silu, inplace);
    report(wn, inplace ? xin : y, ref, 2e-6);
}
static void test_ln(int R, int C) {
    auto x = rnd((size_t)R * C), w = rnd(C), b = rnd(C);
    std::vector<float> y(x.size(), NAN);
    k_layer_norm(y.data(), x.data(), w.data(), b.data(), R, C, 1e-5f, nullptr);
    std::vector<double> ref(x.size());
    for (int r = 0; r < R; r++) { double m = 0, vv = 0; for (int i = 0; i < C; i++) m += x[r * C + i]; m /= C; for (int i = 0; i < C; i++) vv += (x[r*C+i]-m)*(x[r*C+i]-m); vv /= C;
        for (int i = 0; i < C; i++) ref[r * C + i] = (x[r*C+i]-m)/sqrt(vv+1e-5)*w[i]+b[i]; }
    char wn[64]; snprintf(wn, sizeof wn, "layer_norm %dx%d", R, C);
    report(wn, y, ref, 2e-6);
}
static void test_ew() {
    int n = 3000; auto x = rnd(n); std::vector<float> y(n, NAN); std::vector<double> r(n);
    for (int k = 0; k < 3; k++) { k_act(y.data(), x.data(), n, k, nullptr);
        for (int i = 0; i < n; i++) { double v = x[i]; r[i] = k == 0 ? v / (1 + exp(-v)) : k == 1 ? 0.5 * v * (1 + erf(v / sqrt(2))) : v / (1 + exp(-1.702 * v)); }
        report(k == 0 ? "silu" : k == 1 ? "gelu" : "quick_gelu", y, r, 1e-6); }
    { int R = 5, C = 300; auto a = rnd(R * 2 * C); std::vector<float> o(R * C, NAN); std::vector<double> rr(R * C);
      k_geglu(o.data(), a.data(), R, C, nullptr);
      for (int q = 0; q < R; q++) for (int i = 0; i < C; i++) { double g = a[q*2*C+C+i]; rr[q*C+i] = a[q*2*C+i]*0.5*g*(1+erf(g/sqrt(2))); }
      report("geglu", o, rr, 1e-6); }
    { int NC = 6, H = 5, W = 7; auto a = rnd(NC*H*W); std::vector<float> o(NC*4*H*W, NAN); std::vector<double> rr(o.size());
      k_upsample2x(o.data(), a.data(), NC, H, W, nullptr);
      for (int c = 0; c < NC; c++) for (int i = 0; i < 2*H; i++) for (int j = 0; j < 2*W; j++) rr[(c*2*H+i)*2*W+j] = a[(c*H+i/2)*W+j/2];
      report("upsample2x", o, rr, 1e-7); }
    { float t[3] = {999, 3.5f, 0}; for (int dim : {320, 7}) for (int flip = 0; flip < 2; flip++) { std::vector<float> o(3*dim, NAN); std::vector<double> rr(3*dim);
      float shift = flip ? 0 : 1; k_timestep_embedding(o.data(), t, 3, dim, flip, shift, 10000, nullptr); int half = dim/2;
      for (int q = 0; q < 3; q++) { for (int i = 0; i < half; i++) { float f = expf(-logf(10000.f)*(float)i/((float)half-shift)); float a = t[q]*f; rr[q*dim+(flip?i:half+i)] = cosf(a); rr[q*dim+(flip?half+i:i)] = sinf(a);} if (dim%2) rr[q*dim+dim-1]=0; }
      report("timestep", o, rr, 1e-6); } }
    { int V = 50, D = 70, cnt = 9; auto tab = rnd(V*D); int ids[9] = {3, 49, 0, 7, 7, 1, 2, 48, 10}; std::vector<float> o(cnt*D, NAN); std::vector<double> rr(cnt*D);
      k_embedding(o.data(), tab.data(), ids, cnt, D, nullptr); for (int i = 0; i < cnt; i++) for (int d = 0; d < D; d++) rr[i*D+d] = tab[ids[i]*D+d]; report("embedding", o, rr, 1e-7); }
    { auto a = rnd(n), b = rnd(n); std::vector<float> o(n, NAN); std::vector<double> rr(n);
      k_axpby(o.data(), 2, a.data(), -0.5f, b.data(), n, nullptr); for (int i = 0; i < n; i++) rr[i] = 2.0*a[i] - 0.5*b[i]; report("axpby", o, rr, 1e-7);
      k_axpby(o.data(), 3, o.data(), 0, nullptr, n, nullptr); for (int i = 0; i < n; i++) rr[i] *= 3; report("axpby inplace", o, rr, 1e-7); }
    { int rows = 12, K = 4, inner = 37; auto a = rnd(rows*inner), v = rnd(K); std::vector<double> rr(a.size()); for (int r = 0; r < rows; r++) for (int i = 0; i < inner; i++) rr[r*inner+i] = a[r*inner+i] + v[r%K];
      k_add_channel(a.data(), v.data(), rows, K, inner, nullptr); report("add_channel mod K", a, rr, 1e-7); }
    { int R = 9, O = 33; auto a = rnd(R*O), b = rnd(O); std::vector<double> rr(a.size()); for (int r = 0; r < R; r++) for (int i = 0; i < O; i++) rr[r*O+i] = a[r*O+i]+b[i];
      k_add_bias_rows(a.data(), b.data(), R, O, nullptr); report("add_bias_rows", a, rr, 1e-7); }
    { int N = 3, Ca = 2, Cb = 5, HW = 11; auto a = rnd(N*Ca*HW), b = rnd(N*Cb*HW); std::vector<float> o(N*(Ca+Cb)*HW, NAN); std::vector<double> rr(o.size());
      k_concat_channels(o.data(), a.data(), Ca, b.data(), Cb, N, HW, nullptr);
      for (int q = 0; q < N; q++) for (int c = 0; c < Ca+Cb; c++) for (int i = 0; i < HW; i++) rr[(q*(Ca+Cb)+c)*HW+i] = c < Ca ? a[(q*Ca+c)*HW+i] : b[(q*Cb+c-Ca)*HW+i];
      report("concat", o, rr, 1e-7); }
    for (auto d : std::vector<std::array<int,3>>{{2, 37, 45}, {1, 64, 70}, {1, 1, 3}}) { int N = d[0], R = d[1], C = d[2]; auto a = rnd(N*R*C); std::vector<float> o(a.size(), NAN); std::vector<double> rr(a.size());
      k_transpose(o.data(), a.data(), N, R, C, nullptr); for (int q = 0; q < N; q++) for (int r = 0; r < R; r++) for (int c = 0; c < C; c++) rr[(size_t)q*R*C + c*R + r] = a[(size_t)q*R*C + r*C + c];
      report("transpose", o, rr, 1e-7); }
    { int NC = 4, H = 5, W = 6, pt = 0, pl = 1, pb = 1, pr = 2; int Hp = H+pt+pb, Wp = W+pl+pr; auto a = rnd(NC*H*W); std::vector<float> o(NC*Hp*Wp, NAN); std::vector<double> rr(o.size());
      k_pad2d(o.data(), a.data(), NC, H, W, pt, pl, pb, pr, nullptr);
      for (int c = 0; c < NC; c++) for (int i = 0; i < Hp; i++) for (int j = 0; j < Wp; j++) { int y = i - pt, x = j - pl; rr[(c*Hp+i)*Wp+j] = (y>=0&&y<H&&x>=0&&x<W) ? a[(c*H+y)*W+x] : 0; }
      report("pad2d", o, rr, 1e-7); }
}
int main() {
    if (!getenv("EMU_ONLY_ATTENTION")) test_ew();
    test_ln(6, 8); test_ln(20, 1280); test_ln(3, 33);
    test_gn(2, 8, 10, 4, 0, false); test_gn(2, 8, 10, 4, 1, true); test_gn(1, 64, 40000, 32, 1, false); test_gn(3, 6, 1, 3, 0, false);
    test_attention(2, 3, 7, 7, 4, 0, 0);
    test_attention(2, 3, 9, 9, 4, 0, 1);
    test_attention(2, 2, 70, 77, 16, 5, 0);
    test_attention(1, 2, 130, 130, 64, 0, 1);
    test_attention(1, 2, 70, 45, 80, 3, 0);
    test_attention(1, 1, 40, 70, 200, 0, 0);
    test_attention(1, 1, 70, 70, 300, 2, 1);
    test_attention(1, 1, 33, 65, 512, 0, 0);
    test_attention(1, 1, 5, 0, 8, 0, 0);
    printf("%d of %d failed\n", fails, total);
    return fails != 0;
}
