#!/usr/bin/env bash
# Train the reference model on a lent GPU within a hard wall-clock budget, then measure it there.
#
#   benchmarks/gpu/train_reference.sh OUT_DIR
#
# Run from the repository root. Writes into OUT_DIR (5 files, each well under 16 MB):
#   best.pt         the weights chosen on the val split, fp16 (an open_clip checkpoint)
#   reference.json  the architecture they belong to
#   train.json      the run log (options, every validation, best step)
#   summary.txt     device, timings and every table (attributes on test and sketch, recall, demo)
#   results.tar.gz  every JSON report and every log
#
# Environment overrides (the defaults are the real run; the CPU dry run makes them tiny):
#   DEVICE=cuda TRAIN_MINUTES=4 PARTS=14 TRAIN_PER_PART=6300 HELDOUT_PER_PART=900 WORKERS=14
#   BATCH=256 LR=1e-3 WARMUP=200 EVAL_EVERY=500 VAL=500 TEST=1000 SKETCH=1000 DEMO_IMAGES=300
#   PARTIAL=0.5 SELECT_BY=attributes (v4's graded targets and best.pt by attribute P@3; PARTIAL=0 SELECT_BY=recall: v3)
#   WORK=/tmp/clipsearch-gpu (scratch: datasets and libraries; removed first)
#
# On the lent H200 (16 cores), after the missing wheels are installed into /tmp/site:
#   benchmarks/gpu/train_reference.sh "$OUT" 2>&1 | tail -120      (timeout_s 540)
# Expected: data ~20 s, labels and loader start ~30 s, training 4 min, evaluations ~1 min: ~6.5 min.
# A shorter try: TRAIN_MINUTES=3 benchmarks/gpu/train_reference.sh "$OUT".
# CPU dry run (what was run before committing):
#   DEVICE=cpu TRAIN_MINUTES=0.4 PARTS=2 TRAIN_PER_PART=300 HELDOUT_PER_PART=40 WORKERS=2 BATCH=64 WARMUP=5 \
#   EVAL_EVERY=5 VAL=40 TEST=60 SKETCH=60 DEMO_IMAGES=40 benchmarks/gpu/train_reference.sh /tmp/dry
set -euo pipefail

OUT_DIR=${1:?usage: benchmarks/gpu/train_reference.sh OUT_DIR}
DEVICE=${DEVICE:-cuda}
TRAIN_MINUTES=${TRAIN_MINUTES:-4}
PARTS=${PARTS:-14}
TRAIN_PER_PART=${TRAIN_PER_PART:-6300}     # train split: the 35 pairs of (shape, colour) that are not held out
HELDOUT_PER_PART=${HELDOUT_PER_PART:-900}  # heldout-train: the other 5 pairs, 1/7 of train, so every pair is as common
WORKERS=${WORKERS:-14}
BATCH=${BATCH:-256}
LR=${LR:-1e-3}
WARMUP=${WARMUP:-200}
EVAL_EVERY=${EVAL_EVERY:-500}
VAL=${VAL:-500}
TEST=${TEST:-1000}
SKETCH=${SKETCH:-1000}
DEMO_IMAGES=${DEMO_IMAGES:-300}
WORK=${WORK:-/tmp/clipsearch-gpu}
PARTIAL=${PARTIAL:-0.5}
SELECT_BY=${SELECT_BY:-attributes}

REPO=$(pwd)
export PYTHONPATH="$REPO:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
rm -rf "$WORK"
mkdir -p "$WORK/logs" "$WORK/reports"
LOGS=$WORK/logs
REPORTS=$WORK/reports
SUMMARY=$OUT_DIR/summary.txt
: >"$SUMMARY"

cs() { python3 -c 'from indexer.cli import main; main()' "$@"; }
note() { echo "$*" | tee -a "$SUMMARY"; }
stamp() { date -u +%H:%M:%S; }
pack() {  # whatever happened, the logs and reports come back
    tar -czf "$OUT_DIR/results.tar.gz" -C "$WORK" logs reports 2>/dev/null || true
}
trap pack EXIT

T0=$(date +%s)
note "== clipsearch reference training, $(date -u +%FT%TZ), device=$DEVICE, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  python3 -c 'import torch, open_clip, faiss, PIL; print("torch", torch.__version__, "cuda", torch.version.cuda,
"available", torch.cuda.is_available(), "| open_clip", open_clip.__version__, "| faiss", faiss.__version__,
"| Pillow", PIL.__version__)'
  echo "cpus $(nproc)"; } 2>&1 | tee -a "$SUMMARY"

# --- the architecture: the v2 reference model at 96 px (a 3x3 grid at the attention pool; 80 px gave 2x2
# and cut the last row and column of the 5x5 map before it) ------------------------------------------------
python3 - "$OUT_DIR/reference.json" <<'EOF'
import json, sys
config = json.load(open("retrieval/model/data/reference.json"))
config["vision_cfg"]["image_size"] = 96
json.dump(config, open(sys.argv[1], "w"), indent=2)
EOF
MODEL=$OUT_DIR/reference.json

# --- data: PARTS generators in parallel (each a deterministic generate-dataset of its own seed), merged -----
note "[$(stamp)] generating $PARTS x ($TRAIN_PER_PART train + $HELDOUT_PER_PART heldout-train), val $VAL, test $TEST, sketch $SKETCH"
pids=()
for part in $(seq 1 "$PARTS"); do
    cs generate-dataset "$WORK/data/part$part" --seed "$((1000 + part))" \
        --size train="$TRAIN_PER_PART" --size heldout-train="$HELDOUT_PER_PART" >"$LOGS/generate-part$part.log" 2>&1 &
    pids+=($!)
done
cs generate-dataset "$WORK/data/shapes" --size val="$VAL" --size test="$TEST" >"$LOGS/generate-shapes.log" 2>&1 &
pids+=($!)
cs generate-dataset "$WORK/data/sketch" --style sketch --size test="$SKETCH" >"$LOGS/generate-sketch.log" 2>&1 &
pids+=($!)
for pid in "${pids[@]}"; do wait "$pid"; done
python3 - "$WORK/data" "$PARTS" <<'EOF'
import json, sys
from pathlib import Path
root, parts = Path(sys.argv[1]), int(sys.argv[2])
lines = []
for part in range(1, parts + 1):
    for split in ("train", "heldout-train"):
        for line in (root / f"part{part}" / f"{split}.jsonl").read_text().splitlines():
            record = json.loads(line)
            record["image"] = f"part{part}/{record['image']}"
            lines.append(json.dumps(record))
(root / "train.jsonl").write_text("\n".join(lines) + "\n")
print(f"merged {len(lines)} training images")
EOF
note "[$(stamp)] data ready: $(wc -l <"$WORK/data/train.jsonl") training images ($(( $(date +%s) - T0 )) s since start)"

# --- training: a wall-clock budget ends the cosine schedule; timeout is the backstop -----------------------
# Loader workers hand batches over in shared memory (/dev/shm): up to 4 batches each in flight. Fewer workers
# where /dev/shm cannot hold that, rather than a bus error mid-run.
WORKERS=$(python3 - "$WORKERS" "$BATCH" 2>>"$SUMMARY" <<'EOF'
import os, sys
workers, batch = int(sys.argv[1]), int(sys.argv[2])
per_worker = 4 * batch * 3 * 96 * 96 * 4 * 1.5  # prefetched float32 batches, with room to spare
try:
    stat = os.statvfs("/dev/shm")
    free = stat.f_bavail * stat.f_frsize
except OSError:
    free = 0
fits = int(free // per_worker)
print(min(workers, fits))
print(f"/dev/shm free {free / 2**30:.1f} GiB: room for {fits} loader workers", file=sys.stderr)
EOF
)
note "loader workers: $WORKERS"
RUN=$WORK/run
TRAIN_START=$(date +%s)
note "[$(stamp)] training: budget $TRAIN_MINUTES min, batch $BATCH, lr $LR, warmup $WARMUP, $WORKERS workers, partial target $PARTIAL, best by $SELECT_BY"
BACKSTOP=$(python3 -c "print(int($TRAIN_MINUTES * 60 + 120))")
timeout --signal=INT --kill-after=15 "$BACKSTOP" python3 -c 'from indexer.cli import main; main()' train \
    "$WORK/data/train.jsonl" --val "$WORK/data/shapes/val.jsonl" --model "$MODEL" -o "$RUN" \
    --epochs 1000 --batch-size "$BATCH" --lr "$LR" --warmup-steps "$WARMUP" \
    --augment --hard-negatives --match-targets --partial-target "$PARTIAL" --select-by "$SELECT_BY" --fp16-weights \
    --device "$DEVICE" --workers "$WORKERS" --time-budget "$TRAIN_MINUTES" \
    --eval-every "$EVAL_EVERY" --val-images "$VAL" --quiet --json \
    >"$REPORTS/train-summary.json" 2>"$LOGS/train.log" || note "train exited with $?"
note "[$(stamp)] training took $(( $(date +%s) - TRAIN_START )) s wall (process start to end)"
cp "$RUN/best.pt" "$OUT_DIR/best.pt"
cp "$RUN/train.json" "$OUT_DIR/train.json"
python3 - "$RUN/train.json" "$REPORTS/train-summary.json" <<'EOF' | tee -a "$SUMMARY"
import json, sys
log = json.load(open(sys.argv[1]))
summary = json.load(open(sys.argv[2])) if open(sys.argv[2]).read().strip() else {}
print(f"steps {summary.get('steps')} in {summary.get('seconds')} s (training loop), final loss {summary.get('final_loss')}, "
      f"best step {log['best_step']}, train images {log['train_images']}")
for entry in log["history"]:
    val = entry.get("val") or {}
    t2i = val.get("text_to_image", {})
    print(f"  step {entry['step']:>6}  loss {entry['loss']:.3f}  val mean {val.get('mean', float('nan')):.2f}  "
          f"text->image R@1 {t2i.get('R@1', float('nan')):.2f}")
EOF

# --- evaluation, on the device: the five measurements at once (each its own process and library) ---------
MODEL_ARGS=(--model "$MODEL" --pretrained "$OUT_DIR/best.pt" --device "$DEVICE")
note "[$(stamp)] evaluating"
# The demo with these weights as the packaged model: a copy of the package, first on the path.
mkdir -p "$WORK/overlay"
cp -r "$REPO/retrieval" "$WORK/overlay/retrieval"
cp "$OUT_DIR/reference.json" "$WORK/overlay/retrieval/model/data/reference.json"
cp "$OUT_DIR/best.pt" "$WORK/overlay/retrieval/model/data/reference.pt"
pids=()
for name in test sketch; do
    folder=shapes
    [ "$name" = sketch ] && folder=sketch
    cs bench attributes "$WORK/data/$folder/test.jsonl" "${MODEL_ARGS[@]}" --workers 3 --json \
        >"$REPORTS/attributes-$name.json" 2>"$LOGS/attributes-$name.log" &
    pids+=($!)
    cs bench recall "$WORK/data/$folder/test.jsonl" "${MODEL_ARGS[@]}" --workers 3 --json \
        >"$REPORTS/recall-$name.json" 2>"$LOGS/recall-$name.log" &
    pids+=($!)
done
# From $WORK: `python3 -c` puts its working folder first on the path, and the repository's own retrieval/
# there would hide the copy (the first device run's demo measured the old packaged model that way).
(cd "$WORK" && PYTHONPATH="$WORK/overlay:$PYTHONPATH" python3 -c 'from indexer.cli import main; main()' \
    demo --folder "$WORK/demo" --images "$DEMO_IMAGES" >"$REPORTS/demo.txt" 2>"$LOGS/demo.log") &
pids+=($!)
for pid in "${pids[@]}"; do wait "$pid" || note "an evaluation exited with $? (see its log)"; done
note "[$(stamp)] evaluated"
python3 - "$REPORTS" <<'EOF' | tee -a "$SUMMARY"
import json, sys
from pathlib import Path
reports = Path(sys.argv[1])
for name in ("test", "sketch"):
    try:
        report = json.loads((reports / f"attributes-{name}.json").read_text())
        print(f"attributes on {name} ({report['images']} images), P@1 / P@3 / P@10:")
        for attribute, row in report["attributes"].items():
            print(f"  {attribute:<13} {row['P@1']:6.1f} {row['P@3']:6.1f} {row['P@10']:6.1f}")
        report = json.loads((reports / f"recall-{name}.json").read_text())
        print(f"recall on {name} ({report['images']} images, {report['captions']} captions, index matches exact: "
              f"{report['index_matches_exact']}): {json.dumps(report['index'])}")
    except (OSError, ValueError, KeyError) as exc:
        print(f"{name}: no report ({exc!r})")
EOF
note "demo (its model line must name the checkpoint of best.pt: $(sha256sum "$OUT_DIR/best.pt" | cut -c1-16)):"
tee -a "$SUMMARY" <"$REPORTS/demo.txt"
note "[$(stamp)] done in $(( $(date +%s) - T0 )) s"
