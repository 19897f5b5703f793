/* test_api_status.c — server/api_status.c, the one sd_status → (error code, HTTP status)
 * table.  The oracles below are the four mappings it replaced, as they were written in
 * jobs.c (generation batches), worker.c (PNG encoding) and worker_train.c (training runs,
 * generator loads), with SD_ERR_NUMERIC (NaN/Inf weights: the client's when it named the
 * file) added since: every status of every kind of work must answer exactly so. */
#include "api_status.h"
#include "tap.h"

struct want { const char *code; int http; };

static struct want old_generate(sd_status st) {   /* jobs_batch_done */
    if (st == SD_ERR_CANCELLED) return (struct want){ "shutting_down", 503 };
    if (st == SD_ERR_INVALID) return (struct want){ "invalid_argument", 400 };
    if (st == SD_ERR_NOMEM) return (struct want){ "resource_exhausted", 503 };
    return (struct want){ "generation_failed", 500 };
}

static struct want old_encode(sd_status st) {     /* encode_task */
    return st == SD_ERR_NOMEM ? (struct want){ "resource_exhausted", 503 }
                              : (struct want){ "internal", 500 };
}

static struct want old_train(sd_status st) {      /* classify */
    switch (st) {
    case SD_ERR_NOMEM: return (struct want){ "resource_exhausted", 503 };
    case SD_ERR_INVALID: case SD_ERR_NOTFOUND: case SD_ERR_FORMAT: case SD_ERR_SHAPE:
    case SD_ERR_UNSUPPORTED: case SD_ERR_NUMERIC: return (struct want){ "invalid_argument", 400 };
    default: return (struct want){ "training_failed", 500 };
    }
}

static struct want old_load(sd_status st) {       /* worker_load_generator */
    int client = st == SD_ERR_NOTFOUND || st == SD_ERR_FORMAT || st == SD_ERR_SHAPE ||
                 st == SD_ERR_INVALID || st == SD_ERR_UNSUPPORTED || st == SD_ERR_IO ||
                 st == SD_ERR_NUMERIC;
    return (struct want){ st == SD_ERR_NOMEM ? "resource_exhausted" : client ? "invalid_argument"
                                                                              : "internal",
                          st == SD_ERR_NOMEM ? 503 : client ? 400 : 500 };
}

int main(void) {
    static const char *const work[API_WORK_N] = { "generate", "encode", "train", "load" };
    struct want (*const oracle[API_WORK_N])(sd_status) = { old_generate, old_encode, old_train,
                                                           old_load };
    for (int w = 0; w < API_WORK_N; w++) {
        int same = 1;
        for (int st = SD_ERR_IO; st <= SD_ERR_NUMERIC + 1; st++) {   /* + 1: unknown */
            struct api_status got = api_status_of((sd_status)st, (enum api_work)w);
            struct want want = oracle[w]((sd_status)st);
            if (got.http != want.http || strcmp(got.code, want.code)) {
                diag("%s, status %d: got %s %d, want %s %d", work[w], st, got.code, got.http,
                     want.code, want.http);
                same = 0;
            }
        }
        ok(same, "%s: every status maps as before", work[w]);
    }
    struct api_status a = api_status_of(SD_ERR_FORMAT, API_WORK_TRAIN),
                      b = api_status_of(SD_ERR_FORMAT, API_WORK_GENERATE);
    ok(a.http == 400 && b.http == 500, "a malformed file: the client's when it named it (training), "
       "ours mid-generation");
    return done_testing();
}
