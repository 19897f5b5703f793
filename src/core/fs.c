/* fs.c — see fs.h.  The confinement is per thread (like the error message of status.c):
 * the daemon's worker confines itself while it acts on a request's paths. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fs.h"

static _Thread_local const struct sd_root *roots[SD_FS_MAX_ROOTS];
static _Thread_local int nroots;
static _Thread_local int force_walk;

sd_status sd_root_open(struct sd_root *r, const char *dir, int flags) {
    r->fd = -1;
    r->flags = flags;
    if (!realpath(dir, r->path))
        return sd_fail(errno == ENOENT ? SD_ERR_NOTFOUND : SD_ERR_IO, "%s: %s", dir, strerror(errno));
    r->len = strlen(r->path);
    r->fd = open(r->path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (r->fd < 0) return sd_fail(SD_ERR_IO, "%s: %s", dir, strerror(errno));
    return SD_OK;
}

void sd_root_close(struct sd_root *r) {
    if (r->fd >= 0) close(r->fd);
    r->fd = -1;
}

void sd_fs_confine(const struct sd_root *const *rs, int n) {
    nroots = n < 0 ? 0 : n > SD_FS_MAX_ROOTS ? SD_FS_MAX_ROOTS : n;
    for (int i = 0; i < nroots; i++) roots[i] = rs[i];
}

int sd_fs_confined(void) { return nroots > 0; }
void sd_fs_force_walk(int on) { force_walk = on; }

const char *sd_fs_strerror(int err) {
    if (nroots && err == EXDEV) return "outside the folders this request may use";
    if (nroots && err == ELOOP) return "a symbolic link (links are not followed there)";
    if (nroots && err == EMLINK) return "a file with more than one hard link (links are not followed there)";
    if (nroots && err == EROFS) return "that folder is read-only here";
    return strerror(err);
}

/* Does p have a ".." component? */
static int has_dotdot(const char *p) {
    for (const char *c = p; (c = strstr(c, "..")); c += 2)
        if ((c == p || c[-1] == '/') && (c[2] == 0 || c[2] == '/')) return 1;
    return 0;
}

/* The root p lies under (the longest match), *rest the part below it; NULL (EXDEV) when
 * none or the path climbs with "..". */
static const struct sd_root *find_root(const char *p, const char **rest) {
    const struct sd_root *best = NULL;
    for (int i = 0; i < nroots; i++) {
        const struct sd_root *r = roots[i];
        size_t n = r->len == 1 ? 0 : r->len;   /* "/" */
        if (strncmp(p, r->path, n) || (p[n] != '/' && p[n] != 0)) continue;
        if (!best || r->len > best->len) best = r;
    }
    if (!best || p[0] != '/' || has_dotdot(p)) {
        errno = EXDEV;
        return NULL;
    }
    *rest = p + (best->len == 1 ? 0 : best->len);
    *rest += strspn(*rest, "/");
    return best;
}

static int fail_errno(int fd_to_close, int err) {
    if (fd_to_close >= 0) close(fd_to_close);
    errno = err;
    return -1;
}

/* Open rest beneath root without following any link, one name at a time: each folder by
 * O_PATH | O_NOFOLLOW (a link is refused after fstat), the last name with O_NOFOLLOW. */
static int walk(int root, const char *rest, int flags, mode_t mode) {
    int dir = -1;   /* owned; -1 = root */
    char name[NAME_MAX + 1];
    for (const char *c = rest;;) {
        c += strspn(c, "/");
        size_t l = strcspn(c, "/");
        const char *next = c + l + strspn(c + l, "/");
        int last = !*next;
        if (l > NAME_MAX) return fail_errno(dir, ENAMETOOLONG);
        memcpy(name, l ? c : ".", l ? l : 1);
        name[l ? l : 1] = 0;
        int base = dir >= 0 ? dir : root;
        int want_path = !last || (flags & O_PATH);
        int fd = want_path ? openat(base, name, O_PATH | O_NOFOLLOW | O_CLOEXEC)
                           : openat(base, name, flags | O_NOFOLLOW | O_CLOEXEC, mode);
        int err = errno;
        if (dir >= 0) close(dir);
        if (fd < 0) return fail_errno(-1, err);
        if (want_path) {
            struct stat st;
            if (fstat(fd, &st)) return fail_errno(fd, errno);
            if (S_ISLNK(st.st_mode)) return fail_errno(fd, ELOOP);
            if ((!last || (flags & O_DIRECTORY)) && !S_ISDIR(st.st_mode)) return fail_errno(fd, ENOTDIR);
        }
        if (last) return fd;
        dir = fd;
        c = next;
    }
}

static int resolve_beneath(const struct sd_root *r, const char *rest, int flags, mode_t mode) {
    if (!*rest) rest = ".";
    if (!force_walk) {
        struct open_how how = { .flags = (uint64_t)(flags | O_CLOEXEC),
                                .mode = (flags & O_CREAT) ? mode : 0,
                                .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
        long fd = syscall(SYS_openat2, r->fd, rest, &how, sizeof how);
        if (fd >= 0 || errno != ENOSYS) return (int)fd;
    }
    return walk(r->fd, rest, flags, mode);
}

/* Open rest beneath r, no symbolic link followed, and no hard-linked file either: a
 * regular file with more than one name may have its other name outside the root (a hard
 * link made inside data_root to a file elsewhere has no link on its path for the resolver
 * to refuse), so a confined open of one fails with EMLINK.  O_TRUNC is applied only after
 * that check, so a refused file is never truncated.  O_PATH opens (folders on the way,
 * parents of a name) touch no content and are not checked. */
static int beneath(const struct sd_root *r, const char *rest, int flags, mode_t mode) {
    int fd = resolve_beneath(r, rest, flags & ~O_TRUNC, mode);
    if (fd < 0 || (flags & O_PATH)) return fd;
    struct stat st;
    if (fstat(fd, &st)) return fail_errno(fd, errno);
    if (S_ISREG(st.st_mode) && st.st_nlink > 1) return fail_errno(fd, EMLINK);
    if ((flags & O_TRUNC) && S_ISREG(st.st_mode) && ftruncate(fd, 0)) return fail_errno(fd, errno);
    return fd;
}

static int writes(int flags) {
    return (flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC));
}

/* The root of path when confined; NULL with *plain = 1 when the POSIX call applies (not
 * confined, or a trusted root), NULL with *plain = 0 on refusal (errno set). */
static const struct sd_root *route(const char *path, int write, const char **rest, int *plain) {
    *plain = 0;
    if (!nroots) { *plain = 1; return NULL; }
    const struct sd_root *r = find_root(path, rest);
    if (!r) return NULL;
    if (write && !(r->flags & SD_ROOT_WRITE)) { errno = EROFS; return NULL; }
    if (r->flags & SD_ROOT_LINKS) { *plain = 1; return NULL; }
    return r;
}

/* A read never waits for a FIFO's writer: read-only opens are non-blocking (no effect on
 * regular files and folders; a FIFO opens at once and its callers refuse it as "not a
 * regular file"), so a pipe planted where a file is expected cannot hang a thread. */
int sd_open(const char *path, int flags, mode_t mode) {
    const char *rest;
    int plain;
    if (!writes(flags)) flags |= O_NONBLOCK;
    const struct sd_root *r = route(path, writes(flags), &rest, &plain);
    if (plain) return open(path, flags | O_CLOEXEC, mode);
    return r ? beneath(r, rest, flags, mode) : -1;
}

FILE *sd_fopen(const char *path, const char *mode) {
    int w = mode[0] == 'w';
    if (!w && mode[0] != 'r') { errno = EINVAL; return NULL; }
    int fd = sd_open(path, w ? O_WRONLY | O_CREAT | O_TRUNC : O_RDONLY, 0644);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, w ? "w" : "r");
    if (!f) close(fd);
    return f;
}

DIR *sd_opendir(const char *path) {
    int fd = sd_open(path, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0) return NULL;
    DIR *d = fdopendir(fd);
    if (!d) close(fd);
    return d;
}

/* The folder holding path's last name, opened beneath its root; the name into name. */
static int parent(const struct sd_root *r, const char *rest, char name[NAME_MAX + 1]) {
    size_t n = strlen(rest);
    while (n && rest[n - 1] == '/') n--;
    size_t b = n;
    while (b && rest[b - 1] != '/') b--;
    if (n == b || (n - b == 1 && rest[b] == '.')) { errno = EINVAL; return -1; }
    if (n - b > NAME_MAX) { errno = ENAMETOOLONG; return -1; }
    memcpy(name, rest + b, n - b);
    name[n - b] = 0;
    char dir[PATH_MAX];
    if (b >= sizeof dir) { errno = ENAMETOOLONG; return -1; }
    memcpy(dir, rest, b);
    dir[b] = 0;
    return beneath(r, dir, O_PATH | O_DIRECTORY, 0);
}

/* One call on the last name of path, in its folder opened beneath its root. */
enum name_op { OP_MKDIR, OP_UNLINK, OP_RMDIR, OP_STAT };

static int name_op(const char *path, enum name_op op, mode_t mode, struct stat *st) {
    const char *rest;
    int plain;
    const struct sd_root *r = route(path, op != OP_STAT, &rest, &plain);
    if (plain) {
        switch (op) {
        case OP_MKDIR: return mkdir(path, mode);
        case OP_UNLINK: return unlink(path);
        case OP_RMDIR: return rmdir(path);
        case OP_STAT: return stat(path, st);
        }
    }
    if (!r) return -1;
    if (op == OP_STAT && !*rest) return fstat(r->fd, st);
    char name[NAME_MAX + 1];
    int dfd = parent(r, rest, name);
    if (dfd < 0) return -1;
    int rc = op == OP_MKDIR ? mkdirat(dfd, name, mode)
           : op == OP_STAT ? fstatat(dfd, name, st, AT_SYMLINK_NOFOLLOW)
           : unlinkat(dfd, name, op == OP_RMDIR ? AT_REMOVEDIR : 0);
    int err = errno;
    close(dfd);
    errno = err;
    return rc;
}

int sd_mkdir(const char *path, mode_t mode) { return name_op(path, OP_MKDIR, mode, NULL); }
int sd_unlink(const char *path) { return name_op(path, OP_UNLINK, 0, NULL); }
int sd_rmdir(const char *path) { return name_op(path, OP_RMDIR, 0, NULL); }
int sd_stat(const char *path, struct stat *st) { return name_op(path, OP_STAT, 0, st); }

int sd_free_bytes(const char *dir, uint64_t *bytes) {
    int fd = sd_open(dir, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0) return -1;
    struct statvfs v;
    int rc = fstatvfs(fd, &v), err = errno;
    close(fd);
    if (rc) { errno = err; return -1; }
    *bytes = (uint64_t)v.f_bavail * v.f_frsize;
    return 0;
}

int sd_rename(const char *from, const char *to) {
    const char *rf, *rt;
    int pf, pt;
    const struct sd_root *a = route(from, 1, &rf, &pf), *b = route(to, 1, &rt, &pt);
    if (pf && pt) return rename(from, to);
    if ((!a && !pf) || (!b && !pt)) return -1;           /* refused: errno from route */
    if (a != b) { errno = EXDEV; return -1; }             /* two roots, or beneath + plain */
    char nf[NAME_MAX + 1], nt[NAME_MAX + 1];
    int df = parent(a, rf, nf);
    if (df < 0) return -1;
    int dt = parent(b, rt, nt);
    if (dt < 0) return fail_errno(df, errno);
    int rc = renameat(df, nf, dt, nt), err = errno;
    close(df);
    close(dt);
    errno = err;
    return rc;
}

/* ---- atomic replacement ---- */

sd_status sd_atomic_begin(struct sd_atomic *a, const char *path) {
    a->fd = -1;
    if (snprintf(a->path, sizeof a->path, "%s", path) >= (int)sizeof a->path)
        return sd_fail(SD_ERR_INVALID, "%s: path too long", path);
    snprintf(a->tmp, sizeof a->tmp, "%s.tmp.%ld", path, (long)getpid());
    sd_unlink(a->tmp);   /* a stale one, or a link planted by that name: the name is ours */
    a->fd = sd_open(a->tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (a->fd < 0) return sd_fail(SD_ERR_IO, "%s: cannot create: %s", a->tmp, sd_fs_strerror(errno));
    return SD_OK;
}

sd_status sd_atomic_write(struct sd_atomic *a, const void *data, size_t n) {
    const char *b = data;
    while (n) {
        ssize_t k = write(a->fd, b, n > (1u << 30) ? (1u << 30) : n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return sd_fail(SD_ERR_IO, "%s: write failed: %s", a->tmp, strerror(errno));
        b += k;
        n -= (size_t)k;
    }
    return SD_OK;
}

void sd_atomic_abort(struct sd_atomic *a) {
    if (a->fd >= 0) close(a->fd);
    if (a->fd >= 0) sd_unlink(a->tmp);
    a->fd = -1;
}

/* Make the rename durable; failure here is not worth failing the save for. */
static void fsync_parent(const char *path) {
    const char *slash = strrchr(path, '/');
    char dir[PATH_MAX];
    size_t n = slash ? (size_t)(slash - path) + (slash == path) : 0;
    if (n >= sizeof dir) return;
    memcpy(dir, path, n);
    dir[n] = 0;
    int fd = sd_open(n ? dir : ".", O_RDONLY | O_DIRECTORY, 0);
    if (fd >= 0) { fsync(fd); close(fd); }
}

sd_status sd_atomic_commit(struct sd_atomic *a) {
    sd_status st = SD_OK;
    if (fsync(a->fd) != 0) st = sd_fail(SD_ERR_IO, "%s: fsync failed: %s", a->tmp, strerror(errno));
    if (close(a->fd) != 0 && !st) st = sd_fail(SD_ERR_IO, "%s: close failed: %s", a->tmp, strerror(errno));
    a->fd = -1;
    if (!st && sd_rename(a->tmp, a->path) != 0)
        st = sd_fail(SD_ERR_IO, "%s: cannot rename %s into place: %s", a->path, a->tmp,
                     sd_fs_strerror(errno));
    if (st) sd_unlink(a->tmp);
    else fsync_parent(a->path);
    return st;
}

sd_status sd_write_file_atomic(const char *path, const void *data, size_t n) {
    struct sd_atomic a;
    SD_TRY(sd_atomic_begin(&a, path));
    sd_status st = sd_atomic_write(&a, data, n);
    if (st) { sd_atomic_abort(&a); return st; }
    return sd_atomic_commit(&a);
}

sd_status sd_copy_file(const char *from, const char *to, size_t max_bytes) {
    char *data;
    size_t len;
    SD_TRY(sd_read_file(from, max_bytes, &data, &len));
    sd_status st = sd_write_file_atomic(to, data, len);
    sd_free(data);
    return st;
}

sd_status sd_mkdir_p(const char *path, size_t keep) {
    char p[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof p) return sd_fail(SD_ERR_INVALID, "%s: path too long", path);
    memcpy(p, path, n + 1);
    for (size_t i = keep + 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != 0) continue;
        char c = p[i];
        p[i] = 0;
        if (sd_mkdir(p, 0755) && errno != EEXIST) return sd_fail(SD_ERR_IO, "%s: %s", p, sd_fs_strerror(errno));
        p[i] = c;
    }
    return SD_OK;
}
