#!/usr/bin/env bash
# GPFM (ViT-L/14, RANDOM weights — timing only) bf16 slide → features throughput on one GPU, within ~5 minutes.
#
# 1. benchmarks/extract_throughput.py on CMU-1-Small-Region tiled with a 224 px overlap (stride 32 px at
#    0.5 µm/px → ~2,000+ distinct real tiles): block reads, encoder-only (decoded tiles in pinned memory →
#    GPU resize + bf16 ViT-L) and end-to-end (DataLoader readers → GPU) tiles/s, and their ratio.
# 2. the full `gpfm extract` job (tissue detection, tiling, pictures, locks, atomic HDF5) over N links to the
#    same slide at the default recipe, reporting the job's end-to-end tiles/s from its run record.
# Prints JSON; the GPU model-only rate is the headline (spec estimate: ~1,500–2,500 tiles/s on an H100).
#   bash benchmarks/gpu_extract.sh [SLIDE] [BATCH=256] [WORKERS=12]
set -euo pipefail
cd "$(dirname "$0")/.."
SLIDE="${1:-../shared/data/wsi/CMU-1-Small-Region.svs}"
BATCH="${2:-256}"
WORKERS="${3:-12}"
PY="${PYTHON:-python}"
export PYTHONPATH=src
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device: this benchmark needs a GPU (use benchmarks/extract_throughput.py on CPU)" >&2
  exit 1
fi
if [ ! -f "$SLIDE" ]; then
  SLIDE="$("$PY" -c 'from gpfm.extract.demo_slide import demo_slide_path; print(demo_slide_path())')"
fi
OUT="$(mktemp -d /tmp/gpfm_gpu_extract.XXXXXX)"

timeout 200 "$PY" benchmarks/extract_throughput.py --slide "$SLIDE" --encoders gpfm --vit-tiles 0 \
  --overlap 224 --device cuda --precision bf16 --batch-size "$BATCH" --workers "$WORKERS" \
  --out "$OUT/throughput.json" > /dev/null

mkdir -p "$OUT/slides"
for i in $(seq -w 1 24); do ln -sf "$(realpath "$SLIDE")" "$OUT/slides/s$i.svs"; done
timeout 120 "$PY" -m gpfm extract "$OUT/slides" --encoder gpfm --weights random --out "$OUT/job" \
  --device cuda --precision bf16 --batch-size "$BATCH" --workers "$WORKERS" > "$OUT/job.log" 2>&1 || true

"$PY" - "$OUT" <<'PYEOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
report = json.loads((out / "throughput.json").read_text())
runs = [json.loads(p.read_text()) for p in (out / "job" / "runs").glob("*.json")]
job = runs[0] if runs else {}
report["job"] = {k: job.get(k) for k in ("counts", "n_tiles", "seconds", "tiles_per_s")}
report["job"]["note"] = "24 small slides: includes per-slide tissue detection, pictures and DataLoader start-up"
print(json.dumps(report, indent=2))
PYEOF
