/* data.h — training datasets: (image, caption) pairs for the VAE and diffusion trainers.
 *
 * Two kinds behind one interface:
 *
 *  - shapes: the built-in procedural dataset the small default model learns from.  Item i
 *    of (seed, size) is a pure function of (seed, i) — its Philox stream is keyed by the
 *    seed with the counter starting at i << 24 — so a trainer may read items in any order,
 *    resume from a cursor, or shard, and always see the same pictures.  Each image holds 1
 *    to 3 non-overlapping upright shapes (SHAPE_*) in a small palette of clearly distinct
 *    colours (SHAPE_COLOUR_*) on a background colour (SHAPE_BG_*) that no shape in that
 *    image shares, rendered at any square resolution with 4x4 supersampled (antialiased)
 *    edges.  Captions state colours, shapes and rough positions (a 3x3 grid: "at the top
 *    left", "on the right", "in the center", ...) in one of SHAPES_TEMPLATES templates:
 *      0  "a red circle on the left and a blue square at the bottom right, on a white background"
 *      1  "a white background with a red circle on the left and a blue square at the bottom right"
 *      2  "red circle on the left, blue square at the bottom right, white background"
 *      3  "two shapes on a white background: a red circle on the left and a blue square at
 *          the bottom right"
 *    The structured attributes (struct shapes_item) come with every item so evaluation
 *    (shapes_eval.h) can check generated pixels against what a caption asked for.
 *
 *  - folder: real data.  A directory holding PNG files and one `captions.txt`, each line
 *    `filename<TAB>caption` (UTF-8; blank lines and lines starting with '#' are skipped).
 *    filename is a plain name in that directory (no '/', not hidden) ending in ".png";
 *    items come in the order of captions.txt.  Opening checks everything it can without
 *    decoding: every listed file exists and starts with a PNG signature and a sane IHDR,
 *    no name is listed twice, no caption is empty or longer than DATASET_CAPTION_MAX-1
 *    bytes, and every *.png in the directory has a caption (a forgotten caption is an
 *    error, not a silently skipped image).  Sidecar `.txt` captions are not read.
 *    dataset_get decodes the PNG, center-crops it to a square and resizes it to the
 *    requested resolution (exact box filter when shrinking, bilinear when enlarging).
 *    Errors name the file.
 *
 * Image layouts: hwc is uint8 RGB, H*W*3, row-major; chw is float (3, H, W) in [-1, 1]
 * (what the VAE encoder consumes), chw = hwc / 127.5 - 1 exactly, so both agree.
 *
 * Thread safety: dataset_get only reads the dataset, so several threads may call it at
 * once on one dataset. */
#ifndef SD_TRAIN_DATA_H
#define SD_TRAIN_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "../core/core.h"

/* ---- the shapes vocabulary (shared with shapes_eval.h) ------------------------------ */

enum shape_kind { SHAPE_CIRCLE, SHAPE_SQUARE, SHAPE_TRIANGLE, SHAPE_STAR, SHAPE_CROSS, SHAPE_COUNT };

enum shape_colour {
    SHAPE_COLOUR_RED, SHAPE_COLOUR_GREEN, SHAPE_COLOUR_BLUE, SHAPE_COLOUR_YELLOW,
    SHAPE_COLOUR_PURPLE, SHAPE_COLOUR_ORANGE, SHAPE_COLOUR_WHITE, SHAPE_COLOUR_BLACK,
    SHAPE_COLOUR_COUNT
};

/* Backgrounds.  White and black are also shape colours; an image with a white (black)
 * background never has a white (black) shape. */
enum shape_bg { SHAPE_BG_WHITE, SHAPE_BG_BLACK, SHAPE_BG_GRAY, SHAPE_BG_LIGHT_BLUE,
                SHAPE_BG_BEIGE, SHAPE_BG_COUNT };

#define SHAPES_MAX_OBJECTS 3
#define SHAPES_TEMPLATES 4
#define DATASET_CAPTION_MAX 1024   /* bytes including the NUL; every caption fits */

/* One shape.  cx, cy: centre as a fraction of the image side (0 = left/top edge);
 * size: side of the square box the shape fills (its bounding extent), same unit. */
struct shapes_obj {
    enum shape_kind shape;
    enum shape_colour colour;
    float cx, cy, size;
};

struct shapes_item {
    int n;                                      /* 1..SHAPES_MAX_OBJECTS */
    struct shapes_obj obj[SHAPES_MAX_OBJECTS];
    enum shape_bg bg;
    int template_id;                            /* 0..SHAPES_TEMPLATES-1 */
};

const char *shape_kind_name(enum shape_kind s);          /* "circle" */
const char *shape_colour_name(enum shape_colour c);      /* "red" */
const char *shape_bg_name(enum shape_bg b);              /* "light blue" */
void shape_colour_rgb(enum shape_colour c, uint8_t rgb[3]);
void shape_bg_rgb(enum shape_bg b, uint8_t rgb[3]);
/* The rough position word of a centre: "at the top left", "on the left", "in the center". */
const char *shapes_position_phrase(float cx, float cy);
/* The 3x3 grid cell of a centre, row * 3 + column (0 = top left). */
int shapes_cell(float cx, float cy);

/* Item index of the shapes dataset with this seed: attributes only (cheap). */
void shapes_sample(uint64_t seed, long index, struct shapes_item *item);
/* Render an item at res x res (res >= 8).  hwc and chw may each be NULL. */
sd_status shapes_render(const struct shapes_item *item, int res, uint8_t *hwc, float *chw);
/* The caption of an item, by its template_id.  SD_ERR_INVALID if cap is too small. */
sd_status shapes_caption(const struct shapes_item *item, char *caption, size_t cap);

/* ---- the dataset interface ---------------------------------------------------------- */

struct dataset;

/* The shapes dataset: size items (1 .. 2^39) at resolution res (8 .. 4096). */
sd_status dataset_shapes(struct dataset **out, int res, uint64_t seed, long size);
/* An image folder (see the top of this file) served at resolution res (8 .. 4096). */
sd_status dataset_folder(struct dataset **out, const char *dir, int res);

long dataset_size(const struct dataset *d);
int dataset_resolution(const struct dataset *d);
/* 1 for the shapes dataset (attributes available), 0 for a folder. */
int dataset_has_attrs(const struct dataset *d);

/* Item index: chw (3*res*res floats), hwc (res*res*3 bytes), caption (cap bytes, needs
 * the caption's length + 1, at most DATASET_CAPTION_MAX) and attrs — each may be NULL.
 * attrs must be NULL for a folder dataset.  On failure the outputs are unspecified and
 * the message names the item (and for a folder, its file). */
sd_status dataset_get(const struct dataset *d, long index, float *chw, uint8_t *hwc,
                      char *caption, size_t cap, struct shapes_item *attrs);

/* NULL is fine. */
void dataset_free(struct dataset *d);

#endif
