/* auth.h — optional bearer-token authentication.
 *
 * Two token sets from two files (one token per line, '#' comments): generation tokens
 * (api_token_file) and admin tokens (admin_token_file); a token is 16 to 512 printable
 * characters, and a file with a shorter or longer one is refused at load (a longer one
 * could never match: auth_check refuses longer candidates).  Rules:
 *   - AUTH_NONE routes (health, readiness, metrics, the web page) are always open;
 *   - AUTH_API routes need a generation or an admin token once api_token_file is set;
 *   - AUTH_ADMIN routes need an admin token once either file is set, so turning on
 *     auth never leaves the admin endpoints open.
 * Tokens are compared in constant time (no early exit on the first differing byte or
 * on the first matching token).  auth_reload (SIGHUP) swaps the sets atomically; a
 * failed reload keeps the old ones.
 *
 * Threading: auth_check may run on any HTTP thread concurrently with auth_reload. */
#ifndef SD_SERVER_AUTH_H
#define SD_SERVER_AUTH_H

#include <stddef.h>

enum auth_level { AUTH_NONE, AUTH_API, AUTH_ADMIN };

struct auth;

/* Read both files (empty path = that set is off).  NULL on failure with a message in
 * err naming the file. */
struct auth *auth_new(const char *api_file, const char *admin_file, char *err, size_t errlen);
void auth_free(struct auth *a);
/* Re-read the files; 0 on success, -1 (old tokens kept) with a message in err. */
int auth_reload(struct auth *a, char *err, size_t errlen);
/* 0: allowed; -1: refused.  header is the Authorization header value or NULL. */
int auth_check(struct auth *a, enum auth_level need, const char *header);
/* Is any token set configured (for the log line and /v1/config)? */
int auth_enabled(struct auth *a);

#endif
