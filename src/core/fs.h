/* fs.h — every file the project opens, creates, renames or removes goes through here.
 *
 * Unconfined (the CLI, the daemon's own configuration), these are the POSIX calls.  A
 * thread may be *confined* to a few roots: then a path must lie under one of them and is
 * resolved beneath that root's directory descriptor.  Under a root without SD_ROOT_LINKS
 * (the daemon's data_root: files named by requests) no symbolic link is followed, in the
 * middle of a path or at its end (openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, or
 * an O_NOFOLLOW walk from the root where the kernel lacks openat2), and creates, renames
 * and removals act on a directory opened that way — so a link planted anywhere inside a
 * run folder cannot make the daemon read, write or delete outside.  Nor is a hard link: a
 * regular file with more than one name (st_nlink > 1) is refused there (EMLINK), since its
 * other name may lie outside the root and nothing on the path shows it.  A root with
 * SD_ROOT_LINKS is trusted (the operator's served model, which may be a Hugging Face cache
 * of links): paths there are opened as given.  A root without SD_ROOT_WRITE refuses every
 * change.  A path under no root fails with EXDEV, a symbolic link with ELOOP, a
 * hard-linked file with EMLINK, a write to a read-only root with EROFS; sd_fs_strerror
 * says so in words.
 *
 * Read-only opens never block (O_NONBLOCK): a FIFO in place of a file opens at once and is
 * refused by its reader as not a regular file, instead of hanging the thread.
 *
 * The calls return what the POSIX ones do (-1 / NULL with errno set). */
#ifndef SD_FS_H
#define SD_FS_H

#include <dirent.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "core.h"

enum { SD_ROOT_WRITE = 1, SD_ROOT_LINKS = 2 };
#define SD_FS_MAX_ROOTS 4

struct sd_root {
    int fd;                 /* O_PATH | O_DIRECTORY, -1 when closed */
    int flags;              /* SD_ROOT_* */
    size_t len;
    char path[PATH_MAX];    /* real path, no trailing slash ("/" itself allowed) */
};

/* Open a root at the real path of dir (which must be a directory). */
sd_status sd_root_open(struct sd_root *r, const char *dir, int flags);
void sd_root_close(struct sd_root *r);

/* Confine this thread to roots[0..n) (pointers kept: they must outlive the confinement);
 * n == 0 lifts it. */
void sd_fs_confine(const struct sd_root *const *roots, int n);
int sd_fs_confined(void);
/* Tests: resolve by the O_NOFOLLOW walk even where openat2 exists. */
void sd_fs_force_walk(int on);

int sd_open(const char *path, int flags, mode_t mode);
FILE *sd_fopen(const char *path, const char *mode);       /* "r", "rb", "w", "wb" */
DIR *sd_opendir(const char *path);
int sd_mkdir(const char *path, mode_t mode);
/* mkdir -p (0755) for the part of path after its first `keep` bytes (the folders above
 * exist: e.g. a confined root's own path); a folder that exists is fine.  The error names
 * the folder that could not be made. */
sd_status sd_mkdir_p(const char *path, size_t keep);
int sd_unlink(const char *path);
int sd_rmdir(const char *path);
int sd_rename(const char *from, const char *to);
/* lstat when confined under a no-links root (a link is reported as a link), stat else. */
int sd_stat(const char *path, struct stat *st);
/* Bytes an unprivileged writer may still use on dir's file system (statvfs f_bavail). */
int sd_free_bytes(const char *dir, uint64_t *bytes);
/* strerror, with the confinement's refusals in words. */
const char *sd_fs_strerror(int err);

/* Atomic replacement of path: write to PATH.tmp.PID (any stale file or link by that name
 * removed first, then created exclusively), fsync, rename over path, fsync the folder. */
struct sd_atomic {
    int fd;
    char path[PATH_MAX], tmp[PATH_MAX + 32];
};
sd_status sd_atomic_begin(struct sd_atomic *a, const char *path);
sd_status sd_atomic_write(struct sd_atomic *a, const void *data, size_t n);
sd_status sd_atomic_commit(struct sd_atomic *a);   /* closes; removes the temp file on error */
void sd_atomic_abort(struct sd_atomic *a);
sd_status sd_write_file_atomic(const char *path, const void *data, size_t n);
/* Copy a file of at most max_bytes to `to`, atomically. */
sd_status sd_copy_file(const char *from, const char *to, size_t max_bytes);

#endif
