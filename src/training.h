/* training.h — the training facade, next to engine.h: the one header through which the
 * daemon and the CLI (server/) reach the training layer (src/train/).  It is the public
 * surface of that layer, no more:
 *   - the option table of training runs (train/options.h) and the admission estimate of
 *     a run (train/estimate.h);
 *   - DMD2 runs as a stepper (train/dmd2.h: open / step / save / close, with the yield
 *     hook the daemon serves generations from) and checkpoint lookup (train/checkpoint.h);
 *   - the offline trainers of the built-in model (train/trainer.h: VAE, teacher);
 *   - datasets (train/data.h) and the shapes evaluation (train/shapes_eval.h,
 *     train/train_common.h's latent cache for eval-cond).
 * Layering (docs/architecture.md, checked by tests/lint.py): server/ includes engine.h and
 * this header only; src/train/ may use everything below it but never server/. */
#ifndef SD_TRAINING_H
#define SD_TRAINING_H

#include "engine.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/dmd2.h"
#include "train/estimate.h"
#include "train/options.h"
#include "train/shapes_eval.h"
#include "train/train_common.h"
#include "train/trainer.h"

#endif
