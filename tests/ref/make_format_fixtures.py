#!/usr/bin/env python3
"""Write tests/data/formats/: the tiny golden model (tests/data/tiny-sdxl-a) as released
SDXL files are laid out, for tests/test_formats.c.

The single-file (SGM / ldm) layout is made with diffusers' own conversion: its
scripts/convert_diffusers_to_original_sdxl.py (diffusers has no diffusers->SGM export in
the library).  That script is not part of sdxld: fetch it from the diffusers repository
(huggingface/diffusers @ 58eb52c) to a scratch folder and pass its path:

    /tmp/venvt/bin/python tests/ref/make_format_fixtures.py /tmp/convert_diffusers_to_original_sdxl.py

Two of its outputs are not committed, to keep the repository small enough to travel to a
GPU machine (64 MiB for a device call): sgm-unet.safetensors (10.6 MB) and
sgm-vae-te.safetensors (3.3 MB) are kept as their tensors' digests (sgm.digest;
tests/test_formats.c checks sdxld's own export against them and loads that), and the
fp16-variant folder's weights and vocabularies, byte-identical to tiny-sdxl-a's files, are
kept as their sha256 (fp16/IDENTICAL.sha256); the test rebuilds that folder.  After a
rerun, print the new digests with the test, delete those files again and update the records.

Two keys need what the script predates: transformers >= 5.6 dropped "text_model." from
CLIPTextModel's state dict, which original checkpoints (and from_single_file) have under
conditioner.embedders.0.transformer., so it is put back; and the script leaves bigG's projection as "text_projection.weight" [out, in]; original
checkpoints hold "text_projection" as [in, out] (OpenCLIP's `x @ proj`), and that is
what diffusers' from_single_file reads (it transposes it back), so that one key is
rewritten here.  The whole converted checkpoint is then loaded back with diffusers'
StableDiffusionXLPipeline.from_single_file (configs from tiny-sdxl-a, nothing
downloaded) and every tensor of every component must equal the folder's: the check that
the conversion is right.

Written (fp16, as tiny-sdxl-a is stored; a few MB in all):
  sgm-unet.safetensors        the UNet alone, model.diffusion_model.* (what --unet takes)
  sgm-vae-te.safetensors      first_stage_model.* + conditioner.embedders.{0,1}.* of the
                              same checkpoint, with both token embeddings cut to their
                              first VOCAB rows (the full tables are 9 of tiny-sdxl-a's
                              23 MB and their mapping is a plain prefix);
  te-small/text_encoder{,_2}/config.json   tiny-sdxl-a's, vocab_size = VOCAB
  sharded/text_encoder{,_2}/  the cut text encoders saved by transformers with a small
                              max_shard_size (model.safetensors.index.json + shards)
  fp16/                       the whole tiny-sdxl-a pipeline saved by diffusers with
                              variant="fp16" (*.fp16.safetensors; byte-identical to the
                              plain files, so git stores no new data for it)
  formats.json                versions, and what the from_single_file check found
"""
import importlib.util
import json
import os
import shutil
import sys

import diffusers
import torch
import transformers
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "..", "data", "tiny-sdxl-a")
OUT = os.path.join(HERE, "..", "data", "formats")
VOCAB = 1000
TE_G = "conditioner.embedders.1.model."


def load_script(path):
    spec = importlib.util.spec_from_file_location("conv_sdxl", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def convert(conv, pipe):
    """The pipeline's state dicts in the single-file layout, as the diffusers script does."""
    sd = {}
    sd.update({"model.diffusion_model." + k: v for k, v in conv.convert_unet_state_dict(pipe.unet.state_dict()).items()})
    sd.update({"first_stage_model." + k: v for k, v in conv.convert_vae_state_dict(pipe.vae.state_dict()).items()})
    te1 = conv.convert_openai_text_enc_state_dict(pipe.text_encoder.state_dict())
    # transformers >= 5.6 flattened CLIPTextModel (no "text_model." in its state dict);
    # the script predates that, and original checkpoints (and from_single_file) have it
    te1 = {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in te1.items()}
    sd.update({"conditioner.embedders.0.transformer." + k: v for k, v in te1.items()})
    te2 = conv.convert_openclip_text_enc_state_dict(pipe.text_encoder_2.state_dict())
    sd.update({TE_G + k: v for k, v in te2.items()})
    sd[TE_G + "text_projection"] = sd.pop(TE_G + "text_projection.weight").T
    return {k: v.to(torch.float16).contiguous() for k, v in sd.items()}


def compare(a, b, what):
    """Every tensor of module a equals module b's; returns the count."""
    sa, sb = a.state_dict(), b.state_dict()
    sa = {k: v for k, v in sa.items() if not k.endswith("position_ids")}
    assert set(sa) <= set(sb), f"{what}: keys differ: {sorted(set(sa) ^ set(sb))[:5]}"
    for k, v in sa.items():
        assert torch.equal(v, sb[k]), f"{what}: {k} differs"
    return len(sa)


def check_single_file(path, ref):
    """Load path with diffusers' from_single_file and compare every component with ref."""
    got = StableDiffusionXLPipeline.from_single_file(path, config=MODEL, local_files_only=True,
                                                     torch_dtype=torch.float16)
    return {c: compare(getattr(ref, c), getattr(got, c), c) for c in ("unet", "vae", "text_encoder", "text_encoder_2")}


def cut_text_encoders(sd, out):
    """VOCAB-row text encoders: single-file keys, and transformers folders (sharded)."""
    small = {}
    for k, v in sd.items():
        if k.startswith("first_stage_model.") or k.startswith("conditioner."):
            small[k] = v[:VOCAB].contiguous() if k.endswith("token_embedding.weight") else v
    for sub, cls in (("text_encoder", CLIPTextModel), ("text_encoder_2", CLIPTextModelWithProjection)):
        cfg = CLIPTextConfig.from_pretrained(os.path.join(MODEL, sub))
        cfg.vocab_size = VOCAB
        m = cls.from_pretrained(os.path.join(MODEL, sub), torch_dtype=torch.float16)
        sdm = m.state_dict()
        sdm = {k: (v[:VOCAB] if k.endswith("token_embedding.weight") else v) for k, v in sdm.items()}
        cut = cls(cfg).to(torch.float16)
        cut.load_state_dict(sdm)
        os.makedirs(os.path.join(out, "te-small", sub), exist_ok=True)
        cfg.to_json_file(os.path.join(out, "te-small", sub, "config.json"))
        cut.save_pretrained(os.path.join(out, "sharded", sub), max_shard_size="40KB")
    return small


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    conv = load_script(sys.argv[1])
    torch.manual_seed(0)
    ref = StableDiffusionXLPipeline.from_pretrained(MODEL, torch_dtype=torch.float16, local_files_only=True)
    sd = convert(conv, ref)
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    whole = os.path.join("/tmp", "sdxld-tiny-sgm.safetensors")
    save_file(sd, whole)
    counts = check_single_file(whole, ref)
    print("from_single_file: every tensor equal:", counts)
    save_file({k: v for k, v in sd.items() if k.startswith("model.diffusion_model.")},
              os.path.join(OUT, "sgm-unet.safetensors"))
    save_file(cut_text_encoders(sd, OUT), os.path.join(OUT, "sgm-vae-te.safetensors"))
    ref.save_pretrained(os.path.join(OUT, "fp16"), variant="fp16")
    for sub in ("tokenizer", "tokenizer_2"):   # byte copies: git stores them once
        shutil.rmtree(os.path.join(OUT, "fp16", sub), ignore_errors=True)
        shutil.copytree(os.path.join(MODEL, sub), os.path.join(OUT, "fp16", sub))
    with open(os.path.join(OUT, "formats.json"), "w") as f:
        json.dump({"tensors": len(sd), "vocab_cut": VOCAB, "from_single_file_equal": counts,
                   "conversion": "diffusers scripts/convert_diffusers_to_original_sdxl.py @ 58eb52c",
                   "torch": torch.__version__, "diffusers": diffusers.__version__,
                   "transformers": transformers.__version__}, f, indent=1)


if __name__ == "__main__":
    main()
