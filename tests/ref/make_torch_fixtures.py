#!/usr/bin/env python3
"""Write tests/data/torch/: PyTorch checkpoints for tests/test_torchfile.c.

Good files, each compared tensor by tensor, bit for bit, with a safetensors original:
  vae/diffusion_pytorch_model.bin  the tiny golden VAE as a pickle-era diffusers folder:
                                   AutoencoderKL.state_dict() (an OrderedDict with its
                                   _metadata, fp16 like the safetensors file) + config.json
  vae_small_f32.pt                 the VAE tensors of <= 4096 elements, as fp32
  vae_small.ckpt                   {"state_dict": the same, half of the names prefixed
                                   "module.", "global_step": 5, "epoch": 1, "lr": 0.5,
                                   "tags": [...], "pytorch-lightning_version": "2.0.0"}
  mixed.pt / mixed_ref.safetensors bf16, fp16, fp32, int64; a 0-dim scalar, an empty
                                   tensor, a view at a storage offset, two views of one
                                   storage, a size-1 dim with an odd stride; src_f32 holds
                                   rounding edge cases and as_f16 / as_bf16 are torch's
                                   conversions of it (the C test checks sd_convert_from_f32
                                   against them)
  mixed_zip64.pt                   mixed.pt re-packed with every ZIP64 field in use
                                   (central sizes and offsets, local sizes, entry count),
                                   as a > 4 GiB or > 65535-entry checkpoint has them
  mixed_pyzip.pt                   the same archive written by Python's zipfile: no data
                                   descriptors, no alignment padding
  fuzz.pt                          a small Lightning-style file for the mutation loop:
                                   {"state_dict": a module's state_dict() (with _metadata),
                                   "global_step": 7}, fp16 weights and an int64 buffer
Hostile or unsupported files, each refused with a message naming the culprit:
  evil_os_system.pt     GLOBAL os.system('touch MARKER') then REDUCE
  evil_posix_system.pt  the same made by torch.save of an object whose __reduce__ is
                        os.system (pickle writes it as posix.system)
  evil_eval.pt          builtins.eval through STACK_GLOBAL (protocol 4 opcodes)
  evil_class.pt         torch.save of a __main__ class instance beside a tensor
  evil_numpy.pt         a numpy array (numpy's _reconstruct global)
  evil_parameter.pt     an nn.Parameter (torch._utils._rebuild_parameter; state_dict()
                        never writes one: checked below)
  noncontig.pt          a transposed view
  offset_oob.pt         a storage offset past the end of its storage
  storage_size.pt       a storage whose numel does not match its data entry
  double.pt             a float64 tensor (torch.DoubleStorage)
  dup_module.pt         "module.w" and "w" (the same name once the prefix is dropped)
  deflated.pt           a torch archive with compressed (deflated) entries
  legacy.pt             torch.save(..., _use_new_zipfile_serialization=False)
The os.system and eval files are proved hostile here: torch.load(weights_only=False) of
each creates the marker file (then removed).  The C test proves sdxld creates nothing.

    python3 -m venv /tmp/venvt && /tmp/venvt/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /tmp/venvt/bin/pip install diffusers safetensors transformers
    /tmp/venvt/bin/python tests/ref/make_torch_fixtures.py

(Where that index cannot be reached, `pip install torch` from PyPI works too, at a much
larger download.  The committed files were made with torch 2.15.0 and diffusers 0.42.1;
torch.save writes a random serialization_id, so a rerun changes bytes, not tensors.)
"""
import collections
import io
import os
import shutil
import struct
import zipfile

import numpy as np
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
VAE = os.path.join(HERE, "..", "data", "tiny-sdxl-a", "vae")
OUT = os.path.join(HERE, "..", "data", "torch")
MARKER = "/tmp/sdxld-torch-pwned"


def out(name):
    return os.path.join(OUT, name)


# ---- a few pickle opcodes, to write the pickles torch would never write -------------

def op_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def op_int(i):
    return b"J" + struct.pack("<i", i)


def tensor_pickle(entries):
    """A protocol-2 pickle of {name: _rebuild_tensor_v2(...)}, like torch.save's.
    entries: (name, storage class, key, numel, offset, size, stride)."""
    p = b"\x80\x02}("
    for name, cls, key, numel, offset, size, stride in entries:
        p += op_str(name) + op_global("torch._utils", "_rebuild_tensor_v2") + b"("
        p += b"(" + op_str("storage") + op_global("torch", cls) + op_str(key) + op_str("cpu")
        p += op_int(numel) + b"tQ" + op_int(offset)
        p += b"(" + b"".join(op_int(s) for s in size) + b"t"
        p += b"(" + b"".join(op_int(s) for s in stride) + b"t"
        p += b"\x89" + op_global("collections", "OrderedDict") + b")R" + b"tR"
    return p + b"u."


def write_torch_zip(path, pkl, storages, compress=zipfile.ZIP_STORED):
    """A torch-layout archive written by Python's zipfile (entries as torch names them)."""
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        for key, data in storages.items():
            z.writestr("archive/data/" + key, data)
        z.writestr("archive/version", "3\n")


# ---- ZIP64 re-pack ----------------------------------------------------------------------

def repack_zip64(src, dst):
    """Every entry of src, stored, with all sizes and offsets in ZIP64 extra fields."""
    zin = zipfile.ZipFile(src)
    body, central = bytearray(), bytearray()
    for info in zin.infolist():
        data, name = zin.read(info), info.filename.encode()
        crc, off, n = info.CRC, len(body), len(data)
        extra = struct.pack("<HHQQ", 1, 16, n, n)
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, crc,
                            0xFFFFFFFF, 0xFFFFFFFF, len(name), len(extra)) + name + extra + data
        cextra = struct.pack("<HHQQQ", 1, 24, n, n, off)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, crc,
                               0xFFFFFFFF, 0xFFFFFFFF, len(name), len(cextra), 0, 0, 0, 0,
                               0xFFFFFFFF) + name + cextra
    count, cd_off, cd_size = len(zin.infolist()), len(body), len(central)
    z64 = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, cd_size, cd_off)
    loc = struct.pack("<IIQI", 0x07064B50, 0, cd_off + cd_size, 1)
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(dst, "wb") as f:
        f.write(bytes(body + central) + z64 + loc + eocd)


def repack_pyzip(src, dst):
    zin = zipfile.ZipFile(src)
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED) as z:
        for info in zin.infolist():
            z.writestr(info.filename, zin.read(info))


# ---- good files -------------------------------------------------------------------------

def make_vae():
    os.makedirs(out("vae"), exist_ok=True)
    shutil.copy(os.path.join(VAE, "config.json"), out("vae/config.json"))
    vae = AutoencoderKL.from_pretrained(VAE, torch_dtype=torch.float16)
    sd = vae.state_dict()
    ref = load_file(os.path.join(VAE, "diffusion_pytorch_model.safetensors"))
    assert set(sd) == set(ref) and all(torch.equal(sd[k], ref[k]) for k in ref)
    assert hasattr(sd, "_metadata")   # the OrderedDict + BUILD path of real files
    torch.save(sd, out("vae/diffusion_pytorch_model.bin"))
    buf = io.BytesIO()
    torch.save(sd, buf)
    assert b"_rebuild_parameter" not in buf.getvalue()   # state_dict() holds no Parameters

    small = {k: v.float() for k, v in ref.items() if v.numel() <= 4096}
    torch.save(small, out("vae_small_f32.pt"))
    inner = collections.OrderedDict(
        ("module." + k if i % 2 else k, v) for i, (k, v) in enumerate(small.items()))
    torch.save({"state_dict": inner, "global_step": 5, "epoch": 1, "lr": 0.5,
                "tags": ["a", "b"], "pytorch-lightning_version": "2.0.0"}, out("vae_small.ckpt"))


def rounding_cases():
    torch.manual_seed(0)
    f16_min_sub, f16_max = 2.0 ** -24, 65504.0
    edge = [0.0, -0.0, 1.0, -1.0, f16_max, 65519.0, 65520.0, -65520.0, 1e9, f16_min_sub,
            f16_min_sub / 2, f16_min_sub * 0.50001, f16_min_sub * 1.5, 2.0 ** -14,
            2.0 ** -14 * (1 - 2.0 ** -11), 1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 1 + 2.0 ** -8,
            1 + 3 * 2.0 ** -8, 3.0e38, float("inf"), float("-inf"), float("nan"), 1e-40]
    return torch.cat([torch.tensor(edge, dtype=torch.float32),
                      torch.randn(1000) * torch.exp(torch.randn(1000) * 8)])


def same_bits(a, b):
    def raw(x):
        return x.contiguous().reshape(-1).view(torch.uint8)
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(raw(a), raw(b))


def make_fuzz():
    torch.manual_seed(1)
    m = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3)).half()
    torch.save({"state_dict": m.state_dict(), "global_step": 7}, out("fuzz.pt"))


def make_mixed():
    src = rounding_cases()
    big = torch.arange(40, dtype=torch.float32).reshape(10, 4)
    shared = torch.randn(6, 5).bfloat16()
    col = torch.randn(1, 7)
    t = {
        "w_bf16": torch.randn(3, 5).bfloat16(),
        "w_f16": torch.randn(2, 3, 4).half(),
        "ids_i64": torch.tensor([[0, -1, 2 ** 40], [7, 8, -(2 ** 62)]], dtype=torch.int64),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "rows_2_to_5": big[2:5],                 # a view at storage offset 8
        "shared_a": shared[1:3],                 # two views of one bf16 storage
        "shared_b": shared[4],
        "col_t": col.t(),                        # (7, 1) with stride (1, 7): contiguous
        "src_f32": src,
        "as_f16": src.half(),
        "as_bf16": src.bfloat16(),
    }
    assert t["rows_2_to_5"].storage_offset() == 8 and t["col_t"].stride() == (1, 7)
    torch.save(t, out("mixed.pt"))
    save_file({k: v.contiguous().clone() for k, v in t.items()}, out("mixed_ref.safetensors"))
    repack_zip64(out("mixed.pt"), out("mixed_zip64.pt"))
    repack_pyzip(out("mixed.pt"), out("mixed_pyzip.pt"))
    for name in ("mixed_zip64.pt", "mixed_pyzip.pt"):   # Python still reads both back
        back = torch.load(out(name), weights_only=True)
        assert all(same_bits(back[k], t[k]) for k in t), name


# ---- hostile and unsupported files ---------------------------------------------------

class Pwn:
    def __reduce__(self):
        return (os.system, ("touch " + MARKER,))


class Foo:
    def __init__(self):
        self.x = 1


def proves_hostile(path):
    """Loading path the Python way runs its payload: the marker appears."""
    if os.path.exists(MARKER):
        os.unlink(MARKER)
    try:
        torch.load(path, weights_only=False)
    except Exception:
        pass
    ran = os.path.exists(MARKER)
    if ran:
        os.unlink(MARKER)
    return ran


def make_hostile():
    w = torch.arange(4, dtype=torch.float32)
    wbytes = w.numpy().tobytes()
    good = ("w", "FloatStorage", "0", 4, 0, [4], [1])
    # os.system by hand: GLOBAL 'os system', then the call sits in the dict beside w.
    pkl = tensor_pickle([good])[:-2]
    pkl += op_str("x") + op_global("os", "system") + b"(" + op_str("touch " + MARKER) + b"tR" + b"u."
    write_torch_zip(out("evil_os_system.pt"), pkl, {"0": wbytes})
    # builtins.eval through STACK_GLOBAL, protocol 4 style (SHORT_BINUNICODE, MEMOIZE).
    code = "__import__('os').system('touch %s')" % MARKER
    pkl = (b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94" + op_str(code)
           + b"\x85R\x94.")
    write_torch_zip(out("evil_eval.pt"), pkl, {})
    for name in ("evil_os_system.pt", "evil_eval.pt"):
        assert proves_hostile(out(name)), name
    torch.save({"w": w, "x": Pwn()}, out("evil_posix_system.pt"))
    assert proves_hostile(out("evil_posix_system.pt"))
    torch.save({"w": w, "obj": Foo()}, out("evil_class.pt"))
    torch.save({"w": w, "a": np.zeros(2)}, out("evil_numpy.pt"))
    torch.save({"p": torch.nn.Parameter(w.clone())}, out("evil_parameter.pt"))

    torch.save({"ok": w, "t": torch.arange(12.0).reshape(3, 4).t()}, out("noncontig.pt"))
    write_torch_zip(out("offset_oob.pt"),
                    tensor_pickle([good, ("late", "FloatStorage", "0", 4, 2, [3], [1])]),
                    {"0": wbytes})
    write_torch_zip(out("storage_size.pt"),
                    tensor_pickle([("short", "FloatStorage", "0", 5, 0, [4], [1])]),
                    {"0": wbytes})
    torch.save({"d": torch.zeros(2, dtype=torch.float64)}, out("double.pt"))
    torch.save({"module.w": w, "w": w.clone()}, out("dup_module.pt"))
    write_torch_zip(out("deflated.pt"), tensor_pickle([good]), {"0": wbytes},
                    compress=zipfile.ZIP_DEFLATED)
    torch.save({"w": w}, out("legacy.pt"), _use_new_zipfile_serialization=False)


def main():
    os.makedirs(OUT, exist_ok=True)
    make_vae()
    make_mixed()
    make_fuzz()
    make_hostile()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print("wrote %s (%.1f MB)" % (OUT, total / 1e6))


if __name__ == "__main__":
    main()
