#!/usr/bin/env python3
"""tests/fuzz/make_seeds.py — write the seed corpora of the harnesses whose inputs are built
(tests/fuzz/corpus/{api_body,args,lora,http}), from the examples below and tests/data.  Run from
anywhere; rewrites those seed files (regression inputs, named regress-*, are kept).

api_body: the route digit ('0'..'5', fuzz_api_body.c) and a body; args: one argument a line;
lora: '0' + an adapter file as is, or '1' + "KEY D0 D1 ..." lines (fuzz_lora.c); http: whole
requests with fuzz_http.c's tokens (the image routes' with a PNG of corpus/image)."""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")

BODIES = {
    "0": [  # POST /v1/generate
        {"prompt": "a red circle", "n": 2, "width": 64, "height": 128, "seed": 42, "steps": 4,
         "response_format": "b64_json", "async": True},
        {"prompt": "x", "timesteps": [999, 749, 499, 249], "response_format": "png"},
        {"prompt": "x", "steps": 2, "timesteps": [999, 499]},
        {"prompt": "x", "seed": 9223372036854775807, "n": 1},
        '{"prompt": "x", "seed": 99999999999999999999}',
        {"prompt": "", "width": 2048, "height": 16},
    ],
    "1": [  # POST /v1/images/generations
        {"prompt": "a cat", "n": 1, "size": "64x64", "response_format": "url", "output_format": "webp",
         "output_compression": 80, "quality": "hd", "style": "vivid", "user": "u", "model": "sdxld"},
        {"prompt": "x", "size": "auto", "output_format": "jpeg"},
        {"prompt": "x", "size": "64x 64"},
    ],
    "2": [  # POST /sdapi/v1/txt2img
        {"prompt": "a", "negative_prompt": "b", "seed": -1, "width": 64, "height": 64, "steps": 20,
         "batch_size": 2, "n_iter": 2, "cfg_scale": 7, "sampler_name": "Euler a", "send_images": True,
         "override_settings": {"sd_model_checkpoint": "shapes-small:gen.safetensors"},
         "enable_hr": False, "alwayson_scripts": {}, "styles": [], "comments": {"a": 1}},
        {"prompt": "x", "seed": 9223372036854775806, "batch_size": 1, "n_iter": 2, "steps": None},
        {"prompt": "x", "restore_faces": True},
    ],
    "3": [  # POST /sdapi/v1/options
        {"sd_model_checkpoint": "gen.safetensors", "CLIP_stop_at_last_layers": 2},
        {"sd_model_checkpoint": "shapes-small"},
        {"sd_model_checkpoint": "shapes-small:gen.safetensors"},
        {"sd_model_checkpoint": "outside/hostname"},
        {"sd_model_checkpoint": 3},
    ],
    "4": [  # POST /v1/models/load
        {"generator": "gen.safetensors", "lora": "models/lora.safetensors", "lora_scale": 0.5},
        {"lora": "models/lora.safetensors"},
        {"generator": "../etc/passwd"},
        {"generator": "/etc/passwd"},
        {"generator": "outside/hostname"},
        {"generator": "models"},
        {"generator": "./gen.safetensors", "lora_scale": 2},
    ],
    "5": [  # POST /v1/train
        {"out": "runs/a", "real_data": "shapes", "steps": 10, "batch": 1, "resolution": 64},
        {"out": "runs/b/c", "real_data": "data", "prompts": "data/captions.txt", "teacher": "teacher",
         "generator_init": "gen.safetensors", "lr_generator": 1e-5, "timesteps": [999, 749, 499, 249]},
        {"out": "runs/d", "lora_rank": 4, "lora_alpha": 8, "gan": True, "cache_size": 8,
         "checkpoint_every": 5, "recompute": True},
        {"resume": True, "out": "runs"},
        {"resume": True, "out": "runs/old", "steps": 200, "checkpoint_every": 50},
        {"resume": True, "out": "runs/old", "batch": 2},
        {"out": "outside/x"},
    ],
}

ARGS = [
    ["--listen", "127.0.0.1:0", "--max-batch", "4", "--default-steps=2", "--warmup", "false"],
    ["--config", "conf/sdxld.conf", "--threads", "2"],
    ["--config=/nonexistent/sdxld.conf"],
    ["--check-config", "--max_width", "2048", "--default_width", "1024", "--trust-proxy"],
    ["--cors-origins", "https://a.example, https://b.example", "--replica", "r1"],
    ["--help"],
    ["--print-config"],
    ["--single-request", "/dev/null", "--log-level", "debug"],
    ["--model", "models/shapes-small", "--unet", "gen.safetensors", "--lora", "x.safetensors",
     "--lora-scale", "0.5", "--backend", "cpu", "--weights-dtype", "bf16", "--vae-tile", "32"],
    ["--retained-jobs-max", "100", "--retained-jobs-mb", "64", "--result-max-mb", "1"],
    ["positional"],
    ["--queue-max"],
]


ROUTE_PATHS = {"0": "/v1/generate", "1": "/v1/images/generations", "2": "/sdapi/v1/txt2img",
               "3": "/sdapi/v1/options", "4": "/v1/models/load", "5": "/v1/train"}
API = "Authorization: Bearer fuzz-api-token-0123\r\n"
ADMIN = "Authorization: Bearer fuzz-admin-token-0123\r\n"
GETS = ["/healthz", "/readyz", "/metrics", "/", "/v1/models", "/v1/config", "/v1/jobs?status=queued&limit=5",
        "/v1/jobs/gen_abc", "/v1/jobs/r1-gen_abc/images/0", "/v1/train/train_x/samples/1",
        "/sdapi/v1/sd-models", "/sdapi/v1/options", "/sdapi/v1/progress?skip_current_image=false",
        "/v1/nope", "/v1/jobs/%2e%2e/x"]
RAW = [
    "GET /v1/jobs/x/events HTTP/1.1\r\nHost: a\r\n" + API + "Last-Event-ID: 9223372036854775807\r\n\r\n",
    "OPTIONS /v1/generate HTTP/1.1\r\nHost: a\r\nOrigin: https://a.example\r\n"
    "Access-Control-Request-Method: POST\r\n\r\n",
    "DELETE /v1/train/train_x HTTP/1.1\r\nHost: a\r\n" + ADMIN + "\r\n",
    "POST /v1/jobs/gen_x/cancel HTTP/1.1\r\nHost: a\r\n" + API + "Content-Length: 0\r\n\r\n",
    "POST /sdapi/v1/interrupt HTTP/1.1\r\nHost: a\r\n" + API + "\r\n",
    "POST /v1/generate HTTP/1.1\r\nHost: a\r\n" + API + "Content-Type: application/json\r\n"
    "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"pro\r\n10\r\nmpt\": \"chunked\"}\r\n0\r\n\r\n",
    "POST /v1/generate HTTP/1.1\r\nHost: a\r\n" + API + "Content-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}",
    "POST /v1/generate HTTP/1.1\r\nHost: a\r\n" + API + "Content-Type: application/json\r\n"
    "Content-Length: 99999999\r\n\r\n{}",
    "POST /v1/generate HTTP/1.1\r\nHost: a\r\n" + API + "Content-Type: application/json\r\n"
    "Expect: 100-continue\r\nContent-Length: 15\r\n\r\n{\"prompt\": \"x\"}",
    "GET /healthz HTTP/1.0\r\n\r\n",
    "GET /v1/models HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer wrong\r\n\r\n",
]


def http_seeds():
    out = []
    for route, bodies in BODIES.items():
        auth = ADMIN if route in "45" else API
        for body in bodies[:2]:
            text = body if isinstance(body, str) else json.dumps(body)
            out.append("POST %s HTTP/1.1\r\nHost: localhost\r\n%sContent-Type: application/json\r\n"
                       "Content-Length: %d\r\n\r\n%s" % (ROUTE_PATHS[route], auth, len(text.encode()), text))
    out += ["GET %s HTTP/1.1\r\nHost: localhost\r\n%s\r\n" % (p, API) for p in GETS]
    return out + RAW


def image_seeds():
    """Image routes: /v1/images/edits as multipart (an image, a mask, fields) and an img2img
    /v1/generate, with a small PNG of the image harness's seeds."""
    import base64
    png = open(os.path.join(CORPUS, "image", "rgb.png"), "rb").read()
    rgba = open(os.path.join(CORPUS, "image", "rgba.png"), "rb").read()
    b = b"fuzzboundary7"
    parts = [(b'name="prompt"', b"a red circle"), (b'name="n"', b"2"), (b'name="size"', b"64x64"),
             (b'name="image"; filename="a.png"\r\nContent-Type: image/png', png),
             (b'name="mask"; filename="m.png"\r\nContent-Type: image/png', rgba)]
    body = b"".join(b"--" + b + b"\r\nContent-Disposition: form-data; " + h + b"\r\n\r\n" + v + b"\r\n"
                    for h, v in parts) + b"--" + b + b"--\r\n"
    head = ("POST /v1/images/edits HTTP/1.1\r\nHost: a\r\n" + API + "Content-Type: multipart/form-data; "
            "boundary=fuzzboundary7\r\nContent-Length: %d\r\n\r\n" % len(body)).encode()
    js = json.dumps({"prompt": "x", "init_image": base64.b64encode(png).decode(), "strength": 0.5,
                     "mask": "data:image/png;base64," + base64.b64encode(rgba).decode()}).encode()
    gen = ("POST /v1/generate HTTP/1.1\r\nHost: a\r\n" + API + "Content-Type: application/json\r\n"
           "Content-Length: %d\r\n\r\n" % len(js)).encode() + js
    return [head + body, gen]


def write(dirname, name, data):
    d = os.path.join(CORPUS, dirname)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def clear(dirname):
    d = os.path.join(CORPUS, dirname)
    for n in os.listdir(d) if os.path.isdir(d) else []:
        if n.startswith("seed-"):
            os.remove(os.path.join(d, n))


def safetensors_header(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    return b, n, json.loads(b[8:8 + n])


def subset(path, keep):
    """A safetensors file with the tensors of path whose names keep() accepts."""
    b, n, h = safetensors_header(path)
    out, data = {}, b""
    for k, v in h.items():
        if k == "__metadata__" or not keep(k):
            continue
        s, e = v["data_offsets"]
        out[k] = dict(v, data_offsets=[len(data), len(data) + e - s])
        data += b[8 + n + s:8 + n + e]
    hs = json.dumps(out, separators=(",", ":")).encode()
    return struct.pack("<Q", len(hs)) + hs + data, out


def main():
    for d in ("api_body", "args", "lora", "http"):
        clear(d)
    for route, bodies in BODIES.items():
        for i, body in enumerate(bodies):
            text = body if isinstance(body, str) else json.dumps(body)
            write("api_body", "seed-%s-%d" % (route, i), (route + text).encode())
    for i, req in enumerate(http_seeds()):
        write("http", "seed-%02d" % i, req.encode())
    for i, req in enumerate(image_seeds()):
        write("http", "seed-image-%d" % i, req)
    for i, argv in enumerate(ARGS):
        write("args", "seed-%d" % i, "\n".join(argv).encode())
    kohya = os.path.join(REPO, "tests/data/tiny-sdxl-a/lora/lora_kohya.safetensors")
    stems = ["lora_unet_down_blocks_0_resnets_0_conv1", "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q",
             "lora_unet_up_blocks_0_upsamplers_0_conv"]
    for i, stem in enumerate(stems):
        f, h = subset(kohya, lambda k, s=stem: k.startswith(s + "."))
        if h:
            write("lora", "seed-file-%d" % i, b"0" + f)
            lines = ["%s %s" % (k, " ".join(str(x) for x in v["shape"])) for k, v in h.items()]
            write("lora", "seed-keys-%d" % i, ("1" + "\n".join(lines)).encode())
    # peft's naming ("[unet.]<module path>.lora_A/B.weight", no alpha)
    write("lora", "seed-peft-conv", b"1unet.down_blocks.0.resnets.0.conv1.lora_A.weight 2 32 3 3\n"
          b"unet.down_blocks.0.resnets.0.conv1.lora_B.weight 32 2 1 1")
    write("lora", "seed-peft-attn", b"1mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight 2 96\n"
          b"mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight 96 2\n"
          b"mid_block.attentions.0.transformer_blocks.0.attn1.to_q.alpha")
    f, h = subset(kohya, lambda k: k.startswith("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn"))
    write("lora", "seed-file-attn", b"0" + f)
    write("lora", "seed-text-encoder", b"1lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight 2 32")
    return 0


if __name__ == "__main__":
    sys.exit(main())
