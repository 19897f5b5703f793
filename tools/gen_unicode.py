#!/usr/bin/env python3
"""Generate src/text/unicode_data.c: the Unicode tables the CLIP tokenizer needs.

The tokenizer must make the same character decisions as transformers' CLIPTokenizer, which
(transformers >= 5, the version that made the golden fixture) runs the Rust `tokenizers`
library: NFC (unicode-normalization crate), per-character lowercase (Rust char::to_lowercase)
and a split regex over \\p{L}, \\p{N} and \\s (Oniguruma).  Those are all at Unicode 16.0, so:

  - categories, decompositions, combining classes come from `unicodedata2` 16.0.0 when it is
    installed (the stdlib unicodedata of Python 3.11 is Unicode 14 and misses ~9k letters);
  - lowercase mappings come from the `tokenizers` Lowercase normalizer when it is installed
    (it *is* the reference), else from str.lower() of this Python;
  - \\s is Unicode's White_Space property (PropList.txt; not in unicodedata, listed below);
  - the NFC tables are filtered through `tokenizers` when it is installed: its normalizer
    (the unicode-normalization-alignments crate) predates Unicode 11, so it neither
    decomposes, reorders nor composes characters added since; we must not either.

    /tmp/venv/bin/pip install unicodedata2==16.0.0 tokenizers
    /tmp/venv/bin/python tools/gen_unicode.py            # writes src/text/unicode_data.c
    /tmp/venv/bin/python tools/gen_unicode.py --check    # also probes tokenizers for every
                                                         # code point and reports differences
"""
import os
import sys

try:
    import unicodedata2 as ud
except ImportError:
    import unicodedata as ud
    print("warning: unicodedata2 not installed; using stdlib unicodedata %s"
          % ud.unidata_version, file=sys.stderr)

try:
    from tokenizers import normalizers as _tk_norm
    _LOWER = _tk_norm.Lowercase()
    _NFC, _NFD = _tk_norm.NFC(), _tk_norm.NFD()
    LOWER_SRC = "the tokenizers Lowercase normalizer"
    NORM_SRC = "as far as tokenizers' older NFC knows them"
except ImportError:
    _LOWER = _NFC = _NFD = None
    LOWER_SRC = "Python %d.%d str.lower()" % sys.version_info[:2]
    NORM_SRC = "unfiltered (tokenizers not installed)"
    print("warning: tokenizers not installed; lowercase from str.lower(), NFC tables "
          "unfiltered", file=sys.stderr)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "text",
                   "unicode_data.c")
MAXCP = 0x110000
# PropList.txt White_Space (stable since Unicode 6.3).
WHITE_SPACE = [(0x09, 0x0D), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680),
               (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F),
               (0x3000, 0x3000)]
SBASE, SCOUNT = 0xAC00, 11172
CLS_OTHER, CLS_LETTER, CLS_NUMBER, CLS_SPACE = 0, 1, 2, 3


def is_surrogate(cp):
    return 0xD800 <= cp < 0xE000


def char_class(cp):
    if any(a <= cp <= b for a, b in WHITE_SPACE):
        return CLS_SPACE
    cat = ud.category(chr(cp))
    if cat[0] == "L":
        return CLS_LETTER
    if cat[0] == "N":
        return CLS_NUMBER
    return CLS_OTHER


def lower(cp):
    c = chr(cp)
    s = _LOWER.normalize_str(c) if _LOWER else c.lower()
    return [ord(x) for x in s]


def ranges(values):
    """values: list indexed by cp -> list of (lo, hi, value) for runs with value != 0."""
    out, start = [], None
    for cp in range(MAXCP + 1):
        v = values[cp] if cp < MAXCP else 0
        if start is not None and v != values[start]:
            out.append((start, cp - 1, values[start]))
            start = None
        if start is None and v:
            start = cp
    return out


def build():
    cls = [0] * MAXCP
    ccc = [0] * MAXCP
    decomp = {}
    lower1, lowerx = {}, {}
    for cp in range(MAXCP):
        if is_surrogate(cp):
            continue
        c = chr(cp)
        cls[cp] = char_class(cp)
        ccc[cp] = ud.combining(c)
        d = ud.decomposition(c)
        if d and not d.startswith("<"):
            parts = [int(x, 16) for x in d.split()]
            assert 1 <= len(parts) <= 2, hex(cp)
            decomp[cp] = parts
        lo = lower(cp)
        if lo != [cp]:
            if len(lo) == 1:
                lower1[cp] = lo[0]
            else:
                lowerx[cp] = lo
    # Primary composites: two-part canonical decompositions that NFC recomposes (this
    # leaves out the composition exclusions and singletons).
    comp = []
    for cp, parts in decomp.items():
        if len(parts) == 2 and ud.normalize("NFC", chr(parts[0]) + chr(parts[1])) == chr(cp):
            comp.append((parts[0], parts[1], cp))
    comp.sort()
    if _NFC:
        decomp = {cp: p for cp, p in decomp.items() if _NFD.normalize_str(chr(cp)) != chr(cp)}
        comp = [e for e in comp if _NFC.normalize_str(chr(e[0]) + chr(e[1])) == chr(e[2])]
        for cp in range(MAXCP):
            if ccc[cp] and not ref_knows_ccc(cp, ccc[cp]):
                ccc[cp] = 0
    return cls, ccc, decomp, lower1, lowerx, comp


def ref_knows_ccc(cp, k):
    """Does the reference's canonical reordering know cp's combining class?"""
    c = chr(cp)
    base = ud.normalize("NFC", c)
    if k > 1:   # U+0334 has class 1: reordering moves it before c
        return _NFC.normalize_str(c + "\u0334") == "\u0334" + base
    return _NFC.normalize_str("\u0301" + c) == base + "\u0301"   # U+0301 has class 230


def lower_ranges(lower1):
    """Runs (lo, hi, step, delta): every cp = lo + k*step <= hi maps to cp + delta."""
    out = []
    cps = sorted(lower1)
    i = 0
    while i < len(cps):
        lo = cps[i]
        delta = lower1[lo] - lo
        step = 0
        j = i + 1
        if j < len(cps) and lower1[cps[j]] - cps[j] == delta and cps[j] - lo in (1, 2):
            step = cps[j] - lo
            while (j < len(cps) and cps[j] - cps[j - 1] == step
                   and lower1[cps[j]] - cps[j] == delta):
                j += 1
        hi = cps[j - 1]
        out.append((lo, hi, step or 1, delta))
        i = j
    return out


def fmt_rows(items, per_line, fmt):
    lines = []
    for i in range(0, len(items), per_line):
        lines.append("    " + " ".join(fmt % it for it in items[i:i + per_line]))
    return "\n".join(lines)


TEMPLATE = r'''/* unicode_data.c — Unicode tables for the CLIP tokenizer.
 * GENERATED by tools/gen_unicode.py: do not edit; rerun the generator.
 *
 * Unicode %(uver)s categories; lowercase from %(lsrc)s;
 * decompositions, combining classes and compositions %(nsrc)s.
 * These match the Rust `tokenizers` library behind transformers' CLIPTokenizer: the split
 * regex's \p{L} / \p{N} / \s, NFC, and per-character lowercase.  All tables are sorted
 * ranges or keys, searched by bisection. */
#include "unicode_data.h"

#include <stddef.h>

struct uc_range { uint32_t lo, hi; uint8_t v; };
struct uc_lower { uint32_t lo, hi; uint8_t step; int32_t delta; };
struct uc_decomp { uint32_t cp, a, b; };   /* b == 0: singleton */
struct uc_comp { uint32_t a, b, c; };

/* \p{L} = 1, \p{N} = 2, White_Space = 3; everything else 0. */
static const struct uc_range class_tab[%(ncls)d] = {
%(cls)s
};

static const struct uc_range ccc_tab[%(nccc)d] = {
%(ccc)s
};

/* Lowercase with one code point: lo, lo+step, ... hi map to cp + delta. */
static const struct uc_lower lower_tab[%(nlow)d] = {
%(low)s
};

/* Lowercase with several code points. */
static const uint32_t lower_multi[%(nlx)d][4] = {   /* cp, then up to 3 */
%(lx)s
};

/* Canonical decompositions (one level; Hangul syllables are algorithmic). */
static const struct uc_decomp decomp_tab[%(ndec)d] = {
%(dec)s
};

/* Primary composites, sorted by (a, b). */
static const struct uc_comp comp_tab[%(ncomp)d] = {
%(comp)s
};

static const struct uc_range *range_find(const struct uc_range *t, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < t[mid].lo) hi = mid;
        else if (cp > t[mid].hi) lo = mid + 1;
        else return &t[mid];
    }
    return NULL;
}

int uc_class(uint32_t cp) {
    const struct uc_range *r = range_find(class_tab, sizeof class_tab / sizeof *class_tab, cp);
    return r ? r->v : UC_OTHER;
}

int uc_ccc(uint32_t cp) {
    if (cp < 0x300) return 0;
    const struct uc_range *r = range_find(ccc_tab, sizeof ccc_tab / sizeof *ccc_tab, cp);
    return r ? r->v : 0;
}

int uc_lower(uint32_t cp, uint32_t out[3]) {
    size_t n = sizeof lower_multi / sizeof *lower_multi;
    for (size_t i = 0; i < n; i++) {
        if (lower_multi[i][0] != cp) continue;
        int k = 0;
        while (k < 3 && lower_multi[i][k + 1]) { out[k] = lower_multi[i][k + 1]; k++; }
        return k;
    }
    size_t lo = 0, hi = sizeof lower_tab / sizeof *lower_tab;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < lower_tab[mid].lo) hi = mid;
        else if (cp > lower_tab[mid].hi) lo = mid + 1;
        else {
            if ((cp - lower_tab[mid].lo) %% lower_tab[mid].step == 0) {
                out[0] = (uint32_t)((int32_t)cp + lower_tab[mid].delta);
                return 1;
            }
            break;
        }
    }
    out[0] = cp;
    return 1;
}

int uc_decompose(uint32_t cp, uint32_t out[2]) {
    if (cp >= UC_SBASE && cp < UC_SBASE + UC_SCOUNT) {   /* Hangul: LV or LVT */
        uint32_t s = cp - UC_SBASE, t = s %% UC_TCOUNT;
        if (t) { out[0] = cp - t; out[1] = UC_TBASE + t; }
        else {
            out[0] = UC_LBASE + s / UC_NCOUNT;
            out[1] = UC_VBASE + (s %% UC_NCOUNT) / UC_TCOUNT;
        }
        return 2;
    }
    size_t lo = 0, hi = sizeof decomp_tab / sizeof *decomp_tab;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < decomp_tab[mid].cp) hi = mid;
        else if (cp > decomp_tab[mid].cp) lo = mid + 1;
        else {
            out[0] = decomp_tab[mid].a;
            out[1] = decomp_tab[mid].b;
            return out[1] ? 2 : 1;
        }
    }
    return 0;
}

uint32_t uc_compose(uint32_t a, uint32_t b) {
    if (a >= UC_LBASE && a < UC_LBASE + UC_LCOUNT && b >= UC_VBASE && b < UC_VBASE + UC_VCOUNT)
        return UC_SBASE + ((a - UC_LBASE) * UC_VCOUNT + (b - UC_VBASE)) * UC_TCOUNT;
    if (a >= UC_SBASE && a < UC_SBASE + UC_SCOUNT && (a - UC_SBASE) %% UC_TCOUNT == 0 &&
        b > UC_TBASE && b < UC_TBASE + UC_TCOUNT)
        return a + (b - UC_TBASE);
    size_t lo = 0, hi = sizeof comp_tab / sizeof *comp_tab;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct uc_comp *e = &comp_tab[mid];
        if (a < e->a || (a == e->a && b < e->b)) hi = mid;
        else if (a > e->a || b > e->b) lo = mid + 1;
        else return e->c;
    }
    return 0;
}
'''


def generate():
    cls, ccc, decomp, lower1, lowerx, comp = build()
    cls_r = ranges(cls)
    ccc_r = ranges(ccc)
    low_r = lower_ranges(lower1)
    lx = sorted(lowerx.items())
    assert all(len(v) <= 3 for _, v in lx)
    dec = sorted(decomp.items())
    text = TEMPLATE % {
        "uver": ud.unidata_version, "lsrc": LOWER_SRC, "nsrc": NORM_SRC,
        "ncls": len(cls_r), "cls": fmt_rows(cls_r, 4, "{0x%05X, 0x%05X, %d},"),
        "nccc": len(ccc_r), "ccc": fmt_rows(ccc_r, 3, "{0x%05X, 0x%05X, %d},"),
        "nlow": len(low_r), "low": fmt_rows(low_r, 3, "{0x%05X, 0x%05X, %d, %d},"),
        "nlx": len(lx), "lx": fmt_rows([tuple([k] + v + [0] * (3 - len(v))) for k, v in lx],
                                       2, "{0x%05X, 0x%05X, 0x%05X, 0x%05X},"),
        "ndec": len(dec), "dec": fmt_rows([(k, v[0], v[1] if len(v) > 1 else 0)
                                           for k, v in dec], 3, "{0x%05X, 0x%05X, 0x%05X},"),
        "ncomp": len(comp), "comp": fmt_rows(comp, 3, "{0x%05X, 0x%05X, 0x%05X},"),
    }
    with open(OUT, "w") as f:
        f.write(text)
    print("wrote %s: %d class ranges, %d ccc ranges, %d lower runs (+%d multi), "
          "%d decompositions, %d compositions" % (OUT, len(cls_r), len(ccc_r), len(low_r),
                                                  len(lx), len(dec), len(comp)))
    return cls, lower1, lowerx, comp


def check(cls, lower1, lowerx, comp):
    """Probe the reference (tokenizers) for every code point; report any difference."""
    from tokenizers import Regex, pre_tokenizers, normalizers
    split = pre_tokenizers.Split(Regex(r"[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"),
                                 behavior="removed", invert=True)
    nfc = normalizers.NFC()
    bad = 0
    for cp in range(MAXCP):
        if is_surrogate(cp):
            continue
        c = chr(cp)
        p = [x[0] for x in split.pre_tokenize_str("a" + c + c + "1")]
        ref = {2: CLS_SPACE, 3: CLS_OTHER if p[1] == c + c else CLS_LETTER,
               4: CLS_NUMBER}.get(len(p))
        if len(p) == 2 and p[0] == "a" + c + c:
            ref = CLS_LETTER
        if ref != cls[cp]:
            bad += 1
            print("class U+%04X: tokenizers %s, table %d" % (cp, p, cls[cp]))
    for a, b, c in comp:
        if nfc.normalize_str(chr(a) + chr(b)) != chr(c):
            bad += 1
            print("compose U+%04X U+%04X: table U+%04X" % (a, b, c))
    print("check: %d differences" % bad)
    return bad


if __name__ == "__main__":
    tables = generate()
    if "--check" in sys.argv[1:]:
        sys.exit(1 if check(*tables) else 0)
