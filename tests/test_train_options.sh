#!/usr/bin/env bash
# test_train_options.sh — the training option table through the command line: `sdxld train
# dmd2 --resume` restores the run's stored options (state.json) and refuses a changed
# option that may not change at resume, naming the flag; unknown flags name themselves.
# TAP output.
set -u
BIN=${SDXLD_BIN:?} DATA=${SDXLD_TEST_DATA:?}
T=$(mktemp -d) && trap 'rm -rf "$T"' EXIT
n=0 fails=0
ok() { n=$((n+1)); if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails+1)); fi; }
cfg() { python3 -c 'import json,sys; d=sys.argv[1]; c=open(d+"/latest").read().strip(); print(json.dumps(json.load(open(d+"/"+c+"/state.json"))["config"], sort_keys=True))' "$1"; }

"$BIN" init --from "$DATA/tiny-sdxl-a" --config "$DATA/configs/unet-micro.json" \
    --vae-config "$DATA/configs/vae-micro.json" --out "$T/m" --seed 3 >/dev/null 2>&1; ok $? "init a micro model"

"$BIN" train dmd2 --teacher "$T/m" --out "$T/r" --resolution 32 --batch 3 --ttur 3 --steps 2 --cache-size 8 \
    --lr-generator 2e-4 --lr-fake 1e-4 --warmup 0 --lora-rank 2 --lora-alpha 4 --no-gan --timesteps 999,499 \
    --seed 7 --sample-every 0 --checkpoint-every 0 2>"$T/a.log"; ok $? "a LoRA run at resolution 32 with non-default options"
a=$(cfg "$T/r")
python3 -c 'import json,sys; c=json.loads(sys.argv[1]); sys.exit(0 if c["lora_rank"]==2 and c["resolution"]==32 and c["batch"]==3 and c["gan"] is False and c["timesteps"]==[999,499] and c["steps"]==2 else 1)' "$a"
ok $? "state.json stores the effective options"

"$BIN" train dmd2 --teacher "$T/m" --out "$T/r" --resume --steps 4 --log-every 2 2>"$T/b.log"; ok $? "--resume with only --steps (and a resume-safe --log-every)"
b=$(cfg "$T/r")
want=$(python3 -c 'import json,sys; c=json.loads(sys.argv[1]); c.update(steps=4, log_every=2); print(json.dumps(c, sort_keys=True))' "$a")
[ "$b" = "$want" ]; ok $? "the resumed run keeps every stored option (LoRA rank, resolution, ...)"
grep -q "step 4/4" "$T/b.log"; ok $? "... and trains on to step 4"

"$BIN" train dmd2 --teacher "$T/m" --out "$T/r" --resume --steps 6 --lora-rank 4 >/dev/null 2>"$T/c.log"
[ $? -eq 2 ] && grep -q -- "--lora-rank may not change" "$T/c.log"; ok $? "a changed --lora-rank at resume is refused naming the flag"
"$BIN" train dmd2 --teacher "$T/m" --out "$T/r" --resume --steps 6 --resolution 32 --gan=false --checkpoint-every 1 \
    --keep-checkpoints 2 2>/dev/null; ok $? "repeating stored values is fine"
[ "$(ls -d "$T"/r/checkpoint-* | xargs -n1 basename | tr '\n' ' ')" = "checkpoint-0000005 checkpoint-0000006 " ]
ok $? "keep-checkpoints 2 leaves the newest two"
"$BIN" train dmd2 --teacher "$T/m" --out "$T/x" --no-such-flag 1 >/dev/null 2>"$T/d.log"
[ $? -eq 2 ] && grep -q -- "--no-such-flag" "$T/d.log"; ok $? "an unknown flag is an error naming it"
"$BIN" train-teacher --help | grep -q -- "--keep-checkpoints"; ok $? "train-teacher --help lists the table's options"

# A model folder that carries its teacher (DIR/teacher/, as the built-in model does): DMD2
# takes the teacher's UNet, not the served generator's, and the teacher's
# dmd2_defaults.json sets every option not given.
"$BIN" init --from "$DATA/tiny-sdxl-a" --config "$DATA/configs/unet-micro.json" \
    --vae-config "$DATA/configs/vae-micro.json" --out "$T/t" --seed 4 >/dev/null 2>&1; ok $? "init a second micro model (the teacher)"
cp -r "$T/m" "$T/mt" && mkdir "$T/mt/teacher" && cp "$T/t/unet/"* "$T/mt/teacher/"
cp -r "$T/m" "$T/mu" && cp "$T/t/unet/"* "$T/mu/unet/"    # the same teacher as a plain model folder
echo '{"batch": 3, "ttur": 2, "lr_generator": 3e-4, "warmup": 0, "steps": 1, "seed": 11}' > "$T/mt/teacher/dmd2_defaults.json"
dm() { "$BIN" train dmd2 --teacher "$1" --out "$2" --resolution 32 --cache-size 8 --sample-every 0 --checkpoint-every 0 "${@:3}"; }
dm "$T/mt" "$T/rt" 2>"$T/e.log"; ok $? "a DMD2 run on a model with teacher/"
python3 -c 'import json,sys; c=json.loads(sys.argv[1]); sys.exit(0 if (c["batch"],c["ttur"],c["warmup"],c["steps"],c["seed"])==(3,2,0,1,11) and abs(c["lr_generator"]-3e-4)<1e-9 and abs(c["lr_fake"]-5e-7)<1e-12 else 1)' "$(cfg "$T/rt")"
ok $? "the teacher's dmd2_defaults.json sets the options not given (others keep the table's defaults)"
dm "$T/mu" "$T/ru" --batch 3 --ttur 2 --lr-generator 3e-4 --warmup 0 --steps 1 --seed 11 2>/dev/null
cmp -s "$T/rt/generator.safetensors" "$T/ru/generator.safetensors"; ok $? "the run distils from teacher/ (same generator as from a folder whose unet/ is that teacher)"
dm "$T/m" "$T/rm" --batch 3 --ttur 2 --lr-generator 3e-4 --warmup 0 --steps 1 --seed 11 2>/dev/null
! cmp -s "$T/rt/generator.safetensors" "$T/rm/generator.safetensors"; ok $? "... and not from the served unet/"
dm "$T/mt" "$T/rg" --batch 2 --seed 12 2>/dev/null
python3 -c 'import json,sys; c=json.loads(sys.argv[1]); sys.exit(0 if (c["batch"],c["seed"],c["ttur"])==(2,12,2) else 1)' "$(cfg "$T/rg")"
ok $? "given options win over the model's defaults"
echo '{"batch": 3, "out": "elsewhere"}' > "$T/mt/teacher/dmd2_defaults.json"
dm "$T/mt" "$T/rb" >/dev/null 2>"$T/f.log"; [ $? -ne 0 ] && grep -q "dmd2_defaults.json: 'out' is not an option a model may set" "$T/f.log"
ok $? "a defaults file naming a non-option is refused, naming the file and the key"
echo '{"batch": 0}' > "$T/mt/teacher/dmd2_defaults.json"
dm "$T/mt" "$T/rb" >/dev/null 2>"$T/f.log"; [ $? -ne 0 ] && grep -q "dmd2_defaults.json: batch" "$T/f.log"
ok $? "a defaults file with a bad value is refused, naming it"
[ -f "$DATA/../../models/shapes-small/teacher/config.json" ] && [ -f "$DATA/../../models/shapes-small/teacher/dmd2_defaults.json" ]
ok $? "the built-in model ships its teacher and its DMD2 recipe"

echo "1..$n"
[ $fails -eq 0 ]
