/* log.c — leveled log lines on stderr, the way a new-style daemon logs (journald adds
 * its own timestamps, but lines stay readable on a terminal too).  One fprintf per line
 * so lines from different threads never interleave. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "fs.h"

static enum sd_log_level log_level = SD_LOG_INFO;

void sd_log_set_level(enum sd_log_level lvl) { log_level = lvl; }

int sd_log_level_parse(const char *s, enum sd_log_level *out) {
    static const char *names[] = { "debug", "info", "warn", "error" };
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, names[i])) { *out = (enum sd_log_level)i; return 0; }
    return -1;
}

void sd_log(enum sd_log_level lvl, const char *fmt, ...) {
    if (lvl < log_level) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    fprintf(stderr, "sdxld[%d] %c %02d:%02d:%02d.%03d %s\n", (int)getpid(), "DIWE"[lvl],
            tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000), msg);
}

sd_status sd_read_file(const char *path, size_t max_bytes, char **data, size_t *len) {
    *data = NULL;
    if (len) *len = 0;
    FILE *f = sd_fopen(path, "rb");
    if (!f) return sd_fail(errno == ENOENT ? SD_ERR_NOTFOUND : SD_ERR_IO, "%s: %s", path,
                           sd_fs_strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return sd_fail(SD_ERR_IO, "%s: not a regular file", path);
    }
    if ((size_t)sb.st_size > max_bytes) {
        fclose(f);
        return sd_fail(SD_ERR_FORMAT, "%s: %lld bytes, more than the %zu allowed", path,
                       (long long)sb.st_size, max_bytes);
    }
    char *buf = sd_malloc((size_t)sb.st_size + 1);
    if (!buf) { fclose(f); return SD_ERR_NOMEM; }
    size_t n = fread(buf, 1, (size_t)sb.st_size, f);
    int err = ferror(f);
    fclose(f);
    if (err || n != (size_t)sb.st_size) {
        sd_free(buf);
        return sd_fail(SD_ERR_IO, "%s: short read", path);
    }
    buf[n] = 0;
    *data = buf;
    if (len) *len = n;
    return SD_OK;
}

int sd_parse_bool(const char *v, int *out) {
    static const char *yes[] = { "true", "yes", "on", "1" }, *no[] = { "false", "no", "off", "0" };
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(v, yes[i])) { *out = 1; return 0; }
        if (!strcasecmp(v, no[i])) { *out = 0; return 0; }
    }
    return -1;
}
