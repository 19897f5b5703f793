/* form.h — a multipart/form-data request body (POST /v1/images/edits) read into its
 * fields through libmicrohttpd's post processor.  The body is already bounded by the
 * route's max_body (http.c); the form is bounded again here: at most FORM_MAX_FIELDS
 * fields, names of at most FORM_NAME_MAX - 1 bytes, each field given once. */
#ifndef SD_SERVER_FORM_H
#define SD_SERVER_FORM_H

#include <stddef.h>
#include <stdint.h>

#define FORM_MAX_FIELDS 32
#define FORM_NAME_MAX 64

struct form_field {
    char name[FORM_NAME_MAX];
    int is_file;               /* sent with a filename (a file part) */
    uint8_t *data;             /* malloc'ed, NUL-terminated (data[len] == 0) */
    size_t len, cap;
};

struct form {
    struct form_field f[FORM_MAX_FIELDS];
    int n;
    char error[160];           /* why the form was refused */
};

struct req;
/* Parse r's raw body into fm.  -1 with fm->error set when the body is not a well-formed
 * form within the bounds above. */
int form_read(struct req *r, struct form *fm);
/* The field named name, or NULL. */
const struct form_field *form_get(const struct form *fm, const char *name);
void form_free(struct form *fm);

#endif
