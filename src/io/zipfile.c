/* zipfile.c — see zipfile.h for what is checked.
 *
 * Layout read (APPNOTE 6.3, little-endian; offsets in bytes from each record's start):
 *   end of central directory (22 + comment): sig 0x06054b50 | u16 disk @4 | u16 cd disk @6
 *     | u16 entries here @8 | u16 entries @10 | u32 cd size @12 | u32 cd offset @16
 *     | u16 comment length @20
 *   ZIP64 locator (20, just before it): sig 0x07064b50 | u32 disk @4 | u64 record @8
 *     | u32 disks @16
 *   ZIP64 end record (56+): sig 0x06064b50 | u64 size of the rest @4 | u32 disk @16
 *     | u32 cd disk @20 | u64 entries here @24 | u64 entries @32 | u64 cd size @40
 *     | u64 cd offset @48
 *   central header (46 + name + extra + comment): sig 0x02014b50 | u16 flags @8
 *     | u16 method @10 | u32 csize @20 | u32 usize @24 | u16 name @28 | u16 extra @30
 *     | u16 comment @32 | u16 disk @34 | u32 local header @42
 *   local header (30 + name + extra, then the data): sig 0x04034b50 | u16 flags @6
 *     | u16 method @8 | u32 csize @18 | u32 usize @22 | u16 name @26 | u16 extra @28
 *   data descriptor (after the data when local flag bit 3 is set and the local sizes
 *     are 0, as torch writes): [sig 0x08074b50] | u32 crc | u32 or u64 csize, usize
 *   ZIP64 extra field (id 0x0001): in order, only those whose 32-bit field is all ones:
 *     u64 usize | u64 csize | u64 local header | u32 disk
 * torch pads each local header's extra field so the data starts 64-byte aligned; the
 * data offset is therefore always computed from the local header, never assumed. */
#include "zipfile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_Z64_LOCATOR 0x07064b50u
#define SIG_Z64_EOCD 0x06064b50u
#define SIG_DESCRIPTOR 0x08074b50u
#define EOCD_LEN 22u
#define Z64_LOCATOR_LEN 20u
#define Z64_EOCD_LEN 56u
#define CENTRAL_LEN 46u
#define LOCAL_LEN 30u
#define FLAG_ENCRYPTED 0x0001u
#define FLAG_DESCRIPTOR 0x0008u
#define FLAG_STRONG_ENC 0x0040u

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

/* Entry names end up in messages: printable ASCII passes, the rest is escaped. */
static const char *safe_name(char *buf, size_t n, const uint8_t *s, size_t len) {
    size_t o = 0, i = 0;
    for (; i < len && o + 5 < n; i++) {
        if (s[i] < 0x20 || s[i] >= 0x7f) o += (size_t)snprintf(buf + o, n - o, "\\x%02x", s[i]);
        else buf[o++] = (char)s[i];
    }
    if (i < len && o + 4 <= n) { memcpy(buf + o, "...", 3); o += 3; }
    buf[o] = 0;
    return buf;
}

struct cd_info { uint64_t count, offset, size; };

/* The ZIP64 end record named by the locator just before the classic end record at pos. */
static sd_status read_zip64_end(const char *path, const uint8_t *b, uint64_t pos,
                                struct cd_info *cd, uint64_t *cd_limit) {
    const uint8_t *loc = b + pos - Z64_LOCATOR_LEN;
    uint64_t rec = le64(loc + 8), loc_at = pos - Z64_LOCATOR_LEN;
    if (le32(loc + 4) != 0 || le32(loc + 16) > 1)
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: multi-disk ZIP archives are not supported", path);
    if (rec > loc_at || loc_at - rec < Z64_EOCD_LEN || le32(b + rec) != SIG_Z64_EOCD)
        return sd_fail(SD_ERR_FORMAT, "%s: ZIP64 end record at %llu is invalid", path,
                       (unsigned long long)rec);
    const uint8_t *e = b + rec;
    if (le64(e + 4) != loc_at - rec - 12)
        return sd_fail(SD_ERR_FORMAT, "%s: ZIP64 end record size %llu does not reach the locator",
                       path, (unsigned long long)le64(e + 4));
    if (le32(e + 16) != 0 || le32(e + 20) != 0 || le64(e + 24) != le64(e + 32))
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: multi-disk ZIP archives are not supported", path);
    cd->count = le64(e + 32);
    cd->size = le64(e + 40);
    cd->offset = le64(e + 48);
    *cd_limit = rec;
    return SD_OK;
}

/* Find the end record (it must end the file, comment included) and the central
 * directory it describes; the directory must run exactly up to the end records.  torch
 * always writes the ZIP64 records too; where both exist, the classic fields that are
 * not saturated must agree with the ZIP64 ones. */
static sd_status read_end(const char *path, const uint8_t *b, size_t size, struct cd_info *cd) {
    memset(cd, 0, sizeof *cd);
    if (size < EOCD_LEN)
        return sd_fail(SD_ERR_FORMAT, "%s: %zu bytes, too short for a ZIP archive", path, size);
    uint64_t pos = size - EOCD_LEN, stop = pos > 0xffff ? pos - 0xffff : 0;
    for (;; pos--) {
        if (le32(b + pos) == SIG_EOCD && pos + EOCD_LEN + le16(b + pos + 20) == size) break;
        if (pos == stop)
            return sd_fail(SD_ERR_FORMAT, "%s: no ZIP end-of-central-directory record", path);
    }
    const uint8_t *e = b + pos;
    uint16_t disk = le16(e + 4), cd_disk = le16(e + 6), here = le16(e + 8), all = le16(e + 10);
    uint32_t cd_size = le32(e + 12), cd_off = le32(e + 16);
    int saturated = here == 0xffff || all == 0xffff || cd_size == 0xffffffffu ||
                    cd_off == 0xffffffffu || disk == 0xffff || cd_disk == 0xffff;
    uint64_t limit = pos;
    if (pos >= Z64_LOCATOR_LEN && le32(b + pos - Z64_LOCATOR_LEN) == SIG_Z64_LOCATOR) {
        SD_TRY(read_zip64_end(path, b, pos, cd, &limit));
        if ((all != 0xffff && all != cd->count) || (cd_size != 0xffffffffu && cd_size != cd->size)
            || (cd_off != 0xffffffffu && cd_off != cd->offset))
            return sd_fail(SD_ERR_FORMAT, "%s: ZIP end record and ZIP64 end record disagree", path);
    } else if (saturated) {
        return sd_fail(SD_ERR_FORMAT, "%s: ZIP end record needs ZIP64 but has no ZIP64 locator",
                       path);
    } else {
        cd->count = all;
        cd->size = cd_size;
        cd->offset = cd_off;
    }
    if ((disk != 0 && disk != 0xffff) || (cd_disk != 0 && cd_disk != 0xffff) || here != all)
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: multi-disk ZIP archives are not supported", path);
    if (cd->count > ZIP_MAX_ENTRIES)
        return sd_fail(SD_ERR_FORMAT, "%s: %llu ZIP entries, at most %u supported", path,
                       (unsigned long long)cd->count, ZIP_MAX_ENTRIES);
    if (cd->offset > limit || cd->size != limit - cd->offset)
        return sd_fail(SD_ERR_FORMAT, "%s: ZIP central directory [%llu, +%llu) does not end at "
                       "the end record (%llu)", path, (unsigned long long)cd->offset,
                       (unsigned long long)cd->size, (unsigned long long)limit);
    if (cd->count * CENTRAL_LEN > cd->size)
        return sd_fail(SD_ERR_FORMAT, "%s: %llu ZIP entries do not fit a central directory of "
                       "%llu bytes", path, (unsigned long long)cd->count,
                       (unsigned long long)cd->size);
    return SD_OK;
}

/* Walk an extra field; from a ZIP64 record take the values whose 32-bit field was all
 * ones (want[k] set), in the fixed order usize, csize, local offset.  -1 when the
 * records do not tile the field or a wanted value is missing. */
static int read_zip64_extra(const uint8_t *x, size_t len, const int want[3], uint64_t val[3]) {
    int found = !want[0] && !want[1] && !want[2];
    while (len > 0) {
        if (len < 4) return -1;
        uint16_t id = le16(x), n = le16(x + 2);
        if ((size_t)n > len - 4) return -1;
        if (id == 0x0001 && !found) {
            size_t o = 0;
            for (int k = 0; k < 3; k++) {
                if (!want[k]) continue;
                if (o + 8 > n) return -1;
                val[k] = le64(x + 4 + o);
                o += 8;
            }
            found = 1;
        }
        x += 4 + n;
        len -= 4 + (size_t)n;
    }
    return found ? 0 : -1;
}

/* The local header of e must agree with its central record; sets e->offset. */
static sd_status check_local(const char *path, const uint8_t *b, uint64_t cd_off,
                             const uint8_t *name, uint16_t nlen, uint16_t method,
                             struct zip_entry *e) {
    char nb[160];
    const char *qn = safe_name(nb, sizeof nb, name, nlen);
    if (e->header > cd_off || cd_off - e->header < LOCAL_LEN || le32(b + e->header) != SIG_LOCAL)
        return sd_fail(SD_ERR_FORMAT, "%s: ZIP entry '%s': local header at %llu is invalid",
                       path, qn, (unsigned long long)e->header);
    const uint8_t *l = b + e->header;
    uint16_t lflags = le16(l + 6), lnlen = le16(l + 26), lxlen = le16(l + 28);
    uint64_t lc = le32(l + 18), lu = le32(l + 22);
    uint64_t data = e->header + LOCAL_LEN + lnlen + lxlen;
    if (data > cd_off || e->size > cd_off - data)
        return sd_fail(SD_ERR_FORMAT, "%s: ZIP entry '%s': data [%llu, +%llu) runs into the "
                       "central directory", path, qn, (unsigned long long)data,
                       (unsigned long long)e->size);
    if (lnlen != nlen || memcmp(l + LOCAL_LEN, name, nlen) != 0 || le16(l + 8) != method)
        return sd_fail(SD_ERR_FORMAT, "%s: ZIP entry '%s': local header disagrees with the "
                       "central directory", path, qn);
    int want[3] = { lu == 0xffffffffu, lc == 0xffffffffu, 0 };
    uint64_t v[3] = { lu, lc, 0 };
    if (read_zip64_extra(l + LOCAL_LEN + lnlen, lxlen, want, v) != 0)
        return sd_fail(SD_ERR_FORMAT, "%s: ZIP entry '%s': local extra field is malformed",
                       path, qn);
    e->offset = data;
    e->end = data + e->size;
    if (!(lflags & FLAG_DESCRIPTOR) || v[0] != 0 || v[1] != 0) {
        if (v[0] != e->size || v[1] != e->size)
            return sd_fail(SD_ERR_FORMAT, "%s: ZIP entry '%s': local sizes (%llu, %llu) differ "
                           "from the central directory (%llu)", path, qn,
                           (unsigned long long)v[1], (unsigned long long)v[0],
                           (unsigned long long)e->size);
        return SD_OK;
    }
    /* Sizes deferred to the data descriptor after the data (what torch writes):
     * [sig 0x08074b50] u32 crc, then u32 or u64 csize and usize. */
    uint64_t avail = cd_off - e->end;
    const uint8_t *d = b + e->end;
    uint64_t skip = avail >= 4 && le32(d) == SIG_DESCRIPTOR ? 4 : 0;
    d += skip;
    avail -= skip;
    if (avail >= 12 && le32(d + 4) == e->size && le32(d + 8) == e->size)
        e->end += skip + 12;
    else if (avail >= 20 && le64(d + 4) == e->size && le64(d + 12) == e->size)
        e->end += skip + 20;
    else
        return sd_fail(SD_ERR_FORMAT, "%s: ZIP entry '%s': data descriptor is missing or "
                       "disagrees with the central directory (%llu bytes)", path, qn,
                       (unsigned long long)e->size);
    return SD_OK;
}

/* One central record at *cur (relative to the directory): checks, then the entry with
 * its name pointing into the mapping (made a C string later). */
static sd_status parse_central(const char *path, const uint8_t *b, const struct cd_info *cd,
                               uint64_t *cur, struct zip_entry *e, uint16_t *name_len) {
    char nb[160];
    if (cd->size - *cur < CENTRAL_LEN || le32(b + cd->offset + *cur) != SIG_CENTRAL)
        return sd_fail(SD_ERR_FORMAT, "%s: ZIP central record at %llu is invalid", path,
                       (unsigned long long)(cd->offset + *cur));
    const uint8_t *c = b + cd->offset + *cur;
    uint16_t flags = le16(c + 8), method = le16(c + 10), nlen = le16(c + 28);
    uint16_t xlen = le16(c + 30), clen = le16(c + 32), disk = le16(c + 34);
    uint64_t rec = (uint64_t)CENTRAL_LEN + nlen + xlen + clen;
    if (rec > cd->size - *cur)
        return sd_fail(SD_ERR_FORMAT, "%s: ZIP central record at %llu runs past the directory",
                       path, (unsigned long long)(cd->offset + *cur));
    const uint8_t *name = c + CENTRAL_LEN;
    const char *qn = safe_name(nb, sizeof nb, name, nlen);
    if (nlen == 0 || nlen > ZIP_MAX_NAME || memchr(name, 0, nlen))
        return sd_fail(SD_ERR_FORMAT, "%s: ZIP entry '%s': invalid name (%u bytes)", path, qn,
                       nlen);
    if (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENC))
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: ZIP entry '%s' is encrypted", path, qn);
    if (method != 0)
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: ZIP entry '%s' is compressed (method %u); only "
                       "stored entries are read, as torch.save writes them", path, qn, method);
    uint64_t cs = le32(c + 20), us = le32(c + 24), off = le32(c + 42);
    int want[3] = { us == 0xffffffffu, cs == 0xffffffffu, off == 0xffffffffu };
    uint64_t v[3] = { us, cs, off };
    if (read_zip64_extra(name + nlen, xlen, want, v) != 0 || disk == 0xffff)
        return sd_fail(SD_ERR_FORMAT, "%s: ZIP entry '%s': extra field is malformed", path, qn);
    if (disk != 0)
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: ZIP entry '%s' is on disk %u", path, qn, disk);
    if (v[0] != v[1])
        return sd_fail(SD_ERR_FORMAT, "%s: ZIP entry '%s': stored but sizes differ (%llu, %llu)",
                       path, qn, (unsigned long long)v[1], (unsigned long long)v[0]);
    e->size = v[0];
    e->header = v[2];
    e->name = (const char *)name;
    *name_len = nlen;
    *cur += rec;
    return check_local(path, b, cd->offset, name, nlen, method, e);
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const struct zip_entry *)a)->name, ((const struct zip_entry *)b)->name);
}

static int cmp_header(const void *a, const void *b) {
    const struct zip_entry *x = *(const struct zip_entry *const *)a;
    const struct zip_entry *y = *(const struct zip_entry *const *)b;
    return x->header < y->header ? -1 : x->header > y->header;
}

/* Sorted by name: equal neighbours are duplicates.  Sorted by local header: an entry
 * that starts before the furthest data end so far overlaps an earlier one. */
static sd_status check_names_and_spans(const char *path, struct zip_archive *z) {
    char a[160], b2[160];
    qsort(z->e, z->n, sizeof *z->e, cmp_name);
    for (uint32_t i = 1; i < z->n; i++)
        if (strcmp(z->e[i - 1].name, z->e[i].name) == 0)
            return sd_fail(SD_ERR_FORMAT, "%s: ZIP entry '%s' appears twice", path,
                           safe_name(a, sizeof a, (const uint8_t *)z->e[i].name,
                                     strlen(z->e[i].name)));
    if (z->n < 2) return SD_OK;
    const struct zip_entry **by = sd_malloc(z->n * sizeof *by);
    if (!by) return SD_ERR_NOMEM;
    for (uint32_t i = 0; i < z->n; i++) by[i] = &z->e[i];
    qsort(by, z->n, sizeof *by, cmp_header);
    sd_status st = SD_OK;
    const struct zip_entry *last = by[0];
    for (uint32_t i = 1; i < z->n && st == SD_OK; i++) {
        if (by[i]->header < last->end)
            st = sd_fail(SD_ERR_FORMAT, "%s: ZIP entry '%s' overlaps entry '%s'", path,
                         safe_name(a, sizeof a, (const uint8_t *)by[i]->name,
                                   strlen(by[i]->name)),
                         safe_name(b2, sizeof b2, (const uint8_t *)last->name,
                                   strlen(last->name)));
        if (by[i]->end > last->end) last = by[i];
    }
    sd_free(by);
    return st;
}

sd_status zip_open(struct zip_archive *z, const char *path, const void *base, size_t size) {
    memset(z, 0, sizeof *z);
    const uint8_t *b = base;
    struct cd_info cd;
    SD_TRY(read_end(path, b, size, &cd));
    uint16_t *lens = sd_malloc((cd.count ? cd.count : 1) * sizeof *lens);
    struct zip_entry *e = sd_calloc(cd.count ? cd.count : 1, sizeof *e);
    sd_status st = !lens || !e ? SD_ERR_NOMEM : SD_OK;
    uint64_t cur = 0;
    size_t name_bytes = 0;
    for (uint64_t i = 0; i < cd.count && st == SD_OK; i++) {
        st = parse_central(path, b, &cd, &cur, &e[i], &lens[i]);
        if (st == SD_OK) name_bytes += lens[i] + 1u;
    }
    if (st == SD_OK && cur != cd.size)
        st = sd_fail(SD_ERR_FORMAT, "%s: %llu bytes after the last ZIP central record", path,
                     (unsigned long long)(cd.size - cur));
    /* Names become C strings in the same block, after the entries. */
    size_t table = (size_t)cd.count * sizeof *e;
    struct zip_entry *block = st == SD_OK ? sd_realloc(e, table + name_bytes + 1) : NULL;
    if (st == SD_OK && !block) st = SD_ERR_NOMEM;
    if (st != SD_OK) {
        sd_free(lens);
        sd_free(e);
        return st;
    }
    char *names = (char *)block + table;
    for (uint64_t i = 0; i < cd.count; i++) {
        memcpy(names, block[i].name, lens[i]);
        names[lens[i]] = 0;
        block[i].name = names;
        names += lens[i] + 1u;
    }
    sd_free(lens);
    z->base = b;
    z->size = size;
    z->n = (uint32_t)cd.count;
    z->e = block;
    if ((st = check_names_and_spans(path, z)) != SD_OK) zip_close(z);
    return st;
}

void zip_close(struct zip_archive *z) {
    sd_free(z->e);
    memset(z, 0, sizeof *z);
}

const struct zip_entry *zip_find(const struct zip_archive *z, const char *name) {
    if (z->n == 0) return NULL;
    struct zip_entry key = { .name = name };
    return bsearch(&key, z->e, z->n, sizeof *z->e, cmp_name);
}
