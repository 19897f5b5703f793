/* test_fs.c — confinement of file operations (src/core/fs.h): under a root without links
 * no symbolic link is followed by any call, paths outside every root are refused, a
 * read-only root refuses changes, a trusted root follows links; a hard-linked file is
 * refused under a root without links (read or written, never truncated); the atomic writer never
 * writes through a link planted at its temporary name.  Each case runs twice: with
 * openat2 and with the O_NOFOLLOW walk that stands in for it on older kernels. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "tap.h"
#include "core/fs.h"

static char base[] = "/tmp/sdxld-fs-XXXXXX";
static char root_p[256], out_p[256];

static void put(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) { fputs(text, f); fclose(f); }
}

static int has(const char *path, const char *text) {
    char buf[64] = "";
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return !strcmp(buf, text);
}

static char *P(const char *fmt, const char *a) {   /* a path under a fresh static buffer */
    static char bufs[8][512];
    static int k;
    char *b = bufs[k++ % 8];
    snprintf(b, sizeof bufs[0], fmt, a);
    return b;
}

static void setup(void) {
    snprintf(root_p, sizeof root_p, "%s/root", base);
    snprintf(out_p, sizeof out_p, "%s/outside", base);
    mkdir(root_p, 0755);
    mkdir(out_p, 0755);
    put(P("%s/victim", out_p), "outside");
    mkdir(P("%s/run", root_p), 0755);
    put(P("%s/run/ok.txt", root_p), "inside");
    if (symlink(out_p, P("%s/run/samples", root_p)) || symlink(P("%s/victim", out_p), P("%s/run/file-link", root_p)) ||
        symlink(P("%s/run", root_p), P("%s/inner-link", root_p)))
        diag("symlink: %s", strerror(errno));
    put(P("%s/secret", out_p), "secret");
    if (link(P("%s/secret", out_p), P("%s/run/hard", root_p))) diag("link: %s", strerror(errno));
}

/* Hard links under a no-links root: refused for reading and writing (the other name may
 * be outside), and a refused file is not truncated; a file with one name still is. */
static void hardlink_case(const char *mode) {
    char *data = NULL;
    errno = 0;
    ok(sd_open(P("%s/run/hard", root_p), O_RDONLY, 0) < 0 && errno == EMLINK,
       "%s: open of a hard link to a file outside: EMLINK (%s)", mode, sd_fs_strerror(errno));
    ok(sd_read_file(P("%s/run/hard", root_p), 100, &data, NULL) != SD_OK && !data &&
       strstr(sd_last_error(), "hard link"), "%s: sd_read_file says so: %s", mode, sd_last_error());
    errno = 0;
    ok(sd_open(P("%s/run/hard", root_p), O_WRONLY | O_TRUNC, 0) < 0 && errno == EMLINK &&
       has(P("%s/secret", out_p), "secret"), "%s: ... refused for writing too, the file not truncated", mode);
    put(P("%s/run/one.txt", root_p), "one name");
    int fd = sd_open(P("%s/run/one.txt", root_p), O_WRONLY | O_TRUNC, 0);
    ok(fd >= 0 && has(P("%s/run/one.txt", root_p), ""), "%s: a file with one name opens with O_TRUNC, "
       "truncated", mode);
    if (fd >= 0) close(fd);
}

static void confined_case(const char *mode) {
    struct sd_root r, ro;
    if (!ok(sd_root_open(&r, root_p, SD_ROOT_WRITE) == SD_OK && sd_root_open(&ro, out_p, 0) == SD_OK,
            "%s: roots open", mode))
        return;
    const struct sd_root *rs[1] = { &r };
    sd_fs_confine(rs, 1);
    ok(sd_fs_confined(), "%s: confined", mode);
    char *data;
    ok(sd_read_file(P("%s/run/ok.txt", root_p), 100, &data, NULL) == SD_OK && !strcmp(data, "inside"),
       "%s: a plain file under the root reads", mode);
    sd_free(data);
    errno = 0;
    ok(sd_open(P("%s/run/samples/x.png", root_p), O_WRONLY | O_CREAT, 0644) < 0 && errno == ELOOP,
       "%s: create through a linked folder: ELOOP (%s)", mode, sd_fs_strerror(errno));
    ok(sd_open(P("%s/run/file-link", root_p), O_RDONLY, 0) < 0 && errno == ELOOP,
       "%s: open of a link to a file: ELOOP", mode);
    ok(sd_open(P("%s/inner-link/ok.txt", root_p), O_RDONLY, 0) < 0 && errno == ELOOP,
       "%s: even a link that stays inside is not followed", mode);
    ok(sd_unlink(P("%s/run/samples/victim", root_p)) < 0 && has(P("%s/victim", out_p), "outside"),
       "%s: unlink through a linked folder fails, the target stays", mode);
    ok(sd_mkdir(P("%s/run/samples/new", root_p), 0755) < 0 && access(P("%s/new", out_p), F_OK) < 0,
       "%s: mkdir through a linked folder fails", mode);
    ok(sd_rename(P("%s/run/ok.txt", root_p), P("%s/run/samples/moved", root_p)) < 0 &&
       access(P("%s/moved", out_p), F_OK) < 0, "%s: rename into a linked folder fails", mode);
    errno = 0;
    ok(sd_open(P("%s/victim", out_p), O_RDONLY, 0) < 0 && errno == EXDEV,
       "%s: a path under no root: EXDEV (%s)", mode, sd_fs_strerror(errno));
    ok(sd_open(P("%s/run/../../outside/victim", root_p), O_RDONLY, 0) < 0 && errno == EXDEV,
       "%s: '..' is refused", mode);
    ok(sd_open("run/ok.txt", O_RDONLY, 0) < 0 && errno == EXDEV, "%s: a relative path is refused", mode);
    hardlink_case(mode);
    struct stat st;
    ok(sd_stat(P("%s/run/samples", root_p), &st) == 0 && S_ISLNK(st.st_mode),
       "%s: stat reports a link as a link", mode);
    /* the atomic writer removes a link planted at its temporary name */
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s/run/gen.safetensors.tmp.%ld", root_p, (long)getpid());
    if (symlink(P("%s/victim", out_p), tmp)) diag("symlink: %s", strerror(errno));
    ok(sd_write_file_atomic(P("%s/run/gen.safetensors", root_p), "new", 3) == SD_OK &&
       has(P("%s/run/gen.safetensors", root_p), "new") && has(P("%s/victim", out_p), "outside") &&
       access(tmp, F_OK) < 0, "%s: atomic write replaces a planted temp link, the target untouched", mode);
    ok(sd_write_file_atomic(P("%s/run/samples/g.png", root_p), "x", 1) != SD_OK &&
       strstr(sd_last_error(), "symbolic link"), "%s: atomic write into a linked folder: %s", mode, sd_last_error());
    /* a read-only root and a trusted one */
    const struct sd_root *rs2[2] = { &r, &ro };
    sd_fs_confine(rs2, 2);
    ok(sd_open(P("%s/victim", out_p), O_RDONLY, 0) >= 0, "%s: a read-only root reads", mode);
    errno = 0;
    ok(sd_open(P("%s/victim", out_p), O_WRONLY, 0) < 0 && errno == EROFS && sd_unlink(P("%s/victim", out_p)) < 0 &&
       has(P("%s/victim", out_p), "outside"), "%s: ... and refuses writes and removals", mode);
    sd_root_close(&ro);
    ok(sd_root_open(&ro, root_p, SD_ROOT_LINKS) == SD_OK, "%s: trusted root", mode);
    const struct sd_root *rs3[1] = { &ro };
    sd_fs_confine(rs3, 1);
    ok(sd_read_file(P("%s/inner-link/ok.txt", root_p), 100, &data, NULL) == SD_OK, "%s: a trusted root follows links", mode);
    sd_free(data);
    ok(sd_mkdir(P("%s/run/x", root_p), 0755) < 0 && errno == EROFS, "%s: ... and is read-only", mode);
    sd_fs_confine(NULL, 0);
    ok(!sd_fs_confined(), "%s: confinement lifted", mode);
    sd_unlink(P("%s/run/gen.safetensors", root_p));
    sd_root_close(&r);
    sd_root_close(&ro);
}

int main(void) {
    if (!mkdtemp(base)) { ok(0, "temp dir"); return done_testing(); }
    setup();
    confined_case("openat2");
    sd_fs_force_walk(1);
    confined_case("walk");
    sd_fs_force_walk(0);
    /* unconfined: the CLI's view, links followed, but the atomic writer still never
     * writes through a planted temporary name */
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s/plain.tmp.%ld", base, (long)getpid());
    if (symlink(P("%s/victim", out_p), tmp)) diag("symlink: %s", strerror(errno));
    ok(sd_write_file_atomic(P("%s/plain", base), "new", 3) == SD_OK && has(P("%s/victim", out_p), "outside") &&
       has(P("%s/plain", base), "new"), "unconfined: atomic write replaces a planted temp link");
    char *data;
    ok(sd_read_file(P("%s/run/samples/victim", root_p), 100, &data, NULL) == SD_OK, "unconfined: links are followed");
    sd_free(data);
    ok(sd_read_file(P("%s/run/hard", root_p), 100, &data, NULL) == SD_OK && !strcmp(data, "secret"),
       "unconfined: a hard-linked file reads");
    sd_free(data);
    /* a FIFO where a file is expected: refused at once, never waiting for a writer */
    if (mkfifo(P("%s/run/pipe", root_p), 0644)) diag("mkfifo: %s", strerror(errno));
    ok(sd_read_file(P("%s/run/pipe", root_p), 100, &data, NULL) != SD_OK && strstr(sd_last_error(), "not a regular file"),
       "a FIFO is refused without blocking: %s", sd_last_error());
    struct sd_root fr;
    if (sd_root_open(&fr, root_p, 0) == SD_OK) {
        const struct sd_root *frs[1] = { &fr };
        sd_fs_confine(frs, 1);
        ok(sd_read_file(P("%s/run/pipe", root_p), 100, &data, NULL) != SD_OK, "... also when confined");
        sd_fs_confine(NULL, 0);
        sd_root_close(&fr);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd)) diag("could not remove %s", base);
    return done_testing();
}
