/* zipfile.h — a strict reader for the stored (uncompressed) ZIP archives PyTorch writes.
 *
 * torch.save (since 1.6) writes a ZIP archive whose entries are stored, not compressed:
 * ARCHIVE/data.pkl (the pickle), ARCHIVE/data/KEY (one per storage), ARCHIVE/byteorder,
 * ARCHIVE/version and a few more.  This reader works on a caller-owned read-only mapping
 * of the whole file and trusts none of it:
 *   - the end-of-central-directory record must end the file exactly (a trailing comment
 *     is allowed when its length says so), single-disk only; ZIP64 records are read when
 *     a field says so (files > 4 GiB, > 65535 entries);
 *   - the entry count is bounded (ZIP_MAX_ENTRIES) and must fit the central directory;
 *     the central directory must lie before the end record;
 *   - each entry must be STORED (method 0), unencrypted, with compressed == uncompressed
 *     size, a name of 1..ZIP_MAX_NAME bytes without NUL, and a local header that agrees
 *     with the central directory (signature, method, name, sizes; or, with local sizes
 *     deferred, a data descriptor after the data with the same sizes);
 *   - each entry's [local header, end of data) lies before the central directory and no
 *     two entries overlap; duplicate names are refused.
 * CRCs are not verified: the data is read lazily through the mapping (as safetensors
 * data is), and a bit flip in a weight is caught by no format we read. */
#ifndef SD_ZIPFILE_H
#define SD_ZIPFILE_H

#include "../core/core.h"

#define ZIP_MAX_ENTRIES (1u << 20)
#define ZIP_MAX_NAME 1024

struct zip_entry {
    const char *name;       /* NUL-terminated copy owned by the archive */
    uint64_t offset;        /* of the data, in the file */
    uint64_t size;          /* bytes of data */
    uint64_t header;        /* offset of the local header: the entry's bytes are */
    uint64_t end;           /* [header, end), data descriptor included */
};

struct zip_archive {
    const uint8_t *base;    /* the mapping, borrowed */
    size_t size;
    uint32_t n;
    struct zip_entry *e;    /* sorted by name; one allocation with the names */
};

/* Parse the archive in base[0, size).  path is used only in messages.  On failure the
 * archive is left empty and the message names the path and the entry. */
sd_status zip_open(struct zip_archive *z, const char *path, const void *base, size_t size);
void zip_close(struct zip_archive *z);
/* The entry with exactly this name, or NULL. */
const struct zip_entry *zip_find(const struct zip_archive *z, const char *name);

#endif
