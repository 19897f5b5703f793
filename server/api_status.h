/* api_status.h — what a failed sd_status means to an API client: the error code and the
 * HTTP status a job carries when the engine, the trainer or the PNG encoder fails it
 * ({"error": {"code": ...}} in GET /v1/jobs/{id}, the status a waiting client gets).
 *
 * The one place this mapping is written (api_status.c, one table).  It depends on what
 * failed: a missing or malformed file is the client's to fix when the client named it
 * (a teacher folder, a generator to load) and ours when the engine needed it in the
 * middle of a generation.  HTTP-free, so the worker and the job table use it too. */
#ifndef SD_SERVER_API_STATUS_H
#define SD_SERVER_API_STATUS_H

#include "engine.h"

/* The work that failed. */
enum api_work {
    API_WORK_GENERATE,   /* a generation batch: engine_check_params, engine_generate */
    API_WORK_ENCODE,     /* PNG encoding and storing a batch's images */
    API_WORK_TRAIN,      /* opening or stepping a training run */
    API_WORK_LOAD,       /* loading a generator (POST /v1/models/load) */
    API_WORK_N
};

struct api_status {
    const char *code;    /* "invalid_argument", "resource_exhausted", "shutting_down", ... */
    int http;            /* 400, 503, 500 */
};

/* st is a failure (not SD_OK); a status the table does not know is ours (500). */
struct api_status api_status_of(sd_status st, enum api_work work);

#endif
