/* shapes_eval.h — measuring whether generated pictures show what a shapes prompt asked for.
 *
 * The "Done means" of the training issue asks for a colour/shape attribute accuracy
 * computed from generated pixels on a fixed prompt set.  This module is that check, plus
 * a distribution distance for the quality benchmark.  Pure CPU, deterministic, no model.
 *
 * Segmentation of one RGB image (res x res):
 *   1. Background = per-channel median of the one-pixel border (the dataset keeps every
 *      shape off the border).
 *   2. Colour labels: each pixel goes to the nearest of the 8 shape colours or the
 *      background; a shape colour farther than SHAPES_EVAL_COLOUR_DIST (RGB Euclidean)
 *      leaves the pixel unlabelled, so antialiased edges and off-palette smears count for
 *      nothing.  Foreground mask, colour-blind: pixels nearer some shape colour than the
 *      background however far from both (so an edge joins at about half coverage, as in
 *      the labels) and more than SHAPES_EVAL_FG_DIST from the background (speckle).
 *   3. Components: 4-connected regions of one colour label ("colour components") and of
 *      the foreground mask ("foreground components").  A region counts only if it has at
 *      least max(10, SHAPES_EVAL_MIN_AREA * res^2) pixels and does not touch the border
 *      (noise and uneven backgrounds do; dataset shapes never do).
 *   4. Shape of a component: nearest prototype (Euclidean) in (fill, solidity, 2*voff,
 *      vsym), computed after filling its holes (shapes have none; speckle does):
 *      fill = area / area of its box, where the box drops end rows and columns holding
 *      at most 1% of the area on each side (stray edge pixels); solidity = area /
 *      convex-hull area (hull of the pixel squares' corners); voff = (centroid y - box
 *      middle) / box height (an upright triangle is bottom-heavy); vsym = IoU of the
 *      region with its upside-down self in the box (~1 for circle, square and cross,
 *      ~0.45 for triangle and star).  Prototypes, measured at 64 px over sizes
 *      0.16..0.55 as the mean of clean renders and of renders degraded like a
 *      generator's output (3x3 blur, a colour cast, N(0, 12) pixel noise): circle (0.81,
 *      0.94, 0, 0.98), square (0.98, 0.97, 0, 0.98), triangle (0.60, 0.90, 0.26, 0.42),
 *      star (0.53, 0.66, 0.07, 0.50), cross (0.59, 0.76, 0, 0.97).  Circularity
 *      4piA/P^2 is not used: pixel perimeters are too biased at 32-64 px.
 *
 * Verdict for one image and its intended item (struct shapes_item from data.h), object
 * by object, each object claiming a distinct component (largest first):
 *   colour   — a colour component of the object's colour exists;
 *   shape    — a foreground component has the object's shape (colour-blind);
 *   joint    — a colour component of the object's colour has the object's shape;
 *   position — that joint component's box centre lies in the object's 3x3 grid cell.
 * An image passes a criterion when every object passes it; accuracies are the fraction
 * of images that pass.
 *
 * Distance (for the quality benchmark): squared MMD, unbiased estimator, Gaussian kernel
 * with a fixed sigma = 1 (so numbers compare across runs; of 0.35..2 it separated the
 * corruptions below best), on SHAPES_FEAT_DIM = 88 cheap features per image, each block
 * a set of fractions:
 *   64  4x4x4 RGB histogram of all pixels;
 *    6  RGB gradient magnitude (forward differences): the fraction of flat pixels (< 4),
 *       then the distribution of edge pixels over [4,16), [16,48), [48,96), [96,160),
 *       >= 160 — sharp edges on flat fields vs noise or blur;
 *    9  colours of the foreground pixels (8 shape colours within the colour distance,
 *       or none);
 *    9  shape statistics of the foreground components: count / 3, fraction of each
 *       shape, mean fill, mean solidity, foreground area fraction.
 * Measured at 64 px with 64 vs 64 images: two dataset samples ~0.00 (+-0.003; it can be
 * negative), 3x3 blur 0.045, shapes turned into gray blobs 0.23, every shape a circle
 * 0.19, every shape blue on gray 0.45, added N(0, 20) pixel noise 0.22, uniform noise
 * 1.03. */
#ifndef SD_TRAIN_SHAPES_EVAL_H
#define SD_TRAIN_SHAPES_EVAL_H

#include "data.h"

#define SHAPES_EVAL_COLOUR_DIST 80.0f
#define SHAPES_EVAL_FG_DIST 50.0f
#define SHAPES_EVAL_MIN_AREA 0.004f
#define SHAPES_EVAL_MAX_COMPONENTS 32   /* the largest ones are kept */

/* One region of the segmentation.  colour: its label, or -1 for a foreground component. */
struct shapes_component {
    int colour;
    enum shape_kind shape;
    long area;                      /* pixels */
    float cx, cy;                   /* centroid, fraction of the side */
    float fill, solidity, voff, vsym;   /* the classifier's features */
};

struct shapes_segmentation {
    uint8_t bg[3];
    int ncolour, nfg;               /* counted components, largest first in each list */
    struct shapes_component colour[SHAPES_EVAL_MAX_COMPONENTS];
    struct shapes_component fg[SHAPES_EVAL_MAX_COMPONENTS];
};

struct shapes_verdict { int colour_ok, shape_ok, joint_ok, position_ok; };

struct shapes_scores {
    int n;                                          /* images */
    double colour, shape, joint, position;          /* accuracies in [0, 1] */
};

/* hwc: res x res RGB (res >= 8). */
sd_status shapes_segment(const uint8_t *hwc, int res, struct shapes_segmentation *seg);
sd_status shapes_eval_image(const uint8_t *hwc, int res, const struct shapes_item *want,
                            struct shapes_verdict *v);
/* n images, contiguous (n, res, res, 3); wants[i] is what image i should show. */
sd_status shapes_eval_set(const uint8_t *hwc, int n, int res, const struct shapes_item *wants,
                          struct shapes_scores *out);

/* The fixed prompt set: every colour x shape alone in the center (40 prompts), then 20
 * two-object prompts (left and right, distinct colours), each on a background neither
 * object shares.  want gets the layout the prompt describes (so shapes_render draws the
 * ideal answer); caption (may be NULL) gets the prompt text, template 0. */
#define SHAPES_PROMPT_SINGLE 40
#define SHAPES_PROMPT_PAIRS 20
int shapes_prompt_count(void);
sd_status shapes_prompt(int i, struct shapes_item *want, char *caption, size_t cap);

#define SHAPES_FEAT_DIM 88
#define SHAPES_MMD_SIGMA 1.0f   /* fixed, so numbers compare across runs */
sd_status shapes_features(const uint8_t *hwc, int res, float *feat /* SHAPES_FEAT_DIM */);
/* Unbiased MMD^2 between feature sets fa (na x DIM) and fb (nb x DIM); na, nb >= 2. */
double shapes_mmd2_features(const float *fa, int na, const float *fb, int nb);
/* The same from images: a (na, res, res, 3) and b (nb, res, res, 3). */
sd_status shapes_mmd2(const uint8_t *a, int na, const uint8_t *b, int nb, int res, double *mmd2);

#endif
