/* options.h — the options of a training run: one static table (options.c) for the three
 * trainers (VAE, teacher, DMD2), read by every place an option shows up:
 *   - `sdxld train-vae`, `train-teacher`, `train dmd2` flags (--name-with-dashes; a bool is
 *     --name / --no-name; an unknown flag is an error naming it), and their --help;
 *   - the POST /v1/train body (snake_case fields; unknown field, wrong type, out of range:
 *     an error naming the field) and the field table in docs/daemon.md, which
 *     `sdxld train dmd2 --print-api-table` regenerates (a test compares the two);
 *   - state.json's "config": the run's full effective configuration, written with every
 *     checkpoint and restored at resume, where a given option that is not resume-safe
 *     and differs from the stored value is an error naming it.
 * Adding an option is one row in the table (and its field in struct train_options).
 *
 * A name may have several rows when its default or bounds differ by run kind (the
 * teacher's `guidance` is a sampling CFG scale, DMD2's the real score's); a row applies
 * to the kinds in its mask.  Paths are kept as given: the CLI passes them on, the daemon
 * resolves them under data_root (server/api_train.c) and stores them relative to it.
 *
 * Not thread-bound: the table is constant, every function works on the caller's struct. */
#ifndef SD_TRAIN_OPTIONS_H
#define SD_TRAIN_OPTIONS_H

#include <stdint.h>
#include <stdio.h>
#include <jansson.h>

enum train_kind { TRAIN_VAE = 1, TRAIN_TEACHER = 2, TRAIN_DMD2 = 4 };

#define TOPT_PATH_MAX 4096
#define TOPT_MAX_ROWS 96

struct train_options {
    /* folders and files */
    char model[TOPT_PATH_MAX];           /* vae, teacher: the model folder trained */
    char teacher[TOPT_PATH_MAX];         /* dmd2: the frozen teacher's model folder */
    char generator_init[TOPT_PATH_MAX];  /* dmd2: "teacher" or a UNet file */
    char out[TOPT_PATH_MAX];             /* the run directory */
    char real_data[TOPT_PATH_MAX];       /* "shapes" or an image folder */
    char prompts[TOPT_PATH_MAX];         /* API only: must name real_data's captions */
    char backend[16];                    /* "" = cpu */
    int resume;
    long long dataset_size;              /* shapes: items (they are generated) */
    int shards;
    /* every kind */
    int steps, batch, resolution, warmup, log_every, sample_every, checkpoint_every;
    int keep_checkpoints, recompute;
    long long cache_size;
    uint64_t seed;
    float clip;
    /* vae, teacher */
    float lr, weight_decay, ema, cfg_dropout, p2_gamma, kl_weight;
    int l2, sample_steps;
    /* teacher (sample CFG), dmd2 (real score CFG) */
    float guidance;
    /* dmd2 */
    int ttur, lora_rank, gan, backward_simulation;
    int nsteps, timesteps[4];
    float lr_generator, lr_fake, gan_weight_g, gan_weight_d, lora_alpha;
};

/* Which options a caller gave (by row index), so resume knows what to keep. */
struct topt_given { unsigned char row[TOPT_MAX_ROWS]; };

/* Where an option is read: the CLI, the daemon's body, or (state) state.json. */
enum topt_surface { TOPT_CLI = 1, TOPT_API = 2 };

/* Fill o with kind's defaults.  resolution 0 = the model's native size; dmd2's
 * cache_size 0 = as many as fit (topt_finish fills both once the model is known). */
void topt_defaults(struct train_options *o, enum train_kind kind);

/* CLI: parse argv[first..argc) into o (defaults already there); given marks what was
 * set.  Returns 0, 1 after --help (printed to stdout), or -1 with a message naming the
 * flag in err.  Extra options the caller handles itself are not accepted. */
int topt_parse_args(struct train_options *o, struct topt_given *given, enum train_kind kind,
                    int argc, char **argv, int first, char *err, size_t errlen);

/* API: set the fields of a JSON object; an unknown key, a wrong type or an out-of-range
 * value is -1 with the field's name in field (64 bytes) and a message in err.  Path
 * options are copied as given (the caller resolves them); `resume` may be a string (the
 * run directory, copied into out) or a boolean. */
int topt_from_body(struct train_options *o, struct topt_given *given, enum train_kind kind,
                   json_t *body, char *field, char *err, size_t errlen);

/* The stored configuration (every option of the kind except out, resume, prompts), as a
 * JSON object; NULL on allocation failure. */
json_t *topt_to_json(const struct train_options *o, enum train_kind kind);
/* Restore from a stored configuration: keys that are not options of the kind (a newer
 * or older sdxld wrote them) are skipped; present (may be NULL) marks the options found.
 * A bad value is -1 naming it. */
int topt_from_json(struct train_options *o, struct topt_given *present, enum train_kind kind,
                   json_t *cfg, char *err, size_t errlen);

/* Resume: stored holds the run's stored configuration (present: the options it had);
 * copy into it each option marked in given from o.  An option that may not change at
 * resume, was stored and differs from the stored value stops the merge: returns that
 * option's name (stored is then unusable), else NULL.  Paths compare as strings, so the
 * caller passes them in one canonical form. */
const char *topt_resume_merge(struct train_options *stored, const struct topt_given *present,
                              const struct train_options *o, const struct topt_given *given,
                              enum train_kind kind);
/* A model's own defaults (a JSON object of option names and values, e.g. the DMD2
 * recipe shipped beside a teacher: estimate.h, train_teacher_defaults) set every option
 * of the kind the caller did not give.  A key that is not a stored, non-path option of
 * the kind, or a bad value, is -1 naming it in field (64 bytes) with a message in err. */
int topt_apply_defaults(struct train_options *o, const struct topt_given *given, enum train_kind kind,
                        json_t *defaults, char *field, char *err, size_t errlen);
/* "--lora-rank" for a name. */
const char *topt_flag(const char *name, char *buf, size_t n);

/* Is name a field of the /v1/train body? */
int topt_is_api_field(const char *name);

/* `--help` of the trainer: usage line, then every flag with type, bounds, default, help. */
void topt_print_help(FILE *f, enum train_kind kind, const char *usage);
/* The Markdown table of /v1/train fields (docs/daemon.md holds a copy). */
void topt_print_api_table(FILE *f);

#endif
