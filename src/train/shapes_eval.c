/* shapes_eval.c — attribute accuracy and MMD for the shapes dataset (see shapes_eval.h).
 *
 * Built from plain image statistics rather than a learned classifier so that the check
 * itself needs no training and cannot share a model's blind spots: nearest-palette
 * labels, 4-connected components by breadth-first search, and per-component geometry
 * (bounding box, centroid, convex hull of the pixel corners by monotone chain).  Each
 * image takes one scratch allocation, sized by the resolution. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "shapes_eval.h"

#define NO_LABEL 255
#define FG_LABEL 254

/* ---- segmentation ------------------------------------------------------------------- */

struct scratch {
    int res;
    uint8_t *label;         /* (H, W): colour index, NO_LABEL, or FG_LABEL in the fg pass */
    int *seen;              /* (H, W): id of the component holding the pixel, 0 = none */
    int *mark;              /* (H, W): id of the component the pixel lies outside of */
    int *queue;             /* (H*W) */
    int *rowmin, *rowmax;   /* (H) */
    int *rowcnt, *colcnt;   /* (H), (W) */
    double *pts;            /* (4*H + 1, 2) hull input, then (8*H + 2, 2) hull */
};

static sd_status scratch_init(struct scratch *s, int res) {
    size_t n = (size_t)res * res;
    size_t bytes = n + n * sizeof(int) * 3 + (size_t)res * 4 * sizeof(int) +
                   ((size_t)12 * res + 4) * 2 * sizeof(double) + 16;
    char *m = sd_malloc(bytes);
    if (!m) return SD_ERR_NOMEM;
    s->res = res;
    s->pts = (double *)m;
    s->seen = (int *)(s->pts + ((size_t)12 * res + 4) * 2);
    s->mark = s->seen + n;
    s->queue = s->mark + n;
    s->rowmin = s->queue + n;
    s->rowmax = s->rowmin + res;
    s->rowcnt = s->rowmax + res;
    s->colcnt = s->rowcnt + res;
    s->label = (uint8_t *)(s->colcnt + res);
    return SD_OK;
}
static void scratch_free(struct scratch *s) { sd_free(s->pts); }

static double dist2(const uint8_t *p, const uint8_t *q) {
    double a = (double)p[0] - q[0], b = (double)p[1] - q[1], c = (double)p[2] - q[2];
    return a * a + b * b + c * c;
}

static void border_median(const uint8_t *hwc, int res, uint8_t bg[3]) {
    for (int c = 0; c < 3; c++) {
        int hist[256] = { 0 }, total = 0;
        for (int i = 0; i < res; i++) {
            int xy[4][2] = { { i, 0 }, { i, res - 1 }, { 0, i }, { res - 1, i } };
            for (int k = 0; k < 4; k++) {
                hist[hwc[((size_t)xy[k][1] * res + xy[k][0]) * 3 + c]]++;
                total++;
            }
        }
        int acc = 0, v = 0;
        while (v < 255 && (acc += hist[v]) * 2 < total) v++;
        bg[c] = (uint8_t)v;
    }
}

static int cmp_pt(const void *a, const void *b) {
    const double *p = a, *q = b;
    return p[0] < q[0] ? -1 : p[0] > q[0] ? 1 : p[1] < q[1] ? -1 : p[1] > q[1];
}
static double cross3(const double *o, const double *a, const double *b) {
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
}

/* Area of the convex hull of n points (monotone chain); hull needs 2n+1 slots. */
static double hull_area(double *p, int n, double *hull) {
    qsort(p, (size_t)n, 2 * sizeof(double), cmp_pt);
    int k = 0;
    for (int i = 0; i < n; i++) {
        while (k >= 2 && cross3(hull + 2 * (k - 2), hull + 2 * (k - 1), p + 2 * i) <= 0) k--;
        hull[2 * k] = p[2 * i]; hull[2 * k + 1] = p[2 * i + 1]; k++;
    }
    for (int i = n - 2, t = k + 1; i >= 0; i--) {
        while (k >= t && cross3(hull + 2 * (k - 2), hull + 2 * (k - 1), p + 2 * i) <= 0) k--;
        hull[2 * k] = p[2 * i]; hull[2 * k + 1] = p[2 * i + 1]; k++;
    }
    double a = 0;
    for (int i = 0; i + 1 < k; i++)
        a += hull[2 * i] * hull[2 * i + 3] - hull[2 * i + 2] * hull[2 * i + 1];
    return fabs(a) * 0.5;
}

/* (fill, solidity, 2 * voff, vsym): at 64 px over sizes 0.16..0.55, the mean of clean
 * renders and of renders degraded like a generator's output (3x3 blur, a colour cast,
 * N(0, 12) pixel noise), which round corners and roughen edges.  Misclassified at 64 px:
 * 0 of 200 clean, 5 of 200 degraded (small squares taken for circles). */
static const float proto[SHAPE_COUNT][4] = {
    [SHAPE_CIRCLE] = { 0.81f, 0.94f, 0.00f, 0.98f },
    [SHAPE_SQUARE] = { 0.98f, 0.97f, 0.00f, 0.98f },
    [SHAPE_TRIANGLE] = { 0.60f, 0.90f, 0.26f, 0.42f },
    [SHAPE_STAR] = { 0.53f, 0.66f, 0.07f, 0.50f },
    [SHAPE_CROSS] = { 0.59f, 0.76f, 0.00f, 0.97f },
};

static enum shape_kind classify(const struct shapes_component *c) {
    float f[4] = { c->fill, c->solidity, 2 * c->voff, c->vsym };
    int best = 0;
    double bd = 1e30;
    for (int s = 0; s < SHAPE_COUNT; s++) {
        double d = 0;
        for (int k = 0; k < 4; k++) d += (f[k] - proto[s][k]) * (f[k] - proto[s][k]);
        if (d < bd) { bd = d; best = s; }
    }
    return (enum shape_kind)best;
}

/* Keep the SHAPES_EVAL_MAX_COMPONENTS largest. */
static void keep(struct shapes_component *list, int *n, const struct shapes_component *c) {
    if (*n < SHAPES_EVAL_MAX_COMPONENTS) { list[(*n)++] = *c; return; }
    int small = 0;
    for (int i = 1; i < *n; i++) if (list[i].area < list[small].area) small = i;
    if (c->area > list[small].area) list[small] = *c;
}

static int cmp_area(const void *a, const void *b) {
    long x = ((const struct shapes_component *)a)->area, y = ((const struct shapes_component *)b)->area;
    return x > y ? -1 : x < y;
}

/* Components of s->label: the 4-connected regions of equal label other than NO_LABEL. */
static void components(struct scratch *s, struct shapes_component *list, int *count) {
    int res = s->res;
    size_t npix = (size_t)res * res;
    long min_area = (long)ceilf(SHAPES_EVAL_MIN_AREA * res * res);
    if (min_area < 10) min_area = 10;
    memset(s->seen, 0, npix * sizeof(int));
    memset(s->mark, 0, npix * sizeof(int));
    *count = 0;
    int id = 0;
    for (size_t start = 0; start < npix; start++) {
        uint8_t lab = s->label[start];
        if (lab == NO_LABEL || s->seen[start]) continue;
        int head = 0, tail = 0, x0 = res, x1 = -1, y0 = res, y1 = -1, border = 0;
        double sy = 0;
        s->queue[tail++] = (int)start;
        s->seen[start] = ++id;
        while (head < tail) {
            int p = s->queue[head++], x = p % res, y = p / res;
            sy += y + 0.5;
            if (x < x0) x0 = x;
            if (x > x1) x1 = x;
            if (y < y0) y0 = y;
            if (y > y1) y1 = y;
            if (x == 0 || y == 0 || x == res - 1 || y == res - 1) border = 1;
            int nb[4] = { x > 0 ? p - 1 : -1, x < res - 1 ? p + 1 : -1,
                          y > 0 ? p - res : -1, y < res - 1 ? p + res : -1 };
            for (int k = 0; k < 4; k++)
                if (nb[k] >= 0 && !s->seen[nb[k]] && s->label[nb[k]] == lab) {
                    s->seen[nb[k]] = id;
                    s->queue[tail++] = nb[k];
                }
        }
        long area = tail;
        if (area < min_area || border) continue;
        /* Hull of the pixel squares: each row's extreme pixels give 4 corners. */
        for (int y = y0; y <= y1; y++) { s->rowmin[y] = res; s->rowmax[y] = -1; }
        for (int i = 0; i < tail; i++) {
            int x = s->queue[i] % res, y = s->queue[i] / res;
            if (x < s->rowmin[y]) s->rowmin[y] = x;
            if (x > s->rowmax[y]) s->rowmax[y] = x;
        }
        int np = 0;
        for (int y = y0; y <= y1; y++) {
            if (s->rowmax[y] < 0) continue;
            double xs[2] = { s->rowmin[y], s->rowmax[y] + 1.0 };
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < 2; b++) {
                    s->pts[2 * np] = xs[a]; s->pts[2 * np + 1] = y + b; np++;
                }
        }
        double harea = hull_area(s->pts, np, s->pts + 2 * np);
        /* Fill holes (shapes have none; a generator's speckle does): mark what the box
         * border reaches through 8-connected non-component pixels; the rest is inside. */
        head = tail = 0;
        for (int y = y0; y <= y1; y++)
            for (int x = x0; x <= x1; x++) {
                int p = y * res + x;
                if ((y == y0 || y == y1 || x == x0 || x == x1) && s->seen[p] != id) {
                    s->mark[p] = id;
                    s->queue[tail++] = p;
                }
            }
        while (head < tail) {
            int p = s->queue[head++], x = p % res, y = p / res;
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    int xx = x + dx, yy = y + dy, q = yy * res + xx;
                    if (xx < x0 || xx > x1 || yy < y0 || yy > y1) continue;
                    if (s->seen[q] != id && s->mark[q] != id) { s->mark[q] = id; s->queue[tail++] = q; }
                }
        }
        long filled_all = (long)(x1 - x0 + 1) * (y1 - y0 + 1) - tail;
        /* The box for fill and vsym drops end rows and columns holding together at most
         * 1% of the area each side: a generator's stray edge pixels, not shape. */
        for (int y = y0; y <= y1; y++) s->rowcnt[y] = 0;
        for (int x = x0; x <= x1; x++) s->colcnt[x] = 0;
        for (int y = y0; y <= y1; y++)
            for (int x = x0; x <= x1; x++)
                if (s->mark[y * res + x] != id) { s->rowcnt[y]++; s->colcnt[x]++; }
        long trim = area / 100, cut;
        for (cut = 0; y0 < y1 && cut + s->rowcnt[y0] <= trim; y0++) cut += s->rowcnt[y0];
        for (cut = 0; y1 > y0 && cut + s->rowcnt[y1] <= trim; y1--) cut += s->rowcnt[y1];
        for (cut = 0; x0 < x1 && cut + s->colcnt[x0] <= trim; x0++) cut += s->colcnt[x0];
        for (cut = 0; x1 > x0 && cut + s->colcnt[x1] <= trim; x1--) cut += s->colcnt[x1];
        struct shapes_component c;
        int bw = x1 - x0 + 1, bh = y1 - y0 + 1;
        long filled = 0;
        for (int y = y0; y <= y1; y++)
            for (int x = x0; x <= x1; x++) filled += s->mark[y * res + x] != id;
        c.colour = lab == FG_LABEL ? -1 : lab;
        c.area = area;
        c.cx = (x0 + 0.5f * bw) / res;         /* box centre, like shapes_obj's cx, cy */
        c.cy = (y0 + 0.5f * bh) / res;
        c.fill = (float)filled / ((float)bw * bh);
        c.solidity = harea > 0 ? (float)(filled_all / harea) : 0;
        c.voff = (float)((sy / area - (y0 + 0.5 * bh)) / bh);
        long both = 0;                          /* overlap with its upside-down self */
        for (int y = y0; y <= y1; y++)
            for (int x = x0; x <= x1; x++)
                both += s->mark[y * res + x] != id && s->mark[(y0 + y1 - y) * res + x] != id;
        c.vsym = (float)both / (float)(2 * filled - both);
        c.shape = classify(&c);
        keep(list, count, &c);
    }
    qsort(list, (size_t)*count, sizeof *list, cmp_area);
}

static void segment(const uint8_t *hwc, struct scratch *s, struct shapes_segmentation *seg) {
    int res = s->res;
    size_t npix = (size_t)res * res;
    uint8_t pal[SHAPE_COLOUR_COUNT][3];
    for (int c = 0; c < SHAPE_COLOUR_COUNT; c++) shape_colour_rgb((enum shape_colour)c, pal[c]);
    border_median(hwc, res, seg->bg);
    const double cmax = (double)SHAPES_EVAL_COLOUR_DIST * SHAPES_EVAL_COLOUR_DIST;
    for (size_t i = 0; i < npix; i++) {          /* colour labels; ties go to the background */
        const uint8_t *p = hwc + i * 3;
        double best = dist2(p, seg->bg);
        uint8_t lab = NO_LABEL;
        for (int c = 0; c < SHAPE_COLOUR_COUNT; c++) {
            double d = dist2(p, pal[c]);
            if (d < best && d <= cmax) { best = d; lab = (uint8_t)c; }
        }
        s->label[i] = lab;
    }
    components(s, seg->colour, &seg->ncolour);
    const double fgmin = (double)SHAPES_EVAL_FG_DIST * SHAPES_EVAL_FG_DIST;
    /* fg: nearer some shape colour than the background, however far (an edge pixel joins
     * at about half coverage, as in the colour labels); ties go to the background */
    for (size_t i = 0; i < npix; i++) {
        const uint8_t *p = hwc + i * 3;
        double dbg = dist2(p, seg->bg);
        int near = 0;
        for (int c = 0; c < SHAPE_COLOUR_COUNT && !near; c++) near = dist2(p, pal[c]) < dbg;
        s->label[i] = near && dbg > fgmin ? FG_LABEL : NO_LABEL;
    }
    components(s, seg->fg, &seg->nfg);
}

sd_status shapes_segment(const uint8_t *hwc, int res, struct shapes_segmentation *seg) {
    if (res < 8) return sd_fail(SD_ERR_INVALID, "shapes eval: resolution %d below 8", res);
    struct scratch s;
    SD_TRY(scratch_init(&s, res));
    segment(hwc, &s, seg);
    scratch_free(&s);
    return SD_OK;
}

/* ---- verdicts ----------------------------------------------------------------------- */

static void judge(const struct shapes_segmentation *seg, const struct shapes_item *want,
                  struct shapes_verdict *v) {
    int used_c[SHAPES_EVAL_MAX_COMPONENTS] = { 0 }, used_s[SHAPES_EVAL_MAX_COMPONENTS] = { 0 },
        used_j[SHAPES_EVAL_MAX_COMPONENTS] = { 0 };
    v->colour_ok = v->shape_ok = v->joint_ok = v->position_ok = 1;
    for (int o = 0; o < want->n; o++) {
        const struct shapes_obj *w = &want->obj[o];
        int fc = 0, fs = 0, fj = -1;
        for (int i = 0; i < seg->ncolour && !fc; i++)
            if (!used_c[i] && seg->colour[i].colour == (int)w->colour) used_c[i] = fc = 1;
        for (int i = 0; i < seg->nfg && !fs; i++)
            if (!used_s[i] && seg->fg[i].shape == w->shape) used_s[i] = fs = 1;
        for (int i = 0; i < seg->ncolour && fj < 0; i++)
            if (!used_j[i] && seg->colour[i].colour == (int)w->colour &&
                seg->colour[i].shape == w->shape) { used_j[i] = 1; fj = i; }
        v->colour_ok &= fc;
        v->shape_ok &= fs;
        v->joint_ok &= fj >= 0;
        v->position_ok &= fj >= 0 &&
            shapes_cell(seg->colour[fj].cx, seg->colour[fj].cy) == shapes_cell(w->cx, w->cy);
    }
}

static sd_status check_want(const struct shapes_item *w) {
    if (w->n < 1 || w->n > SHAPES_MAX_OBJECTS)
        return sd_fail(SD_ERR_INVALID, "shapes eval: %d objects wanted (1..%d)", w->n,
                       SHAPES_MAX_OBJECTS);
    return SD_OK;
}

sd_status shapes_eval_image(const uint8_t *hwc, int res, const struct shapes_item *want,
                            struct shapes_verdict *v) {
    SD_TRY(check_want(want));
    struct shapes_segmentation seg;
    SD_TRY(shapes_segment(hwc, res, &seg));
    judge(&seg, want, v);
    return SD_OK;
}

sd_status shapes_eval_set(const uint8_t *hwc, int n, int res, const struct shapes_item *wants,
                          struct shapes_scores *out) {
    memset(out, 0, sizeof *out);
    if (n < 1 || res < 8)
        return sd_fail(SD_ERR_INVALID, "shapes eval: %d images at resolution %d", n, res);
    for (int i = 0; i < n; i++) SD_TRY(check_want(&wants[i]));
    struct scratch s;
    SD_TRY(scratch_init(&s, res));
    struct shapes_segmentation seg;
    long c = 0, sh = 0, j = 0, p = 0;
    for (int i = 0; i < n; i++) {
        struct shapes_verdict v;
        segment(hwc + (size_t)i * res * res * 3, &s, &seg);
        judge(&seg, &wants[i], &v);
        c += v.colour_ok; sh += v.shape_ok; j += v.joint_ok; p += v.position_ok;
    }
    scratch_free(&s);
    out->n = n;
    out->colour = (double)c / n;
    out->shape = (double)sh / n;
    out->joint = (double)j / n;
    out->position = (double)p / n;
    return SD_OK;
}

/* ---- the fixed prompt set ----------------------------------------------------------- */

static int forbids(enum shape_bg bg, enum shape_colour c) {
    return (bg == SHAPE_BG_WHITE && c == SHAPE_COLOUR_WHITE) ||
           (bg == SHAPE_BG_BLACK && c == SHAPE_COLOUR_BLACK);
}

int shapes_prompt_count(void) { return SHAPES_PROMPT_SINGLE + SHAPES_PROMPT_PAIRS; }

sd_status shapes_prompt(int i, struct shapes_item *w, char *caption, size_t cap) {
    if (i < 0 || i >= shapes_prompt_count())
        return sd_fail(SD_ERR_INVALID, "shapes prompt %d out of range [0, %d)", i,
                       shapes_prompt_count());
    memset(w, 0, sizeof *w);
    w->template_id = 0;
    if (i < SHAPES_PROMPT_SINGLE) {
        int c = i / SHAPE_COUNT, s = i % SHAPE_COUNT;
        w->n = 1;
        w->obj[0] = (struct shapes_obj){ (enum shape_kind)s, (enum shape_colour)c, 0.5f, 0.5f, 0.45f };
        w->bg = (enum shape_bg)(i % SHAPE_BG_COUNT);
        while (forbids(w->bg, w->obj[0].colour)) w->bg = (enum shape_bg)((w->bg + 1) % SHAPE_BG_COUNT);
    } else {
        int k = i - SHAPES_PROMPT_SINGLE;
        int ca = k % SHAPE_COLOUR_COUNT, cb = (3 * k + 1) % SHAPE_COLOUR_COUNT;
        if (cb == ca) cb = (cb + 1) % SHAPE_COLOUR_COUNT;
        int sa = k % SHAPE_COUNT, sb = (sa + 1 + k / SHAPE_COUNT) % SHAPE_COUNT;
        w->n = 2;
        w->obj[0] = (struct shapes_obj){ (enum shape_kind)sa, (enum shape_colour)ca, 0.25f, 0.5f, 0.32f };
        w->obj[1] = (struct shapes_obj){ (enum shape_kind)sb, (enum shape_colour)cb, 0.75f, 0.5f, 0.32f };
        w->bg = (enum shape_bg)(k % SHAPE_BG_COUNT);
        while (forbids(w->bg, w->obj[0].colour) || forbids(w->bg, w->obj[1].colour))
            w->bg = (enum shape_bg)((w->bg + 1) % SHAPE_BG_COUNT);
    }
    return caption ? shapes_caption(w, caption, cap) : SD_OK;
}

/* ---- features and MMD --------------------------------------------------------------- */

static void features(const uint8_t *hwc, struct scratch *s, float *f) {
    int res = s->res;
    size_t npix = (size_t)res * res;
    memset(f, 0, SHAPES_FEAT_DIM * sizeof *f);
    float inv = 1.0f / (float)npix;
    for (size_t i = 0; i < npix; i++) {           /* 4x4x4 RGB histogram */
        const uint8_t *p = hwc + i * 3;
        f[(p[0] >> 6) * 16 + (p[1] >> 6) * 4 + (p[2] >> 6)] += inv;
    }
    /* RGB gradient magnitude: the flat fraction, then how strong the edges are (as a
     * distribution over edge pixels, so a blur that spreads few edges still shows) */
    static const float edges[5] = { 4, 16, 48, 96, 160 };
    long nedge = 0;
    for (int y = 0; y + 1 < res; y++)
        for (int x = 0; x + 1 < res; x++) {
            const uint8_t *p = hwc + ((size_t)y * res + x) * 3, *r = p + 3, *d = p + (size_t)res * 3;
            float g2 = 0;
            for (int c = 0; c < 3; c++) {
                float gx = (float)r[c] - p[c], gy = (float)d[c] - p[c];
                g2 += gx * gx + gy * gy;
            }
            float g = sqrtf(g2);
            int b = 0;
            while (b < 5 && g >= edges[b]) b++;
            f[64 + b] += 1;
            nedge += b > 0;
        }
    f[64] /= (float)(res - 1) * (res - 1);
    for (int b = 1; b < 6 && nedge; b++) f[64 + b] /= (float)nedge;
    struct shapes_segmentation seg;
    segment(hwc, s, &seg);
    /* colours of the foreground: s->label holds the fg mask now, colours are recomputed */
    float *cf = f + 70;
    uint8_t pal[SHAPE_COLOUR_COUNT][3];
    for (int c = 0; c < SHAPE_COLOUR_COUNT; c++) shape_colour_rgb((enum shape_colour)c, pal[c]);
    long nfg = 0;
    for (size_t i = 0; i < npix; i++) {
        if (s->label[i] != FG_LABEL) continue;
        int lab = SHAPE_COLOUR_COUNT;
        double best = (double)SHAPES_EVAL_COLOUR_DIST * SHAPES_EVAL_COLOUR_DIST;
        for (int c = 0; c < SHAPE_COLOUR_COUNT; c++) {
            double d = dist2(hwc + i * 3, pal[c]);
            if (d <= best) { best = d; lab = c; }
        }
        cf[lab] += 1;
        nfg++;
    }
    for (int c = 0; c <= SHAPE_COLOUR_COUNT && nfg; c++) cf[c] /= (float)nfg;
    float *sf = f + 79;
    sf[0] = seg.nfg / 3.0f;
    long fg_area = 0;
    for (int i = 0; i < seg.nfg; i++) {
        sf[1 + seg.fg[i].shape] += 1.0f / seg.nfg;
        sf[6] += seg.fg[i].fill / seg.nfg;
        sf[7] += seg.fg[i].solidity / seg.nfg;
        fg_area += seg.fg[i].area;
    }
    sf[8] = (float)fg_area / (float)npix;
}

sd_status shapes_features(const uint8_t *hwc, int res, float *feat) {
    if (res < 8) return sd_fail(SD_ERR_INVALID, "shapes features: resolution %d below 8", res);
    struct scratch s;
    SD_TRY(scratch_init(&s, res));
    features(hwc, &s, feat);
    scratch_free(&s);
    return SD_OK;
}

static double kern(const float *a, const float *b) {   /* Gaussian */
    double d = 0;
    for (int k = 0; k < SHAPES_FEAT_DIM; k++) { double t = (double)a[k] - b[k]; d += t * t; }
    return exp(-0.5 * d / ((double)SHAPES_MMD_SIGMA * SHAPES_MMD_SIGMA));
}

double shapes_mmd2_features(const float *fa, int na, const float *fb, int nb) {
    SD_ASSERT(na >= 2 && nb >= 2);
    double xx = 0, yy = 0, xy = 0;
    for (int i = 0; i < na; i++)
        for (int j = i + 1; j < na; j++) xx += kern(fa + (size_t)i * SHAPES_FEAT_DIM, fa + (size_t)j * SHAPES_FEAT_DIM);
    for (int i = 0; i < nb; i++)
        for (int j = i + 1; j < nb; j++) yy += kern(fb + (size_t)i * SHAPES_FEAT_DIM, fb + (size_t)j * SHAPES_FEAT_DIM);
    for (int i = 0; i < na; i++)
        for (int j = 0; j < nb; j++) xy += kern(fa + (size_t)i * SHAPES_FEAT_DIM, fb + (size_t)j * SHAPES_FEAT_DIM);
    return 2 * xx / ((double)na * (na - 1)) + 2 * yy / ((double)nb * (nb - 1)) -
           2 * xy / ((double)na * nb);
}

sd_status shapes_mmd2(const uint8_t *a, int na, const uint8_t *b, int nb, int res, double *mmd2) {
    if (na < 2 || nb < 2 || res < 8)
        return sd_fail(SD_ERR_INVALID, "shapes mmd: need >= 2 images per set at res >= 8 "
                       "(got %d and %d at %d)", na, nb, res);
    float *f = sd_malloc((size_t)(na + nb) * SHAPES_FEAT_DIM * sizeof(float));
    if (!f) return SD_ERR_NOMEM;
    struct scratch s;
    sd_status st = scratch_init(&s, res);
    if (st != SD_OK) { sd_free(f); return st; }
    size_t img = (size_t)res * res * 3;
    for (int i = 0; i < na; i++) features(a + i * img, &s, f + (size_t)i * SHAPES_FEAT_DIM);
    for (int i = 0; i < nb; i++) features(b + i * img, &s, f + (size_t)(na + i) * SHAPES_FEAT_DIM);
    scratch_free(&s);
    *mmd2 = shapes_mmd2_features(f, na, f + (size_t)na * SHAPES_FEAT_DIM, nb);
    sd_free(f);
    return SD_OK;
}
