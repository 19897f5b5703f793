/* test_data.c — the shapes dataset (determinism, captions, any resolution), the image
 * folder dataset (crop and resize, and its errors), and the attribute evaluator: high on
 * the dataset's own renders, low on noise and constant images, and an MMD that is ~0
 * between two samples of the dataset and large against noise. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/rng.h"
#include "io/png.h"
#include "train/data.h"
#include "train/shapes_eval.h"
#include "tap.h"

/* ---- shapes dataset ----------------------------------------------------------------- */

static void test_palette(void) {
    int worst = 1 << 30;
    uint8_t a[3], b[3];
    /* shape colours 0..7, then backgrounds 8..12 */
    for (int i = 0; i < SHAPE_COLOUR_COUNT + SHAPE_BG_COUNT; i++)
        for (int j = i + 1; j < SHAPE_COLOUR_COUNT + SHAPE_BG_COUNT; j++) {
            if (i < SHAPE_COLOUR_COUNT) shape_colour_rgb(i, a); else shape_bg_rgb(i - SHAPE_COLOUR_COUNT, a);
            if (j < SHAPE_COLOUR_COUNT) shape_colour_rgb(j, b); else shape_bg_rgb(j - SHAPE_COLOUR_COUNT, b);
            if ((i == SHAPE_COLOUR_WHITE && j == SHAPE_COLOUR_COUNT + SHAPE_BG_WHITE) ||
                (i == SHAPE_COLOUR_BLACK && j == SHAPE_COLOUR_COUNT + SHAPE_BG_BLACK))
                continue;   /* never in one image */
            int d = 0;
            for (int c = 0; c < 3; c++) d += (a[c] - b[c]) * (a[c] - b[c]);
            if (d < worst) worst = d;
        }
    ok(worst >= 90 * 90, "palette: every shape colour and background >= 90 apart (min %.1f)",
       sqrt(worst));
}

static void test_determinism(void) {
    struct dataset *d1, *d2, *d3;
    ok(dataset_shapes(&d1, 64, 1234, 1000) == SD_OK, "shapes dataset opens");
    dataset_shapes(&d2, 64, 1234, 1000);
    dataset_shapes(&d3, 64, 1235, 1000);
    size_t n = 64 * 64 * 3;
    uint8_t *a = malloc(n), *b = malloc(n), *c = malloc(n);
    char ca[DATASET_CAPTION_MAX], cb[DATASET_CAPTION_MAX], cc[DATASET_CAPTION_MAX];
    /* read 7 first on d1; on d2 read others first, so order cannot matter */
    dataset_get(d1, 7, NULL, a, ca, sizeof ca, NULL);
    dataset_get(d2, 999, NULL, b, cb, sizeof cb, NULL);
    dataset_get(d2, 3, NULL, b, cb, sizeof cb, NULL);
    dataset_get(d2, 7, NULL, b, cb, sizeof cb, NULL);
    ok(memcmp(a, b, n) == 0 && strcmp(ca, cb) == 0, "same seed and index: same pixels and caption");
    dataset_get(d1, 8, NULL, c, cc, sizeof cc, NULL);
    ok(memcmp(a, c, n) != 0 && strcmp(ca, cc) != 0, "different index: different item");
    dataset_get(d3, 7, NULL, c, cc, sizeof cc, NULL);
    ok(memcmp(a, c, n) != 0, "different seed: different item");
    diag("item 7: %s", ca);
    int same = 0;
    for (long i = 0; i < 200; i++) {
        struct shapes_item x, y;
        shapes_sample(1234, i, &x);
        shapes_sample(1234, i + 1, &y);
        same += memcmp(&x, &y, sizeof x) == 0;
    }
    ok(same == 0, "200 consecutive items all differ from their neighbours");
    int oob = dataset_get(d1, -1, NULL, a, NULL, 0, NULL) == SD_ERR_INVALID &&
              dataset_get(d1, 1000, NULL, a, NULL, 0, NULL) == SD_ERR_INVALID;
    ok(oob, "index out of range: %s", sd_last_error());
    ok(dataset_get(d1, 0, NULL, NULL, ca, 10, NULL) == SD_ERR_INVALID,
       "too small caption buffer: %s", sd_last_error());
    struct dataset *bad;
    ok(dataset_shapes(&bad, 4, 1, 10) == SD_ERR_INVALID && !bad, "resolution 4 refused: %s",
       sd_last_error());
    ok(dataset_shapes(&bad, 64, 1, 0) == SD_ERR_INVALID, "size 0 refused");
    free(a); free(b); free(c);
    dataset_free(d1); dataset_free(d2); dataset_free(d3);
}

static void test_captions(void) {
    struct dataset *d;
    dataset_shapes(&d, 32, 99, 100000);
    int bad = 0, templates[SHAPES_TEMPLATES] = { 0 }, counts[4] = { 0 }, shapes[SHAPE_COUNT] = { 0 },
        colours[SHAPE_COLOUR_COUNT] = { 0 }, bgs[SHAPE_BG_COUNT] = { 0 }, cells[9] = { 0 };
    int clash = 0, outside = 0;
    size_t longest = 0;
    for (long i = 0; i < 2000; i++) {
        char cap[DATASET_CAPTION_MAX];
        struct shapes_item it;
        dataset_get(d, i, NULL, NULL, cap, sizeof cap, &it);
        if (strlen(cap) > longest) longest = strlen(cap);
        templates[it.template_id]++;
        counts[it.n]++;
        bgs[it.bg]++;
        if (!strstr(cap, shape_bg_name(it.bg))) bad++;
        for (int k = 0; k < it.n; k++) {
            const struct shapes_obj *o = &it.obj[k];
            char phrase[128];
            snprintf(phrase, sizeof phrase, "%s %s %s", shape_colour_name(o->colour),
                     shape_kind_name(o->shape), shapes_position_phrase(o->cx, o->cy));
            if (!strstr(cap, phrase)) bad++;
            shapes[o->shape]++;
            colours[o->colour]++;
            cells[shapes_cell(o->cx, o->cy)]++;
            if ((it.bg == SHAPE_BG_WHITE && o->colour == SHAPE_COLOUR_WHITE) ||
                (it.bg == SHAPE_BG_BLACK && o->colour == SHAPE_COLOUR_BLACK)) clash++;
            float h = o->size / 2;
            if (o->cx - h < 0.02f || o->cx + h > 0.98f || o->cy - h < 0.02f || o->cy + h > 0.98f)
                outside++;
        }
        if (i < 4) diag("caption %ld: %s", i, cap);
    }
    ok(bad == 0, "2000 captions name every colour + shape + position and the background (%d misses)", bad);
    int all = 1;
    for (int k = 0; k < SHAPES_TEMPLATES; k++) all &= templates[k] > 300;
    for (int k = 1; k <= 3; k++) all &= counts[k] > 300;
    for (int k = 0; k < SHAPE_COUNT; k++) all &= shapes[k] > 400;
    for (int k = 0; k < SHAPE_COLOUR_COUNT; k++) all &= colours[k] > 250;
    for (int k = 0; k < SHAPE_BG_COUNT; k++) all &= bgs[k] > 250;
    for (int k = 0; k < 9; k++) all &= cells[k] > 150;
    ok(all, "templates, object counts (%d/%d/%d), shapes, colours, backgrounds, cells all occur",
       counts[1], counts[2], counts[3]);
    ok(clash == 0, "no shape shares its background's colour");
    ok(outside == 0, "every shape stays inside the image margin");
    ok(longest < 160, "longest caption %zu bytes (fits CLIP's 77 tokens)", longest);
    dataset_free(d);
}

static void test_resolutions(void) {
    static const int sizes[] = { 32, 64, 96, 128 };
    for (int r = 0; r < 4; r++) {
        int res = sizes[r];
        struct dataset *d;
        dataset_shapes(&d, res, 5, 1000);
        size_t n = (size_t)res * res;
        float *chw = malloc(n * 3 * sizeof(float));
        uint8_t *hwc = malloc(n * 3);
        int range = 1, agree = 1, corner = 1, varied = 1, soft = 1;
        for (long i = 0; i < 20; i++) {
            struct shapes_item it;
            sd_status st = dataset_get(d, i, chw, hwc, NULL, 0, &it);
            if (st != SD_OK) { range = 0; break; }
            float lo = 2, hi = -2;
            int partial = 0;
            for (size_t k = 0; k < n * 3; k++) {
                if (chw[k] < lo) lo = chw[k];
                if (chw[k] > hi) hi = chw[k];
            }
            range &= lo >= -1 && hi <= 1;
            varied &= hi - lo > 0.3f;
            for (size_t p = 0; p < n; p++)
                for (int c = 0; c < 3; c++)
                    agree &= chw[c * n + p] == hwc[p * 3 + c] / 127.5f - 1.0f;
            uint8_t bg[3];
            shape_bg_rgb(it.bg, bg);
            corner &= memcmp(hwc, bg, 3) == 0 && memcmp(hwc + (n - 1) * 3, bg, 3) == 0;
            /* antialiasing: some pixels are neither background nor a shape colour */
            for (size_t p = 0; p < n; p++) {
                int pure = memcmp(hwc + p * 3, bg, 3) == 0;
                for (int k = 0; k < it.n && !pure; k++) {
                    uint8_t col[3];
                    shape_colour_rgb(it.obj[k].colour, col);
                    pure = memcmp(hwc + p * 3, col, 3) == 0;
                }
                partial += !pure;
            }
            soft &= partial > 0;
        }
        ok(range && varied, "res %d: values in [-1, 1] and not flat", res);
        ok(agree, "res %d: chw == hwc / 127.5 - 1", res);
        ok(corner && soft, "res %d: background in the corners, antialiased edges", res);
        free(chw); free(hwc);
        dataset_free(d);
    }
}

/* ---- folder dataset ----------------------------------------------------------------- */

static char tmpdir[256];

static void write_text(const char *name, const char *text) {
    char *p = sd_path_join(tmpdir, name);
    FILE *f = fopen(p, "wb");
    fputs(text, f);
    fclose(f);
    sd_free(p);
}

static void write_png(const char *name, const uint8_t *rgb, int w, int h) {
    char *p = sd_path_join(tmpdir, name);
    sd_status st = png_write_file(p, rgb, w, h, NULL, 0);
    SD_ASSERT(st == SD_OK);
    sd_free(p);
}

static void remove_file(const char *name) {
    char *p = sd_path_join(tmpdir, name);
    unlink(p);
    sd_free(p);
}

static int err_has(const char *s) { return strstr(sd_last_error(), s) != NULL; }

static void test_folder(void) {
    size_t live0 = sd_alloc_live_bytes();
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sdxld_test_data_XXXXXX");
    SD_ASSERT(mkdtemp(tmpdir));
    /* wide.png 64x48: red centre, green 8-px side bars the center crop must drop */
    uint8_t wide[64 * 48 * 3], ramp[64 * 64 * 3], small[20 * 30 * 3];
    for (int y = 0; y < 48; y++)
        for (int x = 0; x < 64; x++) {
            uint8_t *p = wide + (y * 64 + x) * 3;
            int bar = x < 8 || x >= 56;
            p[0] = bar ? 0 : 200; p[1] = bar ? 255 : 10; p[2] = 30;
        }
    for (int y = 0; y < 64; y++)             /* ramp.png: a 2x box filter gives 8o + 2 */
        for (int x = 0; x < 64; x++) {
            uint8_t *p = ramp + (y * 64 + x) * 3;
            p[0] = (uint8_t)(4 * x); p[1] = (uint8_t)(4 * y); p[2] = 77;
        }
    for (int i = 0; i < 20 * 30; i++) { small[3 * i] = 10; small[3 * i + 1] = 100; small[3 * i + 2] = 250; }
    write_png("wide.png", wide, 64, 48);
    write_png("ramp.png", ramp, 64, 64);
    write_png("small.png", small, 20, 30);
    write_text("captions.txt", "# comment\nwide.png\ta red field\r\n\nramp.png\t  a colour ramp \n"
                               "small.png\ta blue rectangle\n");
    struct dataset *d = NULL;
    sd_status st = dataset_folder(&d, tmpdir, 32);
    ok(st == SD_OK, "folder dataset opens (%s)", st ? sd_last_error() : "ok");
    if (st != SD_OK) return;
    ok(dataset_size(d) == 3 && !dataset_has_attrs(d), "3 items, no shape attributes");
    uint8_t hwc[32 * 32 * 3];
    float chw[3 * 32 * 32];
    char cap[DATASET_CAPTION_MAX];
    st = dataset_get(d, 0, chw, hwc, cap, sizeof cap, NULL);
    int red = st == SD_OK;
    for (int i = 0; i < 32 * 32; i++) red &= hwc[3 * i] == 200 && hwc[3 * i + 1] == 10 && hwc[3 * i + 2] == 30;
    ok(red && strcmp(cap, "a red field") == 0, "center crop drops the side bars; caption read");
    ok(fabsf(chw[0] - (200 / 127.5f - 1)) < 1e-6f, "chw from the same pixels");
    st = dataset_get(d, 1, NULL, hwc, cap, sizeof cap, NULL);
    int box = st == SD_OK;
    for (int y = 0; y < 32; y++)
        for (int x = 0; x < 32; x++) {
            const uint8_t *p = hwc + (y * 32 + x) * 3;
            box &= p[0] == 8 * x + 2 && p[1] == 8 * y + 2 && p[2] == 77;
        }
    ok(box && strcmp(cap, "a colour ramp") == 0, "64 -> 32 is an exact 2x2 box average; caption trimmed");
    st = dataset_get(d, 2, chw, NULL, cap, sizeof cap, NULL);
    int up = st == SD_OK;
    for (int i = 0; i < 32 * 32; i++) up &= fabsf(chw[2 * 1024 + i] - (250 / 127.5f - 1)) < 1e-6f;
    ok(up, "20x30 enlarged to 32x32 keeps a flat colour");
    struct shapes_item it;
    ok(dataset_get(d, 0, NULL, NULL, NULL, 0, &it) == SD_ERR_INVALID, "folder has no attributes");
    dataset_free(d);

    /* fail each allocation in turn: open + read + chw conversion free what they took */
    int leaks = 0, n;
    for (n = 1; n < 200; n++) {
        size_t before = sd_alloc_live_bytes();
        sd_fault_arm_alloc(n);
        st = dataset_folder(&d, tmpdir, 32);
        if (st == SD_OK) {
            st = dataset_get(d, 1, chw, NULL, cap, sizeof cap, NULL);
            dataset_free(d);
        }
        sd_fault_arm_alloc(0);
        leaks += sd_alloc_live_bytes() != before;
        if (st == SD_OK) break;
    }
    ok(leaks == 0 && n > 3 && n < 200, "allocation failures 1..%d: clean errors, no leaks", n - 1);
    for (n = 1; n < 50; n++) {
        size_t before = sd_alloc_live_bytes();
        double m;
        sd_fault_arm_alloc(n);
        st = shapes_mmd2(ramp, 2, ramp, 2, 32, &m);
        sd_fault_arm_alloc(0);
        leaks += sd_alloc_live_bytes() != before;
        if (st == SD_OK) break;
    }
    ok(leaks == 0 && n == 3, "shapes_mmd2 under allocation failure: no leaks");

    /* a corrupt PNG: valid signature and IHDR, truncated body -> error at read time */
    uint8_t *enc;
    size_t enc_len;
    png_encode(ramp, 64, 64, NULL, 0, &enc, &enc_len);
    char *p = sd_path_join(tmpdir, "ramp.png");
    FILE *f = fopen(p, "wb");
    fwrite(enc, 1, enc_len / 2, f);
    fclose(f);
    sd_free(p);
    sd_free(enc);
    st = dataset_folder(&d, tmpdir, 32);
    ok(st == SD_OK, "a truncated PNG passes the header check at open");
    if (st == SD_OK) {
        st = dataset_get(d, 1, NULL, hwc, NULL, 0, NULL);
        ok(st == SD_ERR_FORMAT && err_has("ramp.png"), "truncated PNG: %s", sd_last_error());
        ok(dataset_get(d, 0, NULL, hwc, NULL, 0, NULL) == SD_OK, "the other items still read");
        dataset_free(d);
    }
    write_text("ramp.png", "this is not a png\n");
    ok(dataset_folder(&d, tmpdir, 32) == SD_ERR_FORMAT && !d && err_has("ramp.png"),
       "not a PNG: %s", sd_last_error());
    write_png("ramp.png", ramp, 64, 64);

    write_png("extra.png", ramp, 64, 64);
    ok(dataset_folder(&d, tmpdir, 32) == SD_ERR_NOTFOUND && err_has("extra.png") &&
       err_has("no caption"), "PNG without a caption: %s", sd_last_error());
    remove_file("extra.png");

    write_text("captions.txt", "wide.png\ta\nramp.png\tb\nsmall.png\tc\nghost.png\tnothing\n");
    ok(dataset_folder(&d, tmpdir, 32) == SD_ERR_NOTFOUND && err_has("ghost.png"),
       "listed but missing: %s", sd_last_error());
    write_text("captions.txt", "wide.png a red field\n");
    ok(dataset_folder(&d, tmpdir, 32) == SD_ERR_FORMAT && err_has("captions.txt:1"),
       "line without a tab: %s", sd_last_error());
    write_text("captions.txt", "wide.png\t\nramp.png\tx\nsmall.png\ty\n");
    ok(dataset_folder(&d, tmpdir, 32) == SD_ERR_FORMAT && err_has("empty caption"),
       "empty caption: %s", sd_last_error());
    write_text("captions.txt", "../wide.png\tescape\n");
    ok(dataset_folder(&d, tmpdir, 32) == SD_ERR_FORMAT && err_has("plain name"),
       "path outside the folder: %s", sd_last_error());
    write_text("captions.txt", "wide.png\ta\nramp.png\tb\nsmall.png\tc\nwide.png\td\n");
    ok(dataset_folder(&d, tmpdir, 32) == SD_ERR_FORMAT && err_has("listed twice"),
       "duplicate: %s", sd_last_error());
    remove_file("captions.txt");
    ok(dataset_folder(&d, tmpdir, 32) == SD_ERR_NOTFOUND && err_has("captions.txt"),
       "no captions.txt: %s", sd_last_error());
    char *wpath = sd_path_join(tmpdir, "wide.png");
    ok(dataset_folder(&d, wpath, 32) == SD_ERR_INVALID && err_has("not a directory"),
       "a file as the folder: %s", sd_last_error());
    sd_free(wpath);
    ok(dataset_folder(&d, "/nonexistent/sdxld", 32) == SD_ERR_NOTFOUND,
       "missing folder: %s", sd_last_error());
    remove_file("wide.png");
    remove_file("ramp.png");
    remove_file("small.png");
    rmdir(tmpdir);
    ok(sd_alloc_live_bytes() == live0, "folder dataset: no leaks, errors included");
}

/* ---- evaluator ---------------------------------------------------------------------- */

static void score_prompts(int res, const uint8_t *imgs, const struct shapes_item *wants, int n,
                          struct shapes_scores *s, const char *what) {
    sd_status st = shapes_eval_set(imgs, n, res, wants, s);
    SD_ASSERT(st == SD_OK);
    diag("%-28s res %3d: colour %5.1f%%  shape %5.1f%%  joint %5.1f%%  position %5.1f%%  (%d images)",
         what, res, 100 * s->colour, 100 * s->shape, 100 * s->joint, 100 * s->position, s->n);
}

static void test_eval_renders(void) {
    int np = shapes_prompt_count();
    struct shapes_item wants[64];
    char cap[DATASET_CAPTION_MAX];
    for (int i = 0; i < np; i++) shapes_prompt(i, &wants[i], cap, sizeof cap);
    shapes_prompt(0, &wants[0], cap, sizeof cap);
    diag("prompt 0: %s", cap);
    shapes_prompt(SHAPES_PROMPT_SINGLE, &wants[SHAPES_PROMPT_SINGLE], cap, sizeof cap);
    diag("prompt %d: %s", SHAPES_PROMPT_SINGLE, cap);
    static const int sizes[] = { 32, 64, 128 };
    for (int r = 0; r < 3; r++) {
        int res = sizes[r];
        size_t img = (size_t)res * res * 3;
        uint8_t *imgs = malloc(img * np);
        for (int i = 0; i < np; i++) shapes_render(&wants[i], res, imgs + i * img, NULL);
        struct shapes_scores s;
        score_prompts(res, imgs, wants, np, &s, "fixed prompts, renders");
        if (res >= 64)
            ok(s.colour >= 0.95 && s.shape >= 0.95 && s.joint >= 0.95 && s.position >= 0.95,
               "res %d: renders of the fixed prompts score >= 95%%", res);
        else
            ok(s.colour >= 0.9 && s.joint >= 0.85, "res %d: renders score >= 85%%", res);
        /* the same images judged against the wrong prompts (next shape, same colour) */
        struct shapes_item wrong[64];
        for (int i = 0; i < SHAPES_PROMPT_SINGLE; i++) {
            wrong[i] = wants[i];
            wrong[i].obj[0].shape = (wants[i].obj[0].shape + 1) % SHAPE_COUNT;
        }
        score_prompts(res, imgs, wrong, SHAPES_PROMPT_SINGLE, &s, "renders vs wrong shape");
        ok(s.colour >= 0.95 && s.shape <= 0.1 && s.joint <= 0.1,
           "res %d: asking for a different shape scores shape <= 10%%", res);
        if (res == 64) {   /* a generator's imperfections: blur, a colour cast, pixel noise */
            uint8_t *soft = malloc(img * np);
            struct sd_rng rng;
            sd_rng_init(&rng, 3);
            for (int i = 0; i < np; i++)
                for (int y = 0; y < res; y++)
                    for (int x = 0; x < res; x++)
                        for (int c = 0; c < 3; c++) {
                            int sum = 0, cnt = 0;
                            for (int dy = -1; dy <= 1; dy++)
                                for (int dx = -1; dx <= 1; dx++) {
                                    int yy = y + dy, xx = x + dx;
                                    if (yy < 0 || xx < 0 || yy >= res || xx >= res) continue;
                                    sum += imgs[i * img + (yy * res + xx) * 3 + c];
                                    cnt++;
                                }
                            float g;
                            sd_rng_normal(&rng, &g, 1);
                            float v = (float)sum / cnt + (c == 0 ? 15 : -10) + 12 * g;
                            soft[i * img + (y * res + x) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                        }
            score_prompts(res, soft, wants, np, &s, "renders + blur, cast, noise");
            ok(s.colour >= 0.95 && s.shape >= 0.9 && s.joint >= 0.9,
               "res 64: blurred, tinted, noisy renders still score >= 90%%");
            free(soft);
        }
        free(imgs);
    }

    /* random dataset items (1 to 3 shapes, small ones included) judged by their attributes */
    for (int r = 0; r < 2; r++) {
        int res = r ? 64 : 128, n = 300;
        size_t img = (size_t)res * res * 3;
        struct dataset *d;
        dataset_shapes(&d, res, 77, 100000);
        uint8_t *imgs = malloc(img * n);
        struct shapes_item *items = malloc(n * sizeof *items);
        for (int i = 0; i < n; i++) dataset_get(d, i, NULL, imgs + i * img, NULL, 0, &items[i]);
        struct shapes_scores s;
        score_prompts(res, imgs, items, n, &s, "dataset items (1-3 shapes)");
        ok(s.colour >= 0.95 && s.shape >= 0.9 && s.joint >= 0.9,
           "res %d: random dataset items score >= 90%%", res);
        free(imgs); free(items);
        dataset_free(d);
    }

    /* per-shape confusion over sizes, foreground components, res 64 */
    int conf[SHAPE_COUNT][SHAPE_COUNT + 1] = { { 0 } };
    for (int s = 0; s < SHAPE_COUNT; s++)
        for (int k = 0; k < 20; k++) {
            struct shapes_item it = { 1, { { s, k % SHAPE_COLOUR_COUNT, 0.5f, 0.5f, 0.16f + 0.02f * k } },
                                      k % 2 ? SHAPE_BG_GRAY : SHAPE_BG_LIGHT_BLUE, 0 };
            uint8_t buf[64 * 64 * 3];
            shapes_render(&it, 64, buf, NULL);
            struct shapes_segmentation seg;
            shapes_segment(buf, 64, &seg);
            conf[s][seg.nfg ? (int)seg.fg[0].shape : SHAPE_COUNT]++;
        }
    for (int s = 0; s < SHAPE_COUNT; s++)
        diag("confusion %-8s -> circle %2d square %2d triangle %2d star %2d cross %2d none %2d",
             shape_kind_name(s), conf[s][0], conf[s][1], conf[s][2], conf[s][3], conf[s][4], conf[s][5]);
}

static void test_eval_noise(void) {
    int np = shapes_prompt_count(), res = 64;
    size_t img = (size_t)res * res * 3;
    struct shapes_item wants[64];
    for (int i = 0; i < np; i++) shapes_prompt(i, &wants[i], NULL, 0);
    uint8_t *imgs = malloc(img * np);
    struct sd_rng r;
    sd_rng_init(&r, 42);
    struct shapes_scores s;

    for (size_t k = 0; k < img * np; k++) imgs[k] = (uint8_t)(sd_rng_u32(&r) >> 24);
    score_prompts(res, imgs, wants, np, &s, "uniform noise");
    ok(s.colour <= 0.05 && s.shape <= 0.05 && s.joint <= 0.02, "uniform noise scores <= 5%%");

    float *g = malloc(img * np * sizeof(float));
    sd_rng_normal(&r, g, img * np);   /* what an untrained generator decodes to: N(0,1) in [-1,1] */
    for (size_t k = 0; k < img * np; k++) {
        float v = (g[k] + 1) * 127.5f;
        imgs[k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5f);
    }
    free(g);
    score_prompts(res, imgs, wants, np, &s, "gaussian noise (clipped)");
    ok(s.colour <= 0.05 && s.shape <= 0.05 && s.joint <= 0.02, "gaussian noise scores <= 5%%");

    /* constant images: each shape colour and each background */
    int nconst = SHAPE_COLOUR_COUNT + SHAPE_BG_COUNT;
    double worst = 0;
    for (int c = 0; c < nconst; c++) {
        uint8_t rgb[3];
        if (c < SHAPE_COLOUR_COUNT) shape_colour_rgb(c, rgb); else shape_bg_rgb(c - SHAPE_COLOUR_COUNT, rgb);
        for (size_t k = 0; k < img * np; k++) imgs[k] = rgb[k % 3];
        shapes_eval_set(imgs, np, res, wants, &s);
        double m = fmax(fmax(s.colour, s.shape), s.joint);
        if (m > worst) worst = m;
    }
    diag("constant images (13 colours)   res  64: worst accuracy %.1f%%", 100 * worst);
    ok(worst == 0, "constant images score 0");

    /* half-and-half image: colour present but no shape inside the border */
    for (int i = 0; i < np; i++)
        for (int y = 0; y < res; y++)
            for (int x = 0; x < res; x++) {
                uint8_t rgb[3];
                shape_colour_rgb(x < res / 2 ? wants[i].obj[0].colour : (wants[i].obj[0].colour + 1) % 8, rgb);
                memcpy(imgs + i * img + (y * res + x) * 3, rgb, 3);
            }
    score_prompts(res, imgs, wants, np, &s, "two colour halves");
    ok(s.joint == 0, "regions touching the border are not shapes");
    free(imgs);
}

static void test_mmd(void) {
    int res = 64, n = 64;
    size_t img = (size_t)res * res * 3;
    struct dataset *d;
    dataset_shapes(&d, res, 2024, 100000);
    uint8_t *a = malloc(img * n), *b = malloc(img * n), *c = malloc(img * n);
    for (int i = 0; i < n; i++) {
        dataset_get(d, i, NULL, a + i * img, NULL, 0, NULL);
        dataset_get(d, 5000 + i, NULL, b + i * img, NULL, 0, NULL);
    }
    struct sd_rng r;
    sd_rng_init(&r, 7);
    for (size_t k = 0; k < img * n; k++) c[k] = (uint8_t)(sd_rng_u32(&r) >> 24);
    double same, noise, blur;
    shapes_mmd2(a, n, b, n, res, &same);
    shapes_mmd2(a, n, c, n, res, &noise);
    /* a milder corruption: the dataset images with every shape turned into a gray blob */
    for (size_t k = 0; k < img * n; k++) c[k] = b[k];
    for (int i = 0; i < n; i++)
        for (int p = 0; p < res * res; p++) {
            uint8_t *q = c + i * img + p * 3;
            if (memcmp(q, c + i * img, 3) != 0) q[0] = q[1] = q[2] = 100;
        }
    shapes_mmd2(a, n, c, n, res, &blur);
    /* wrong shapes: the same layouts with every shape a circle */
    double circles;
    for (int i = 0; i < n; i++) {
        struct shapes_item it;
        dataset_get(d, 5000 + i, NULL, NULL, NULL, 0, &it);
        for (int k = 0; k < it.n; k++) it.obj[k].shape = SHAPE_CIRCLE;
        shapes_render(&it, res, c + i * img, NULL);
    }
    shapes_mmd2(a, n, c, n, res, &circles);
    /* softness: the dataset images under a 3x3 box blur (what a weak VAE does) */
    double soft;
    for (int i = 0; i < n; i++)
        for (int y = 0; y < res; y++)
            for (int x = 0; x < res; x++)
                for (int ch = 0; ch < 3; ch++) {
                    int sum = 0, cnt = 0;
                    for (int dy = -1; dy <= 1; dy++)
                        for (int dx = -1; dx <= 1; dx++) {
                            int yy = y + dy, xx = x + dx;
                            if (yy < 0 || xx < 0 || yy >= res || xx >= res) continue;
                            sum += b[i * img + (yy * res + xx) * 3 + ch];
                            cnt++;
                        }
                    c[i * img + (y * res + x) * 3 + ch] = (uint8_t)((sum + cnt / 2) / cnt);
                }
    shapes_mmd2(a, n, c, n, res, &soft);
    diag("MMD^2 (%d vs %d at %d): dataset vs dataset %.4f, vs blurred %.4f, vs gray shapes %.4f, "
         "vs all circles %.4f, vs noise %.4f", n, n, res, same, soft, blur, circles, noise);
    ok(fabs(same) < 0.02, "MMD^2 between two dataset samples ~0 (%.4f)", same);
    ok(noise > 0.5 && noise > 50 * fabs(same), "MMD^2 against noise is large (%.3f)", noise);
    ok(blur > 0.1 && circles > 0.1 && blur < noise && circles < noise,
       "MMD^2 against gray or all-circle shapes in between (%.3f, %.3f)", blur, circles);
    ok(soft > 0.02 && soft > 5 * fabs(same), "MMD^2 sees a 3x3 blur (%.3f)", soft);
    free(a); free(b); free(c);
    dataset_free(d);
}

int main(void) {
    double t0 = sd_now_ms();
    size_t live0 = sd_alloc_live_bytes();
    test_palette();
    test_determinism();
    test_captions();
    test_resolutions();
    test_folder();
    test_eval_renders();
    test_eval_noise();
    test_mmd();
    ok(sd_alloc_live_bytes() == live0, "no leaks across the whole file");
    diag("%.1f s", (sd_now_ms() - t0) / 1000);
    return done_testing();
}
