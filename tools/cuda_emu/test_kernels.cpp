/* test_kernels.cpp — every launcher of kernels/kernels.h, run on the CPU through the CUDA
 * emulation (tools/cuda_emu/run.sh), against double-precision references: elementwise
 * ops, layer and group norm (in place, a mean far from 0), attention at each head-width
 * template with causal masks, ragged tiles, padded strides and Lk = 0, and the backward
 * kernels (activations, GEGLU, upsample, row/column sums, split, embedding, dot, AdamW,
 * group/layer norm with dw/db, attention dq/dk/dv) against their analytic gradients.  Checks the
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
/* ---- backward kernels: double-precision references written from the forward's math ---- */
static double sig(double x) { return 1 / (1 + exp(-x)); }
static double gelu_d(double x) { return 0.5 * (1 + erf(x / sqrt(2))) + x * exp(-0.5 * x * x) / sqrt(2 * M_PI); }
static void test_bw_ew() {
    int n = 2000; auto x = rnd(n), dy = rnd(n); std::vector<float> o(n, NAN); std::vector<double> r(n);
    for (int k = 0; k < 3; k++) {
        k_act_backward(o.data(), dy.data(), x.data(), n, k, nullptr);
        for (int i = 0; i < n; i++) { double v = x[i], d = k == 0 ? sig(v) * (1 + v * (1 - sig(v))) : k == 1 ? gelu_d(v) : sig(1.702 * v) * (1 + 1.702 * v * (1 - sig(1.702 * v))); r[i] = dy[i] * d; }
        report(k == 0 ? "silu backward" : k == 1 ? "gelu backward" : "quick_gelu backward", o, r, 1e-6); }
    { int R = 4, C = 130; auto a = rnd(R * 2 * C), d = rnd(R * C); std::vector<double> rr(R * 2 * C);
      for (int q = 0; q < R; q++) for (int i = 0; i < C; i++) { double av = a[q*2*C+i], g = a[q*2*C+C+i]; rr[q*2*C+i] = d[q*C+i] * 0.5*g*(1+erf(g/sqrt(2))); rr[q*2*C+C+i] = d[q*C+i]*av*gelu_d(g); }
      k_geglu_backward(a.data(), d.data(), a.data(), R, C, nullptr); report("geglu backward (in place)", a, rr, 1e-6); }
    { int NC = 5, H = 3, W = 4; auto d = rnd(NC*4*H*W); std::vector<float> o(NC*H*W, NAN); std::vector<double> rr(o.size());
      k_upsample2x_backward(o.data(), d.data(), NC, H, W, nullptr);
      for (int c = 0; c < NC; c++) for (int i = 0; i < H; i++) for (int j = 0; j < W; j++) { double s = 0; for (int a = 0; a < 2; a++) for (int b = 0; b < 2; b++) s += d[(c*2*H+2*i+a)*2*W+2*j+b]; rr[(c*H+i)*W+j] = s; }
      report("upsample2x backward", o, rr, 1e-6); }
    { int rows = 12, inner = 300, K = 4; auto a = rnd(rows*inner); std::vector<float> o(rows, NAN), acc(K, 1.0f); std::vector<double> rr(rows), ra(K, 1.0);
      k_row_sums(o.data(), a.data(), rows, inner, rows, 0, nullptr); k_row_sums(acc.data(), a.data(), rows, inner, K, 1, nullptr);
      for (int q = 0; q < rows; q++) { double s = 0; for (int i = 0; i < inner; i++) s += a[q*inner+i]; rr[q] = s; ra[q % K] += s; }
      report("row sums (channel_sum)", o, rr, 1e-6); report("row sums mod K, accumulated (conv bias grad)", acc, ra, 1e-6); }
    { int R = 700, O = 37; auto a = rnd(R*O); std::vector<float> o(O, 0.5f); std::vector<double> rr(O, 0.5);
      k_col_sums_acc(o.data(), a.data(), R, O, nullptr); for (int q = 0; q < R; q++) for (int i = 0; i < O; i++) rr[i] += a[q*O+i];
      report("column sums, accumulated (linear bias grad)", o, rr, 1e-5); }
    { int N = 3, Ca = 2, Cb = 5, HW = 11; auto x = rnd(N*(Ca+Cb)*HW); std::vector<float> a(N*Ca*HW, NAN), b(N*Cb*HW, NAN); std::vector<double> ra(a.size()), rb(b.size());
      k_split_channels(a.data(), Ca, b.data(), Cb, x.data(), N, HW, nullptr);
      for (int q = 0; q < N; q++) for (int c = 0; c < Ca+Cb; c++) for (int i = 0; i < HW; i++) { double v = x[(q*(Ca+Cb)+c)*HW+i]; if (c < Ca) ra[(q*Ca+c)*HW+i] = v; else rb[(q*Cb+c-Ca)*HW+i] = v; }
      report("split_channels a", a, ra, 1e-7); report("split_channels b", b, rb, 1e-7); }
    { int NC = 3, H = 4, W = 5, pt = 0, pl = 1, pb = 1, pr = 2, Hp = H+pt+pb, Wp = W+pl+pr; auto a = rnd(NC*Hp*Wp); std::vector<float> o(NC*H*W, NAN); std::vector<double> rr(o.size());
      k_crop2d(o.data(), a.data(), NC, H, W, pt, pl, pb, pr, nullptr);
      for (int c = 0; c < NC; c++) for (int i = 0; i < H; i++) for (int j = 0; j < W; j++) rr[(c*H+i)*W+j] = a[(c*Hp+i+pt)*Wp+j+pl];
      report("crop2d (pad2d's adjoint)", o, rr, 1e-7); }
    { int V = 20, D = 9, cnt = 6; int ids[6] = {3, 19, 3, 0, 7, 3}; auto d = rnd(cnt*D); std::vector<float> t(V*D, 0.25f); std::vector<double> rr(V*D, 0.25);
      k_embedding_backward(t.data(), d.data(), ids, cnt, D, nullptr); for (int i = 0; i < cnt; i++) for (int j = 0; j < D; j++) rr[ids[i]*D+j] += d[i*D+j];
      report("embedding backward (repeated ids)", t, rr, 1e-6); }
    { int m = 100000; auto a = rnd(m), b = rnd(m); std::vector<double> part(k_dot_blocks(m)); k_dot_partials(part.data(), a.data(), b.data(), m, nullptr);
      double s = 0, want = 0; for (double p : part) s += p; for (int i = 0; i < m; i++) want += (double)a[i] * b[i];
      std::vector<float> g(1, (float)(s - want)); std::vector<double> z(1, 0.0); report("dot (fp64 partials)", g, z, 1e-6); }
    { int m = 1000; auto p = rnd(m), g = rnd(m), mm = rnd(m), vv = rnd(m); for (auto &x : vv) x = fabsf(x);
      std::vector<double> rp(m), rm(m), rv(m); float lr = 1e-2f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.01f; int step = 3;
      float bc1 = 1 - powf(b1, step), bc2 = 1 - powf(b2, step);
      for (int i = 0; i < m; i++) { double M = b1*mm[i] + (1-b1)*g[i], V = b2*vv[i] + (1-b2)*g[i]*g[i]; rm[i] = M; rv[i] = V; rp[i] = p[i] - lr*((M/bc1)/(sqrt(V/bc2)+eps) + wd*p[i]); }
      k_adamw(p.data(), g.data(), mm.data(), vv.data(), m, lr, b1, b2, eps, wd, bc1, bc2, nullptr);
      report("adamw params", p, rp, 1e-6); report("adamw m", mm, rm, 1e-6); report("adamw v", vv, rv, 1e-6); }
}
/* GroupNorm backward against the analytic formula in double (silu and affine variants). */
static void test_gn_bw(int N, int C, int HW, int G, int silu, bool inplace, bool affine) {
    auto x = rnd((size_t)N*C*HW), dy = rnd(x.size()), w = rnd(C), b = rnd(C);
    for (auto &a : x) a = a * 2 + 3;
    std::vector<float> dw(C, 0.5f), db(C, -0.5f), dx(x.size(), NAN), d2 = dy;
    std::vector<char> scratch(k_group_norm_backward_scratch_bytes(N, C, HW, G));
    float *out = inplace ? d2.data() : dx.data();
    k_group_norm_backward(out, affine ? dw.data() : nullptr, affine ? db.data() : nullptr, d2.data(), x.data(),
                          affine ? w.data() : nullptr, affine ? b.data() : nullptr, scratch.data(), N, C, HW, G, 1e-5f, silu, nullptr);
    std::vector<double> rdx(x.size()), rdw(C, 0.5), rdb(C, -0.5); int cpg = C / G;
    for (int n = 0; n < N; n++) for (int g = 0; g < G; g++) {
        size_t base = ((size_t)n*C + g*cpg)*HW, cnt = (size_t)cpg*HW; double m = 0, v = 0;
        for (size_t i = 0; i < cnt; i++) m += x[base+i]; m /= cnt; for (size_t i = 0; i < cnt; i++) v += (x[base+i]-m)*(x[base+i]-m); v /= cnt;
        double rs = 1 / sqrt(v + 1e-5), s1 = 0, s2 = 0; std::vector<double> dh(cnt), xh(cnt);
        for (size_t i = 0; i < cnt; i++) { int c = g*cpg + i/HW; double wc = affine ? w[c] : 1, bc = affine ? b[c] : 0; xh[i] = (x[base+i]-m)*rs; double y = xh[i]*wc + bc;
            double d = silu ? dy[base+i] * sig(y) * (1 + y * (1 - sig(y))) : dy[base+i]; rdb[c] += d; rdw[c] += d * xh[i]; dh[i] = d * wc; s1 += dh[i]; s2 += dh[i]*xh[i]; }
        for (size_t i = 0; i < cnt; i++) rdx[base+i] = rs * (dh[i] - s1/cnt - xh[i]*s2/cnt);
    }
    char wn[120]; snprintf(wn, sizeof wn, "group_norm backward N%d C%d HW%d G%d silu%d inplace%d affine%d", N, C, HW, G, silu, inplace, affine);
    report(wn, inplace ? d2 : dx, rdx, 1e-5);
    if (affine) { report("  ... dw", dw, rdw, 1e-5); report("  ... db", db, rdb, 1e-5); }
}
static void test_ln_bw(int R, int C, bool inplace) {
    auto x = rnd((size_t)R*C), dy = rnd(x.size()), w = rnd(C);
    std::vector<float> dw(C, 0.0f), db(C, 0.0f), dx(x.size(), NAN), d2 = dy;
    std::vector<char> scratch(k_layer_norm_backward_scratch_bytes(R));
    k_layer_norm_backward(inplace ? d2.data() : dx.data(), dw.data(), db.data(), d2.data(), x.data(), w.data(), scratch.data(), R, C, 1e-5f, nullptr);
    std::vector<double> rdx(x.size()), rdw(C, 0), rdb(C, 0);
    for (int r = 0; r < R; r++) { double m = 0, v = 0; for (int i = 0; i < C; i++) m += x[r*C+i]; m /= C; for (int i = 0; i < C; i++) v += (x[r*C+i]-m)*(x[r*C+i]-m); v /= C;
        double rs = 1/sqrt(v+1e-5), s1 = 0, s2 = 0;
        for (int i = 0; i < C; i++) { double xh = (x[r*C+i]-m)*rs, dh = dy[r*C+i]*w[i]; s1 += dh; s2 += dh*xh; rdw[i] += dy[r*C+i]*xh; rdb[i] += dy[r*C+i]; }
        for (int i = 0; i < C; i++) { double xh = (x[r*C+i]-m)*rs; rdx[r*C+i] = rs*(dy[r*C+i]*w[i] - s1/C - xh*s2/C); } }
    char wn[80]; snprintf(wn, sizeof wn, "layer_norm backward %dx%d inplace%d", R, C, inplace);
    report(wn, inplace ? d2 : dx, rdx, 1e-5); report("  ... dw", dw, rdw, 1e-5); report("  ... db", db, rdb, 1e-5);
}
static void test_attention_bw(int N, int H, int Lq, int Lk, int D, int pad, int causal) {
    int ld = H * D + pad;
    auto q = rnd((size_t)N*Lq*ld), k = rnd((size_t)N*Lk*ld), v = rnd((size_t)N*Lk*ld), dout = rnd((size_t)N*Lq*ld);
    std::vector<float> dq(q.size(), NAN), dk(k.size(), NAN), dv(v.size(), NAN);
    float scale = 1.0f / sqrtf((float)D);
    k_attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), N, H, Lq, Lk, D, ld, ld, ld, ld, scale, causal, nullptr);
    std::vector<double> rq(q.size(), 0), rk(k.size(), 0), rv(v.size(), 0);
    for (int n = 0; n < N; n++) for (int h = 0; h < H; h++) for (int i = 0; i < Lq; i++) {
        int nk = causal ? std::min(i + 1, Lk) : Lk; std::vector<double> p(Lk), dp(Lk); double mx = -1e300, sum = 0, ds = 0;
        auto Q = [&](int c) { return (double)q[((size_t)n*Lq+i)*ld + h*D + c]; }; auto O = [&](int c) { return (double)dout[((size_t)n*Lq+i)*ld + h*D + c]; };
        for (int j = 0; j < nk; j++) { double a = 0, b = 0; for (int c = 0; c < D; c++) { a += Q(c) * k[((size_t)n*Lk+j)*ld+h*D+c]; b += O(c) * v[((size_t)n*Lk+j)*ld+h*D+c]; } p[j] = a*scale; dp[j] = b; mx = std::max(mx, p[j]); }
        for (int j = 0; j < nk; j++) { p[j] = exp(p[j]-mx); sum += p[j]; } for (int j = 0; j < nk; j++) { p[j] /= sum; ds += p[j]*dp[j]; }
        for (int j = 0; j < nk; j++) { double g = p[j]*(dp[j]-ds); for (int c = 0; c < D; c++) {
            rq[((size_t)n*Lq+i)*ld+h*D+c] += scale*g*k[((size_t)n*Lk+j)*ld+h*D+c]; rk[((size_t)n*Lk+j)*ld+h*D+c] += scale*g*Q(c); rv[((size_t)n*Lk+j)*ld+h*D+c] += p[j]*O(c); } }
    }
    auto unpadded = [&](std::vector<float> &g, int L) { for (int n = 0; n < N; n++) for (int r = 0; r < L; r++) for (int c = H*D; c < ld; c++) g[((size_t)n*L+r)*ld+c] = std::isnan(g[((size_t)n*L+r)*ld+c]) ? 0 : 1e9; };
    unpadded(dq, Lq); unpadded(dk, Lk); unpadded(dv, Lk);
    char w[160]; snprintf(w, sizeof w, "attention backward N%d H%d Lq%d Lk%d D%d pad%d causal%d dq", N, H, Lq, Lk, D, pad, causal);
    report(w, dq, rq, 1e-5); report("  ... dk", dk, rk, 1e-5); report("  ... dv", dv, rv, 1e-5);
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
    if (!getenv("EMU_ONLY_ATTENTION")) {
        test_bw_ew();
        test_gn_bw(2, 8, 10, 4, 0, false, true); test_gn_bw(2, 8, 10, 4, 1, true, true); test_gn_bw(1, 6, 7, 3, 1, false, false);
        test_gn_bw(1, 32, 3000, 8, 1, false, true);
        test_ln_bw(6, 8, false); test_ln_bw(70, 320, true); test_ln_bw(3, 33, false);
    }
    test_attention_bw(2, 3, 7, 7, 4, 0, 0);
    test_attention_bw(1, 2, 9, 9, 16, 3, 1);
    test_attention_bw(2, 2, 20, 77, 8, 0, 0);
    test_attention_bw(1, 1, 5, 0, 8, 0, 0);
    printf("%d of %d failed\n", fails, total);
    return fails != 0;
}
