/* auth.c — token files and constant-time comparison (see auth.h for the rules).
 *
 * A token set is an immutable array; the current sets live behind a rwlock and a reload
 * builds new sets first, then swaps them under the write lock, so a check never sees a
 * half-read file. */
#include "auth.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define AUTH_MAX_TOKENS 1024
#define AUTH_MAX_TOKEN_LEN 512

struct token_set {
    int n;
    char **tok;
    size_t *len;
};

struct auth {
    char *api_path, *admin_path;
    pthread_rwlock_t lock;
    struct token_set *api, *admin;   /* NULL when the file is not configured */
};

static void set_free(struct token_set *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) {
        /* Tokens are secrets: do not leave them in freed memory. */
        volatile char *p = s->tok[i];
        for (size_t k = 0; k < s->len[i]; k++) p[k] = 0;
        free(s->tok[i]);
    }
    free(s->tok);
    free(s->len);
    free(s);
}

/* Parse a token file.  NULL + err on failure (unreadable, empty, malformed). */
static struct token_set *set_load(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 0004))
        fprintf(stderr, "sdxld: warning: token file %s is world-readable\n", path);
    struct token_set *s = calloc(1, sizeof *s);
    s->tok = calloc(AUTH_MAX_TOKENS, sizeof *s->tok);
    s->len = calloc(AUTH_MAX_TOKENS, sizeof *s->len);
    char line[AUTH_MAX_TOKEN_LEN + 4];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        if (n && line[n - 1] != '\n' && !feof(f)) {
            snprintf(err, errlen, "%s:%d: token longer than %d bytes", path, lineno,
                     AUTH_MAX_TOKEN_LEN);
            goto fail;
        }
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
                     line[n - 1] == '\t'))
            line[--n] = 0;
        char *t = line;
        while (*t == ' ' || *t == '\t') t++;
        if (!*t || *t == '#') continue;
        for (char *c = t; *c; c++)
            if (*c <= ' ' || *c == 127) {
                snprintf(err, errlen, "%s:%d: a token may not contain spaces or control "
                         "characters", path, lineno);
                goto fail;
            }
        if (strlen(t) > AUTH_MAX_TOKEN_LEN) {   /* auth_check would never match it */
            snprintf(err, errlen, "%s:%d: token longer than %d bytes", path, lineno,
                     AUTH_MAX_TOKEN_LEN);
            goto fail;
        }
        if (strlen(t) < 16) {
            snprintf(err, errlen, "%s:%d: token shorter than 16 characters", path, lineno);
            goto fail;
        }
        if (s->n == AUTH_MAX_TOKENS) {
            snprintf(err, errlen, "%s: more than %d tokens", path, AUTH_MAX_TOKENS);
            goto fail;
        }
        s->len[s->n] = strlen(t);
        s->tok[s->n++] = strdup(t);
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        goto fail;
    }
    if (s->n == 0) {
        snprintf(err, errlen, "%s: no tokens in file", path);
        goto fail;
    }
    fclose(f);
    return s;
fail:
    fclose(f);
    set_free(s);
    return NULL;
}

/* Constant time in the candidate's length and the number of tokens: every token is
 * compared over the candidate's full length, and the result is accumulated without
 * branching. */
static int set_match(const struct token_set *s, const char *cand, size_t clen) {
    unsigned found = 0;
    for (int i = 0; i < s->n; i++) {
        const unsigned char *t = (const unsigned char *)s->tok[i];
        size_t tlen = s->len[i];
        unsigned diff = (unsigned)(tlen ^ clen);
        for (size_t k = 0; k < clen; k++) {
            unsigned char tc = t[k < tlen ? k : 0];   /* stay in bounds; length already differs */
            diff |= tc ^ (unsigned char)cand[k];
        }
        found |= (diff == 0);
    }
    return (int)found;
}

static int load_both(struct auth *a, struct token_set **api, struct token_set **admin,
                     char *err, size_t errlen) {
    *api = *admin = NULL;
    if (a->api_path && !(*api = set_load(a->api_path, err, errlen))) return -1;
    if (a->admin_path && !(*admin = set_load(a->admin_path, err, errlen))) {
        set_free(*api);
        *api = NULL;
        return -1;
    }
    return 0;
}

struct auth *auth_new(const char *api_file, const char *admin_file, char *err, size_t errlen) {
    struct auth *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->api_path = api_file && *api_file ? strdup(api_file) : NULL;
    a->admin_path = admin_file && *admin_file ? strdup(admin_file) : NULL;
    pthread_rwlock_init(&a->lock, NULL);
    if (load_both(a, &a->api, &a->admin, err, errlen)) {
        auth_free(a);
        return NULL;
    }
    return a;
}

void auth_free(struct auth *a) {
    if (!a) return;
    set_free(a->api);
    set_free(a->admin);
    free(a->api_path);
    free(a->admin_path);
    pthread_rwlock_destroy(&a->lock);
    free(a);
}

int auth_reload(struct auth *a, char *err, size_t errlen) {
    struct token_set *api, *admin;
    if (load_both(a, &api, &admin, err, errlen)) return -1;
    pthread_rwlock_wrlock(&a->lock);
    struct token_set *oa = a->api, *od = a->admin;
    a->api = api;
    a->admin = admin;
    pthread_rwlock_unlock(&a->lock);
    set_free(oa);
    set_free(od);
    return 0;
}

int auth_enabled(struct auth *a) {
    return a->api_path || a->admin_path;
}

int auth_check(struct auth *a, enum auth_level need, const char *header) {
    if (need == AUTH_NONE) return 0;
    if (need == AUTH_API && !a->api_path) return 0;
    if (need == AUTH_ADMIN && !a->api_path && !a->admin_path) return 0;
    if (!header || strncasecmp(header, "Bearer ", 7)) return -1;
    const char *tok = header + 7;
    while (*tok == ' ') tok++;
    size_t len = strlen(tok);
    while (len && tok[len - 1] == ' ') len--;
    if (len == 0 || len > AUTH_MAX_TOKEN_LEN) return -1;
    int ok = 0;
    pthread_rwlock_rdlock(&a->lock);
    if (a->admin) ok |= set_match(a->admin, tok, len);
    if (need == AUTH_API && a->api) ok |= set_match(a->api, tok, len);
    pthread_rwlock_unlock(&a->lock);
    return ok ? 0 : -1;
}
