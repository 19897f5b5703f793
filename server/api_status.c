/* api_status.c — sd_status → (error code, HTTP status), per kind of work (api_status.h).
 *
 * Four answers: the client's input (400 invalid_argument: fix the request), resources
 * (503 resource_exhausted: retry later), shutting down (503, a forced stop cancelled the
 * work), and ours (500 with the work's own code, the message says what broke).
 *
 * The columns differ on purpose: during a generation only the parameters are the
 * client's (engine_check_params says SD_ERR_INVALID); a missing tensor there is our
 * model's fault.  A training run and a generator load read files the client named, so
 * NOTFOUND, FORMAT, SHAPE and UNSUPPORTED are the client's; a load's I/O error too (the
 * named file does not read), while a training run's I/O error (its run directory, its
 * checkpoints) is ours.  A PNG encoder has no client input at all. */
#include "api_status.h"

enum { OURS, CLIENT, RESOURCES, STOPPING };

static const unsigned char answer[SD_ERR_NUMERIC + 1][API_WORK_N] = {
    /*                      generate   encode     train      load      */
    [SD_ERR_IO]          = { OURS,      OURS,      OURS,      CLIENT    },
    [SD_ERR_FORMAT]      = { OURS,      OURS,      CLIENT,    CLIENT    },
    [SD_ERR_SHAPE]       = { OURS,      OURS,      CLIENT,    CLIENT    },
    [SD_ERR_NOMEM]       = { RESOURCES, RESOURCES, RESOURCES, RESOURCES },
    [SD_ERR_INVALID]     = { CLIENT,    OURS,      CLIENT,    CLIENT    },
    [SD_ERR_NOTFOUND]    = { OURS,      OURS,      CLIENT,    CLIENT    },
    [SD_ERR_UNSUPPORTED] = { OURS,      OURS,      CLIENT,    CLIENT    },
    [SD_ERR_CUDA]        = { OURS,      OURS,      OURS,      OURS      },
    [SD_ERR_CANCELLED]   = { STOPPING,  OURS,      OURS,      OURS      },
    [SD_ERR_NUMERIC]     = { OURS,      OURS,      CLIENT,    CLIENT    },   /* NaN/Inf weights named */
};

/* The code of a failure that is ours, by work. */
static const char *const ours_code[API_WORK_N] = {
    [API_WORK_GENERATE] = "generation_failed", [API_WORK_ENCODE] = "internal",
    [API_WORK_TRAIN] = "training_failed",      [API_WORK_LOAD] = "internal",
};

struct api_status api_status_of(sd_status st, enum api_work work) {
    SD_ASSERT((unsigned)work < API_WORK_N);
    int a = (unsigned)st <= SD_ERR_NUMERIC ? answer[st][work] : OURS;
    switch (a) {
    case CLIENT: return (struct api_status){ "invalid_argument", 400 };
    case RESOURCES: return (struct api_status){ "resource_exhausted", 503 };
    case STOPPING: return (struct api_status){ "shutting_down", 503 };
    default: return (struct api_status){ ours_code[work], 500 };
    }
}
