#!/usr/bin/env python3
"""Write tests/data/tokenizer/fixture.json: tricky strings and the ids that transformers'
CLIPTokenizer gives for them, for tests/test_tokenizer.c.

The reference is what produced the golden fixture: transformers 5.x (golden.json's models
say 5.17.0), whose CLIPTokenizer is backed by the Rust `tokenizers` library (NFC, \\s+ -> " ",
per-char lowercase, the CLIP split regex, byte-level BPE).  ftfy must not be installed: with
it, transformers 4.x's slow tokenizer took a different cleanup path.

Each case stores its input as hex UTF-8 bytes (some are deliberately invalid UTF-8; the
reference sees bytes.decode("utf-8", "replace"), as our C code must), the framed ids
(padding and truncation to model_max_length) and the unframed BPE ids for both tokenizers.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install transformers
    /tmp/venv/bin/python tests/ref/make_tokenizer_fixture.py
"""
import importlib.util
import json
import os
import sys

import tokenizers
import transformers
from transformers import CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data")
MODEL = os.path.join(DATA, "tiny-sdxl-a")
OUT = os.path.join(DATA, "tokenizer", "fixture.json")

LONG = ("an intricate oil painting of a lighthouse on a rocky cliff at sunset, dramatic clouds, "
        "crashing waves, seagulls, warm golden light, highly detailed brushwork, trending on "
        "artstation, by a famous painter, 4k, sharp focus, volumetric lighting, cinematic "
        "composition, rule of thirds, masterpiece, best quality, extremely detailed, "
        "beautiful colours and a second sentence that pushes well past the limit")

CASES = [
    ("plain", "a photo of a cat"),
    ("strip", "   leading and trailing   "),
    ("ws_runs", "tabs\tand\nnewlines\r\nmixed \t \n  spaces\x0b\x0cend"),
    ("case", "MiXeD CaSe WORDS"),
    ("punct_runs", "punctuation!!! ... ??? ,,, ;; --> <3 :-)"),
    ("contractions", "it's I'LL we're they've I'm she'd don't"),
    ("quotes", "''quoted'' 's 'S '' x'sy"),
    ("digits", "digits 1234567890 and 3.14159 or 2024!"),
    ("bang_mid", "a!b"),
    ("bang_pair", "!!"),
    ("bang_only", "!"),
    ("bang_mix", "!hello! wow!!! a!!b!c !"),
    ("bang_run", "!!!!!!!!!!!!"),
    ("emoji", "\U0001F431\U0001F680 \U0001F600\U0001F44D\U0001F3FD \u2764\ufe0f family "
              "\U0001F468\u200d\U0001F469\u200d\U0001F467"),
    ("accent_nfc", "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c0LA CR\u00c8ME"),
    ("accent_nfd", "cafe\u0301 nai\u0308ve re\u0301sume\u0301 A\u0300LA CRE\u0300ME"),
    ("cjk", "\u4f60\u597d\u4e16\u754c \u6771\u4eac\u30bf\u30ef\u30fc \ud55c\uad6d\uc5b4"),
    ("cyrillic", "\u041f\u0440\u0438\u0432\u0435\u0442 \u041c\u0418\u0420"),
    ("greek", "\u039f\u0394\u039f\u03a3 \u0391\u03b8\u03ae\u03bd\u03b1 "
              "\u03c3\u03bf\u03c6\u03af\u03b1 \u039f\u0394\u039f\u03a3."),
    ("arabic", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 "
               "\u0661\u0662\u0663"),
    ("combining", "x\u0301\u0302 q\u0323\u0307 a\u0308\u0301 e\u0323\u0302 \u0301lone"),
    ("control", "a\x07b\x1bc\x7fd\x01e \x85f"),
    ("zero_width", "a\u200bb\u200dc\ufeffd\u00ade"),
    ("html", "&amp; &lt;tag&gt; &#39;quote&#39; AT&T"),
    ("long", LONG),
    ("long_word", "supercalifragilisticexpialidocious" * 8),
    ("empty", ""),
    ("spaces", "      "),
    ("ws_only", " \t\n\u3000 "),
    ("special_lower", "x <|endoftext|> y <|startoftext|>z"),
    ("special_upper", "x <|ENDOFTEXT|> y <|StartOfText|>z"),
    ("special_partial", "<|endoftext| <|end <|endoftext|>|> .<|endoftext|>"),
    ("casing_special", "\u0130stanbul \u01c5emal \u00df \u1e9e \u03a3 \u212a\u212b\u2126 \ufb01sh"),
    ("hangul_jamo", "\u1100\u1161\u11a8 \u1112\u1161\u11ab"),
    ("unicode_ws", "a\u00a0b\u3000c\u2003d\u0085e\u1680f\u2028g\u202fh"),
    ("info_separators", "a\x1cb\x1dc\x1ed\x1ff"),
    ("fullwidth", "\uff21\uff22\uff23 \uff11\uff12\uff13 \uff01\uff01"),
    ("number_forms", "x\u00b2 \u00bd \u2167 \u2460 \u0663\u0664 \u096a\u096b"),
    ("unicode16", "\u1c89 \ua7cb \U00010d50 \U00010d40"),
    ("prompt_weights", "masterpiece, best quality, (ultra-detailed:1.2), 8k uhd, [blue eyes], "
                       "{x|y}"),
    ("separators", "hello,world e-mail x_y z/w a.b.c #tag @user $5 100%"),
    ("replacement_char", "a\ufffdb \ufffd"),
    ("private_use", "\ue000\U000f0000 x"),
    ("nfc_new_scripts", "\U00011935\U00011930 \U00011938 a\u0c3c\u0334 \u1e0b\u0323 "
                        "\u0334\u0301x"),
    ("spec_example", "it's 2024!"),
    ("bang_combining", "a!\u0301b e\u0301! x<|endoftext|>!y"),
    ("tamil_marks", "\u0ba4\u0bae\u0bbf\u0bb4\u0bcd"),
]

# Invalid UTF-8: raw bytes; the reference gets the "replace" decoding.
BYTE_CASES = [
    ("invalid_utf8", b"abc\xff\xfe def \xc3( \xe2\x82 \xed\xa0\x80 \xf0\x9f\x98 \xc0\xaf x\x80"),
    ("overlong", b"\xe0\x80\xaf \xf4\x90\x80\x80 \xf8\x88\x80\x80\x80 ok"),
    ("truncated_tail", b"end\xe2\x82"),
]


def main():
    if importlib.util.find_spec("ftfy") is not None:
        sys.exit("ftfy is installed: uninstall it, the goldens were made without it")
    t1 = CLIPTokenizer.from_pretrained(os.path.join(MODEL, "tokenizer"))
    t2 = CLIPTokenizer.from_pretrained(os.path.join(MODEL, "tokenizer_2"))
    n = t1.model_max_length
    cases = []
    for name, raw in [(k, v.encode("utf-8")) for k, v in CASES] + BYTE_CASES:
        text = raw.decode("utf-8", "replace")
        c = {"name": name, "hex": raw.hex()}
        for key, t in (("1", t1), ("2", t2)):
            c["ids" + key] = t(text, padding="max_length", max_length=n,
                               truncation=True)["input_ids"]
            c["bpe" + key] = t(text, add_special_tokens=False)["input_ids"]
        cases.append(c)
    doc = {
        "generator": "tests/ref/make_tokenizer_fixture.py",
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "max_length": n,
        "cases": cases,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        # one case per line: small diffs when the reference changes
        f.write("{\n")
        for k in ("generator", "transformers", "tokenizers", "max_length"):
            f.write(" %s: %s,\n" % (json.dumps(k), json.dumps(doc[k])))
        f.write(' "cases": [\n')
        f.write(",\n".join("  " + json.dumps(c, ensure_ascii=True) for c in cases))
        f.write("\n ]\n}\n")
    print("wrote %s: %d cases" % (OUT, len(cases)))


if __name__ == "__main__":
    main()
