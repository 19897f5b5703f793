/* data.c — the shapes dataset (procedural, counter-based) and the image-folder dataset.
 *
 * Shapes: an item is first sampled as attributes (shapes_sample: a handful of Philox
 * draws at counter index << 24), then rendered analytically: every pixel starts as the
 * background and blends in each shape by the fraction of its 4x4 sub-samples that fall
 * inside the shape.  Shapes never overlap (their boxes are kept apart), so the blend
 * order does not matter and no scratch image is needed.  Geometry is in units of the
 * image side, so any resolution draws the same picture, just sharper.
 *
 * Folder: opening parses captions.txt into one buffer (names and captions point into
 * it) and checks every file's PNG signature and IHDR; decoding waits for dataset_get,
 * which crops the center square and resamples it with separable weights (an exact box
 * filter when shrinking, so no aliasing; bilinear when enlarging). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "../core/fs.h"
#include "../core/rng.h"
#include "../io/png.h"
#include "data.h"

#define SUPERSAMPLE 4                       /* per axis: 16 samples per pixel */
#define MAX_RES 4096
#define MAX_SHAPES_SIZE ((long)1 << 39)     /* index << 24 must fit the 64-bit counter */
#define FOLDER_MAX_PIXELS ((size_t)1 << 26) /* per decoded image: 64 Mpx, 192 MiB */
#define FOLDER_MAX_FILE ((size_t)256 << 20)
#define CAPTIONS_MAX_FILE ((size_t)64 << 20)

/* ---- vocabulary --------------------------------------------------------------------- */

static const char *const kind_names[SHAPE_COUNT] = {
    "circle", "square", "triangle", "star", "cross" };
static const char *const colour_names[SHAPE_COLOUR_COUNT] = {
    "red", "green", "blue", "yellow", "purple", "orange", "white", "black" };
/* Pairwise RGB distance >= 90 between all shape colours and backgrounds (except the
 * white/black pairs that never share an image), so a nearest-colour classifier can tell
 * them apart even after a generator shifts them a little. */
static const uint8_t colour_rgb[SHAPE_COLOUR_COUNT][3] = {
    { 220, 30, 30 }, { 30, 160, 50 }, { 30, 70, 220 }, { 245, 220, 40 },
    { 150, 50, 190 }, { 245, 130, 20 }, { 245, 245, 245 }, { 20, 20, 20 } };
static const char *const bg_names[SHAPE_BG_COUNT] = {
    "white", "black", "gray", "light blue", "beige" };
static const uint8_t bg_rgb[SHAPE_BG_COUNT][3] = {
    { 245, 245, 245 }, { 20, 20, 20 }, { 128, 128, 128 }, { 150, 200, 240 }, { 225, 205, 160 } };

const char *shape_kind_name(enum shape_kind s) {
    return (unsigned)s < SHAPE_COUNT ? kind_names[s] : "?";
}
const char *shape_colour_name(enum shape_colour c) {
    return (unsigned)c < SHAPE_COLOUR_COUNT ? colour_names[c] : "?";
}
const char *shape_bg_name(enum shape_bg b) {
    return (unsigned)b < SHAPE_BG_COUNT ? bg_names[b] : "?";
}
void shape_colour_rgb(enum shape_colour c, uint8_t rgb[3]) {
    SD_ASSERT((unsigned)c < SHAPE_COLOUR_COUNT);
    memcpy(rgb, colour_rgb[c], 3);
}
void shape_bg_rgb(enum shape_bg b, uint8_t rgb[3]) {
    SD_ASSERT((unsigned)b < SHAPE_BG_COUNT);
    memcpy(rgb, bg_rgb[b], 3);
}

static int third(float v) { return v < 1.0f / 3 ? 0 : v < 2.0f / 3 ? 1 : 2; }
int shapes_cell(float cx, float cy) { return third(cy) * 3 + third(cx); }

const char *shapes_position_phrase(float cx, float cy) {
    static const char *const words[9] = {
        "at the top left", "at the top", "at the top right",
        "on the left", "in the center", "on the right",
        "at the bottom left", "at the bottom", "at the bottom right" };
    return words[shapes_cell(cx, cy)];
}

/* ---- sampling ----------------------------------------------------------------------- */

static int rng_below(struct sd_rng *r, int n) {
    return (int)(((uint64_t)sd_rng_u32(r) * (uint64_t)n) >> 32);
}
static float rng_range(struct sd_rng *r, float lo, float hi) {
    return lo + (hi - lo) * sd_rng_uniform(r);
}

static int bg_forbids(enum shape_bg bg, enum shape_colour c) {
    return (bg == SHAPE_BG_WHITE && c == SHAPE_COLOUR_WHITE) ||
           (bg == SHAPE_BG_BLACK && c == SHAPE_COLOUR_BLACK);
}

#define EDGE_MARGIN 0.03f   /* shapes keep this far from the image border */
#define GAP 0.04f           /* and this far from each other (box to box) */

static float clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Boxes of side size centred at (cx, cy) are GAP apart on at least one axis. */
static int layout_ok(const struct shapes_item *it) {
    for (int i = 0; i < it->n; i++)
        for (int j = i + 1; j < it->n; j++) {
            const struct shapes_obj *a = &it->obj[i], *b = &it->obj[j];
            float need = 0.5f * (a->size + b->size) + GAP;
            if (fabsf(a->cx - b->cx) < need && fabsf(a->cy - b->cy) < need) return 0;
        }
    return 1;
}

static void place(struct shapes_obj *o, float ux, float uy) {
    float lo = 0.5f * o->size + EDGE_MARGIN, hi = 1.0f - lo;
    o->cx = clampf(ux, lo, hi);
    o->cy = clampf(uy, lo, hi);
}

void shapes_sample(uint64_t seed, long index, struct shapes_item *it) {
    static const float size_lo[4] = { 0, 0.30f, 0.22f, 0.18f }, size_hi[4] = { 0, 0.55f, 0.38f, 0.30f };
    struct sd_rng r;
    sd_rng_init(&r, seed);
    r.offset = (uint64_t)index << 24;   /* the item's own counter range */
    memset(it, 0, sizeof *it);
    it->template_id = rng_below(&r, SHAPES_TEMPLATES);
    int u = rng_below(&r, 100);
    it->n = u < 40 ? 1 : u < 75 ? 2 : 3;
    it->bg = (enum shape_bg)rng_below(&r, SHAPE_BG_COUNT);
    for (int i = 0; i < it->n; i++) {
        it->obj[i].shape = (enum shape_kind)rng_below(&r, SHAPE_COUNT);
        enum shape_colour c;
        do c = (enum shape_colour)rng_below(&r, SHAPE_COLOUR_COUNT); while (bg_forbids(it->bg, c));
        it->obj[i].colour = c;
    }
    /* Distinct 3x3 cells, a little jitter, sizes by count; retry, then shrink. */
    float ux[SHAPES_MAX_OBJECTS], uy[SHAPES_MAX_OBJECTS];
    for (int attempt = 0; ; attempt++) {
        int cells[9];
        for (int k = 0; k < 9; k++) cells[k] = k;
        for (int i = 0; i < it->n; i++) {
            int j = i + rng_below(&r, 9 - i), t = cells[i];
            cells[i] = cells[j]; cells[j] = t;
            struct shapes_obj *o = &it->obj[i];
            o->size = rng_range(&r, size_lo[it->n], size_hi[it->n]);
            ux[i] = (cells[i] % 3 + 0.5f) / 3 + rng_range(&r, -0.05f, 0.05f);
            uy[i] = (cells[i] / 3 + 0.5f) / 3 + rng_range(&r, -0.05f, 0.05f);
            place(o, ux[i], uy[i]);
        }
        if (layout_ok(it) || attempt == 15) break;
    }
    while (!layout_ok(it)) {            /* distinct cells: converges well above size 0.1 */
        for (int i = 0; i < it->n; i++) {
            it->obj[i].size *= 0.92f;
            place(&it->obj[i], ux[i], uy[i]);
        }
    }
}

/* ---- rendering ---------------------------------------------------------------------- */

/* A shape in pixel units: its box and, for polygons, its vertices. */
struct geom {
    enum shape_kind kind;
    float cx, cy, half;            /* centre and half box side, pixels */
    float arm;                     /* cross: half arm thickness */
    int nv;
    float vx[10], vy[10];          /* triangle and star vertices */
    int x0, x1, y0, y1;            /* pixel box to visit, inclusive */
    float rgb[3];
};

#define STAR_INNER 0.45f           /* inner/outer radius: fat enough to survive 32 px */

static void geom_init(struct geom *g, const struct shapes_obj *o, int res) {
    g->kind = o->shape;
    g->cx = o->cx * res;
    g->cy = o->cy * res;
    g->half = 0.5f * o->size * res;
    g->arm = 0.18f * o->size * res;
    g->nv = 0;
    if (o->shape == SHAPE_TRIANGLE) {      /* upright, base = height = box side */
        g->nv = 3;
        g->vx[0] = g->cx;           g->vy[0] = g->cy - g->half;
        g->vx[1] = g->cx + g->half; g->vy[1] = g->cy + g->half;
        g->vx[2] = g->cx - g->half; g->vy[2] = g->cy + g->half;
    } else if (o->shape == SHAPE_STAR) {   /* five points, one up; box width = side */
        float R = g->half / sinf(72.0f * (float)M_PI / 180), rin = STAR_INNER * R;
        /* centre the box vertically: top is at -R, bottom at +R cos 36 */
        float ycen = g->cy + 0.5f * R * (1 - cosf(36.0f * (float)M_PI / 180));
        g->nv = 10;
        for (int k = 0; k < 10; k++) {
            float a = (float)M_PI * (-0.5f + k / 5.0f), rad = (k & 1) ? rin : R;
            g->vx[k] = g->cx + rad * cosf(a);
            g->vy[k] = ycen + rad * sinf(a);
        }
    }
    g->x0 = (int)floorf(g->cx - g->half) - 1; g->x1 = (int)ceilf(g->cx + g->half) + 1;
    g->y0 = (int)floorf(g->cy - g->half) - 1; g->y1 = (int)ceilf(g->cy + g->half) + 1;
    if (g->x0 < 0) g->x0 = 0;
    if (g->y0 < 0) g->y0 = 0;
    if (g->x1 > res - 1) g->x1 = res - 1;
    if (g->y1 > res - 1) g->y1 = res - 1;
    for (int c = 0; c < 3; c++) g->rgb[c] = colour_rgb[o->colour][c];
}

static int inside(const struct geom *g, float x, float y) {
    float dx = x - g->cx, dy = y - g->cy;
    switch (g->kind) {
    case SHAPE_CIRCLE: return dx * dx + dy * dy <= g->half * g->half;
    case SHAPE_SQUARE: return fabsf(dx) <= g->half && fabsf(dy) <= g->half;
    case SHAPE_CROSS:
        return (fabsf(dx) <= g->half && fabsf(dy) <= g->arm) ||
               (fabsf(dy) <= g->half && fabsf(dx) <= g->arm);
    default: {                              /* even-odd crossing test */
        int in = 0;
        for (int i = 0, j = g->nv - 1; i < g->nv; j = i++)
            if ((g->vy[i] > y) != (g->vy[j] > y) &&
                x < (g->vx[j] - g->vx[i]) * (y - g->vy[i]) / (g->vy[j] - g->vy[i]) + g->vx[i])
                in = !in;
        return in;
    }
    }
}

sd_status shapes_render(const struct shapes_item *it, int res, uint8_t *hwc, float *chw) {
    if (res < 8 || res > MAX_RES)
        return sd_fail(SD_ERR_INVALID, "shapes: resolution %d out of range [8, %d]", res, MAX_RES);
    if (it->n < 1 || it->n > SHAPES_MAX_OBJECTS || (unsigned)it->bg >= SHAPE_BG_COUNT)
        return sd_fail(SD_ERR_INVALID, "shapes: item has %d objects (1..%d) or a bad background",
                       it->n, SHAPES_MAX_OBJECTS);
    struct geom g[SHAPES_MAX_OBJECTS];
    for (int i = 0; i < it->n; i++) {
        const struct shapes_obj *o = &it->obj[i];
        if ((unsigned)o->shape >= SHAPE_COUNT || (unsigned)o->colour >= SHAPE_COLOUR_COUNT ||
            !(o->size > 0 && o->size <= 1))
            return sd_fail(SD_ERR_INVALID, "shapes: object %d has a bad shape, colour or size", i);
        geom_init(&g[i], o, res);
    }
    const float inv = 1.0f / (SUPERSAMPLE * SUPERSAMPLE);
    for (int y = 0; y < res; y++)
        for (int x = 0; x < res; x++) {
            float px[3] = { bg_rgb[it->bg][0], bg_rgb[it->bg][1], bg_rgb[it->bg][2] };
            for (int i = 0; i < it->n; i++) {
                if (x < g[i].x0 || x > g[i].x1 || y < g[i].y0 || y > g[i].y1) continue;
                int hits = 0;
                for (int sy = 0; sy < SUPERSAMPLE; sy++)
                    for (int sx = 0; sx < SUPERSAMPLE; sx++)
                        hits += inside(&g[i], x + (sx + 0.5f) / SUPERSAMPLE,
                                       y + (sy + 0.5f) / SUPERSAMPLE);
                float a = hits * inv;
                for (int c = 0; c < 3; c++) px[c] += a * (g[i].rgb[c] - px[c]);
            }
            for (int c = 0; c < 3; c++) {
                uint8_t v = (uint8_t)lrintf(clampf(px[c], 0, 255));
                if (hwc) hwc[((size_t)y * res + x) * 3 + c] = v;
                if (chw) chw[((size_t)c * res + y) * res + x] = v / 127.5f - 1.0f;
            }
        }
    return SD_OK;
}

/* ---- captions ----------------------------------------------------------------------- */

struct sbuf { char *p; size_t cap, len; int over; };

static void sb_add(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(struct sbuf *b, const char *fmt, ...) {
    if (b->over) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= b->cap - b->len) { b->over = 1; return; }
    b->len += (size_t)k;
}

/* "a red circle on the left and a blue square at the bottom right"; bare drops the
 * articles and joins with commas. */
static void sb_objects(struct sbuf *b, const struct shapes_item *it, int bare) {
    for (int i = 0; i < it->n; i++) {
        const struct shapes_obj *o = &it->obj[i];
        if (i > 0) sb_add(b, bare || i < it->n - 1 ? ", " : " and ");
        const char *art = bare ? "" : strchr("aeiou", colour_names[o->colour][0]) ? "an " : "a ";
        sb_add(b, "%s%s %s %s", art, colour_names[o->colour], kind_names[o->shape],
               shapes_position_phrase(o->cx, o->cy));
    }
}

sd_status shapes_caption(const struct shapes_item *it, char *caption, size_t cap) {
    static const char *const counts[4] = { "", "one shape", "two shapes", "three shapes" };
    if (it->n < 1 || it->n > SHAPES_MAX_OBJECTS || (unsigned)it->bg >= SHAPE_BG_COUNT)
        return sd_fail(SD_ERR_INVALID, "shapes: item has %d objects (1..%d) or a bad background",
                       it->n, SHAPES_MAX_OBJECTS);
    for (int i = 0; i < it->n; i++)
        if ((unsigned)it->obj[i].shape >= SHAPE_COUNT ||
            (unsigned)it->obj[i].colour >= SHAPE_COLOUR_COUNT)
            return sd_fail(SD_ERR_INVALID, "shapes: object %d has a bad shape or colour", i);
    if (!caption || cap == 0) return sd_fail(SD_ERR_INVALID, "shapes: no caption buffer");
    struct sbuf b = { caption, cap, 0, 0 };
    const char *bg = bg_names[it->bg];
    switch (it->template_id) {
    case 1: sb_add(&b, "a %s background with ", bg); sb_objects(&b, it, 0); break;
    case 2: sb_objects(&b, it, 1); sb_add(&b, ", %s background", bg); break;
    case 3: sb_add(&b, "%s on a %s background: ", counts[it->n], bg); sb_objects(&b, it, 0); break;
    default: sb_objects(&b, it, 0); sb_add(&b, ", on a %s background", bg); break;
    }
    if (b.over)
        return sd_fail(SD_ERR_INVALID, "shapes: caption buffer of %zu bytes is too small", cap);
    return SD_OK;
}

/* ---- the dataset interface ---------------------------------------------------------- */

enum dataset_kind { DATASET_SHAPES, DATASET_FOLDER };

struct folder_entry { const char *name, *caption; };   /* into dataset.text */

struct dataset {
    enum dataset_kind kind;
    int res;
    long size;
    uint64_t seed;                  /* shapes */
    char *dir;                      /* folder: the directory as given */
    char *text;                     /* folder: captions.txt, split in place */
    struct folder_entry *entries;   /* folder: size entries */
};

long dataset_size(const struct dataset *d) { return d->size; }
int dataset_resolution(const struct dataset *d) { return d->res; }
int dataset_has_attrs(const struct dataset *d) { return d->kind == DATASET_SHAPES; }

void dataset_free(struct dataset *d) {
    if (!d) return;
    sd_free(d->dir);
    sd_free(d->text);
    sd_free(d->entries);
    sd_free(d);
}

sd_status dataset_shapes(struct dataset **out, int res, uint64_t seed, long size) {
    *out = NULL;
    if (res < 8 || res > MAX_RES)
        return sd_fail(SD_ERR_INVALID, "shapes dataset: resolution %d out of range [8, %d]",
                       res, MAX_RES);
    if (size < 1 || size > MAX_SHAPES_SIZE)
        return sd_fail(SD_ERR_INVALID, "shapes dataset: size %ld out of range [1, %ld]",
                       size, MAX_SHAPES_SIZE);
    struct dataset *d = sd_calloc(1, sizeof *d);
    if (!d) return SD_ERR_NOMEM;
    d->kind = DATASET_SHAPES;
    d->res = res;
    d->seed = seed;
    d->size = size;
    *out = d;
    return SD_OK;
}

/* ---- folder: opening ---------------------------------------------------------------- */

static int has_png_suffix(const char *name) {
    size_t n = strlen(name);
    return n > 4 && strcasecmp(name + n - 4, ".png") == 0;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const struct folder_entry *)a)->name, ((const struct folder_entry *)b)->name);
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The signature and IHDR (first 33 bytes) of a PNG: cheap, catches most bad files early. */
static sd_status check_png_header(const char *path) {
    static const uint8_t sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
    uint8_t h[33];
    FILE *f = sd_fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return sd_fail(SD_ERR_NOTFOUND, "%s: listed in captions.txt but missing", path);
        return sd_fail(SD_ERR_IO, "%s: %s", path, sd_fs_strerror(errno));
    }
    size_t got = fread(h, 1, sizeof h, f);
    fclose(f);
    if (got < sizeof h || memcmp(h, sig, 8) != 0)
        return sd_fail(SD_ERR_FORMAT, "%s: not a PNG file (bad signature or truncated header)", path);
    if (be32(h + 8) != 13 || memcmp(h + 12, "IHDR", 4) != 0)
        return sd_fail(SD_ERR_FORMAT, "%s: corrupt PNG (no IHDR chunk first)", path);
    uint32_t w = be32(h + 16), ht = be32(h + 20);
    if (w == 0 || ht == 0 || w > (1u << 24) || ht > (1u << 24) ||
        (uint64_t)w * ht > FOLDER_MAX_PIXELS)
        return sd_fail(SD_ERR_FORMAT, "%s: PNG size %ux%u is zero or above %zu pixels",
                       path, w, ht, FOLDER_MAX_PIXELS);
    return SD_OK;
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) s[--n] = 0;
    return s;
}

/* Split d->text into entries: one per "name<TAB>caption" line. */
static sd_status parse_captions(struct dataset *d, const char *cpath, size_t len) {
    if (strlen(d->text) != len) return sd_fail(SD_ERR_FORMAT, "%s: contains a NUL byte", cpath);
    long lines = 1;
    for (size_t i = 0; i < len; i++) lines += d->text[i] == '\n';
    d->entries = sd_calloc((size_t)lines, sizeof *d->entries);
    if (!d->entries) return SD_ERR_NOMEM;
    char *p = d->text;
    for (long lineno = 1; p; lineno++) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        char *line = p;
        p = nl ? nl + 1 : NULL;
        if (line[strspn(line, " \t\r")] == 0 || line[0] == '#') continue;
        char *tab = strchr(line, '\t');
        if (!tab)
            return sd_fail(SD_ERR_FORMAT, "%s:%ld: expected filename<TAB>caption", cpath, lineno);
        *tab = 0;
        char *name = trim(line), *caption = trim(tab + 1);
        if (!has_png_suffix(name) || strchr(name, '/') || name[0] == '.')
            return sd_fail(SD_ERR_FORMAT,
                           "%s:%ld: file name '%s' must be a plain name in the folder ending in .png",
                           cpath, lineno, name);
        if (caption[0] == 0)
            return sd_fail(SD_ERR_FORMAT, "%s:%ld: %s has an empty caption", cpath, lineno, name);
        if (strlen(caption) >= DATASET_CAPTION_MAX)
            return sd_fail(SD_ERR_FORMAT, "%s:%ld: caption of %s is longer than %d bytes",
                           cpath, lineno, name, DATASET_CAPTION_MAX - 1);
        d->entries[d->size].name = name;
        d->entries[d->size].caption = caption;
        d->size++;
    }
    if (d->size == 0) return sd_fail(SD_ERR_FORMAT, "%s: lists no images", cpath);
    return SD_OK;
}

/* Every *.png in the folder has a caption; no name is listed twice; every listed file
 * looks like a PNG. */
static sd_status check_folder(struct dataset *d) {
    sd_status st = SD_OK;
    struct folder_entry *sorted = sd_malloc((size_t)d->size * sizeof *sorted);
    if (!sorted) return SD_ERR_NOMEM;
    memcpy(sorted, d->entries, (size_t)d->size * sizeof *sorted);
    qsort(sorted, (size_t)d->size, sizeof *sorted, cmp_entry);
    for (long i = 1; i < d->size; i++)
        if (strcmp(sorted[i - 1].name, sorted[i].name) == 0) {
            st = sd_fail(SD_ERR_FORMAT, "%s/captions.txt: %s is listed twice", d->dir, sorted[i].name);
            goto done;
        }
    DIR *dh = sd_opendir(d->dir);
    if (!dh) {
        st = sd_fail(SD_ERR_IO, "dataset folder %s: %s", d->dir, sd_fs_strerror(errno));
        goto done;
    }
    struct dirent *de;
    while ((de = readdir(dh))) {
        if (de->d_name[0] == '.' || !has_png_suffix(de->d_name)) continue;
        struct folder_entry key = { de->d_name, NULL };
        if (!bsearch(&key, sorted, (size_t)d->size, sizeof *sorted, cmp_entry)) {
            st = sd_fail(SD_ERR_NOTFOUND, "%s/%s: no caption in captions.txt", d->dir, de->d_name);
            break;
        }
    }
    closedir(dh);
    for (long i = 0; st == SD_OK && i < d->size; i++) {
        char *path = sd_path_join(d->dir, d->entries[i].name);
        if (!path) { st = SD_ERR_NOMEM; break; }
        st = check_png_header(path);
        sd_free(path);
    }
done:
    sd_free(sorted);
    return st;
}

sd_status dataset_folder(struct dataset **out, const char *dir, int res) {
    *out = NULL;
    if (!dir || !dir[0]) return sd_fail(SD_ERR_INVALID, "dataset folder: no directory given");
    if (res < 8 || res > MAX_RES)
        return sd_fail(SD_ERR_INVALID, "dataset folder %s: resolution %d out of range [8, %d]",
                       dir, res, MAX_RES);
    struct stat sb;
    if (sd_stat(dir, &sb) != 0)
        return sd_fail(errno == ENOENT ? SD_ERR_NOTFOUND : SD_ERR_IO, "dataset folder %s: %s",
                       dir, sd_fs_strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return sd_fail(SD_ERR_INVALID, "dataset folder %s: not a directory", dir);
    struct dataset *d = sd_calloc(1, sizeof *d);
    if (!d) return SD_ERR_NOMEM;
    d->kind = DATASET_FOLDER;
    d->res = res;
    sd_status st = SD_ERR_NOMEM;
    char *cpath = NULL;
    if (!(d->dir = sd_strdup(dir)) || !(cpath = sd_path_join(dir, "captions.txt"))) goto fail;
    size_t len;
    if (sd_stat(cpath, &sb) != 0) {
        st = sd_fail(SD_ERR_NOTFOUND,
                     "%s: missing (a dataset folder needs one line filename<TAB>caption per image)",
                     cpath);
        goto fail;
    }
    if ((st = sd_read_file(cpath, CAPTIONS_MAX_FILE, &d->text, &len)) != SD_OK) goto fail;
    if ((st = parse_captions(d, cpath, len)) != SD_OK) goto fail;
    if ((st = check_folder(d)) != SD_OK) goto fail;
    sd_free(cpath);
    *out = d;
    return SD_OK;
fail:
    sd_free(cpath);
    dataset_free(d);
    return st;
}

/* ---- folder: reading ---------------------------------------------------------------- */

/* Resample the centre square of a w x h RGB image to res x res.  One axis at a time, with
 * per-output taps: box (area-weighted) when shrinking, bilinear when enlarging. */
static sd_status crop_resize(const uint8_t *src, int w, int h, int res, uint8_t *dst) {
    int c = w < h ? w : h, x0 = (w - c) / 2, y0 = (h - c) / 2;
    double scale = (double)c / res;
    int K = c >= res ? (int)ceil(scale) + 2 : 2;            /* taps per output */
    size_t ntap = (size_t)res * K;
    size_t bytes = ntap * (sizeof(int) + sizeof(float)) + (size_t)c * res * 3 * sizeof(float);
    char *mem = sd_malloc(bytes);
    if (!mem) return SD_ERR_NOMEM;
    float *wt = (float *)mem, *tmp = wt + ntap;             /* tmp: (c rows, res, 3) */
    int *idx = (int *)(tmp + (size_t)c * res * 3);
    for (int o = 0; o < res; o++) {
        int *ix = idx + (size_t)o * K;
        float *ww = wt + (size_t)o * K;
        for (int k = 0; k < K; k++) { ix[k] = 0; ww[k] = 0; }
        if (c >= res) {
            double a = o * scale, b = (o + 1) * scale;
            int first = (int)floor(a);
            for (int k = 0; k < K; k++) {
                int s = first + k;
                if (s >= c) break;
                double lo = a > s ? a : s, hi = b < s + 1 ? b : s + 1;
                if (hi > lo) { ix[k] = s; ww[k] = (float)((hi - lo) / scale); }
            }
        } else {
            double x = (o + 0.5) * scale - 0.5;
            int i0 = (int)floor(x);
            float f = (float)(x - i0);
            int i1 = i0 + 1;
            if (i0 < 0) i0 = 0;
            if (i1 > c - 1) i1 = c - 1;
            if (i0 > c - 1) i0 = c - 1;
            ix[0] = i0; ww[0] = 1 - f;
            ix[1] = i1; ww[1] = f;
        }
    }
    for (int y = 0; y < c; y++) {                           /* horizontal */
        const uint8_t *row = src + ((size_t)(y0 + y) * w + x0) * 3;
        for (int o = 0; o < res; o++) {
            float acc[3] = { 0, 0, 0 };
            for (int k = 0; k < K; k++) {
                const uint8_t *p = row + (size_t)idx[(size_t)o * K + k] * 3;
                float ww = wt[(size_t)o * K + k];
                acc[0] += ww * p[0]; acc[1] += ww * p[1]; acc[2] += ww * p[2];
            }
            memcpy(tmp + ((size_t)y * res + o) * 3, acc, sizeof acc);
        }
    }
    for (int o = 0; o < res; o++)                           /* vertical */
        for (int x = 0; x < res; x++)
            for (int ch = 0; ch < 3; ch++) {
                float acc = 0;
                for (int k = 0; k < K; k++)
                    acc += wt[(size_t)o * K + k] *
                           tmp[((size_t)idx[(size_t)o * K + k] * res + x) * 3 + ch];
                dst[((size_t)o * res + x) * 3 + ch] = (uint8_t)lrintf(clampf(acc, 0, 255));
            }
    sd_free(mem);
    return SD_OK;
}

static sd_status folder_get(const struct dataset *d, long index, uint8_t *hwc) {
    const char *name = d->entries[index].name;
    char *path = sd_path_join(d->dir, name), *data = NULL;
    uint8_t *rgb = NULL;
    size_t len;
    int w, h;
    sd_status st = SD_ERR_NOMEM;
    if (!path) goto done;
    if ((st = sd_read_file(path, FOLDER_MAX_FILE, &data, &len)) != SD_OK) {
        sd_wrap(st, "dataset folder item %ld", index);
        goto done;
    }
    if ((st = png_decode((const uint8_t *)data, len, FOLDER_MAX_PIXELS, &rgb, &w, &h)) != SD_OK) {
        sd_wrap(st, "%s", path);
        goto done;
    }
    st = crop_resize(rgb, w, h, d->res, hwc);
done:
    sd_free(rgb);
    sd_free(data);
    sd_free(path);
    return st;
}

sd_status dataset_get(const struct dataset *d, long index, float *chw, uint8_t *hwc,
                      char *caption, size_t cap, struct shapes_item *attrs) {
    if (index < 0 || index >= d->size)
        return sd_fail(SD_ERR_INVALID, "dataset: index %ld out of range [0, %ld)", index, d->size);
    if (d->kind == DATASET_SHAPES) {
        struct shapes_item it;
        shapes_sample(d->seed, index, &it);
        if (attrs) *attrs = it;
        if (caption) SD_TRY(shapes_caption(&it, caption, cap));
        if (chw || hwc) SD_TRY(shapes_render(&it, d->res, hwc, chw));
        return SD_OK;
    }
    if (attrs)
        return sd_fail(SD_ERR_INVALID, "dataset folder %s: items have no shape attributes", d->dir);
    const struct folder_entry *e = &d->entries[index];
    if (caption) {
        size_t n = strlen(e->caption);
        if (n >= cap)
            return sd_fail(SD_ERR_INVALID, "dataset: caption of %s needs %zu bytes, buffer has %zu",
                           e->name, n + 1, cap);
        memcpy(caption, e->caption, n + 1);
    }
    if (!chw && !hwc) return SD_OK;
    size_t npix = (size_t)d->res * d->res;
    uint8_t *buf = hwc ? hwc : sd_malloc(npix * 3);
    if (!buf) return SD_ERR_NOMEM;
    sd_status st = folder_get(d, index, buf);
    if (st == SD_OK && chw)
        for (size_t i = 0; i < npix; i++)
            for (int c = 0; c < 3; c++) chw[c * npix + i] = buf[i * 3 + c] / 127.5f - 1.0f;
    if (!hwc) sd_free(buf);
    return st;
}
