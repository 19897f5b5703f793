/* form.c — multipart/form-data bodies through libmicrohttpd's post processor (form.h).
 * http.c leaves a multipart route's body raw in r->body (bounded by max_body); the
 * processor is fed the whole of it at once and calls back once per chunk of each part. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "form.h"
#include "http.h"

static enum MHD_Result on_part(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
                               const char *content_type, const char *transfer_encoding, const char *data,
                               uint64_t off, size_t size) {
    (void)kind; (void)content_type; (void)transfer_encoding;
    struct form *fm = cls;
    struct form_field *f = fm->n ? &fm->f[fm->n - 1] : NULL;
    if (!key || strlen(key) >= FORM_NAME_MAX) {
        snprintf(fm->error, sizeof fm->error, "a form field without a name, or with a name over %d bytes",
                 FORM_NAME_MAX - 1);
        return MHD_NO;
    }
    if (off == 0 || !f || strcmp(f->name, key)) {   /* a new part */
        if (form_get(fm, key)) {
            snprintf(fm->error, sizeof fm->error, "%s: the form gives it twice", key);
            return MHD_NO;
        }
        if (fm->n == FORM_MAX_FIELDS) {
            snprintf(fm->error, sizeof fm->error, "the form has more than %d fields", FORM_MAX_FIELDS);
            return MHD_NO;
        }
        f = &fm->f[fm->n++];
        snprintf(f->name, sizeof f->name, "%s", key);
        f->is_file = filename != NULL;
    }
    if (f->len + size + 1 > f->cap) {
        size_t cap = f->cap ? f->cap : 256;
        while (cap < f->len + size + 1) cap *= 2;
        uint8_t *p = realloc(f->data, cap);
        if (!p) {
            snprintf(fm->error, sizeof fm->error, "out of memory reading the form");
            return MHD_NO;
        }
        f->data = p;
        f->cap = cap;
    }
    memcpy(f->data + f->len, data, size);
    f->len += size;
    f->data[f->len] = 0;
    return MHD_YES;
}

int form_read(struct req *r, struct form *fm) {
    memset(fm, 0, sizeof *fm);
    struct MHD_PostProcessor *pp = MHD_create_post_processor(r->conn, 64 * 1024, on_part, fm);
    if (!pp) {
        snprintf(fm->error, sizeof fm->error, "the body is not multipart/form-data with a boundary");
        return -1;
    }
    enum MHD_Result ok = r->body_len ? MHD_post_process(pp, r->body, r->body_len) : MHD_YES;
    if (MHD_destroy_post_processor(pp) != MHD_YES && ok == MHD_YES) ok = MHD_NO;
    if (ok != MHD_YES && !fm->error[0]) snprintf(fm->error, sizeof fm->error, "the multipart body is malformed");
    if (ok == MHD_YES && fm->n == 0) snprintf(fm->error, sizeof fm->error, "the form is empty");
    if (fm->error[0]) {
        form_free(fm);
        return -1;
    }
    return 0;
}

const struct form_field *form_get(const struct form *fm, const char *name) {
    for (int i = 0; i < fm->n; i++)
        if (!strcmp(fm->f[i].name, name)) return &fm->f[i];
    return NULL;
}

void form_free(struct form *fm) {
    for (int i = 0; i < fm->n; i++) free(fm->f[i].data);
    fm->n = 0;
}
