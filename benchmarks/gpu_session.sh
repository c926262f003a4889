#!/usr/bin/env bash
# The prepared GPU check of issue 22 (part 5): full-size models with random weights ("dummy weights: throughput
# only") on the vision roles of grand.yaml and one VLM role (LLaVA-1.5-13B captions), in about two minutes of a
# ten-minute budget.
#
# Needs only python3 with torch, transformers, timm and pyarrow: no Ray, no vLLM, no package registry, no model
# hub, no manifest parsing. The roles, their input sizes, crops, queries, tokens and batches come from a cost plan
# written by `grand-engine models cost --manifest grand --var weights_dir=weights --json
# benchmarks/plans/grand_h100.json` on a machine with the full environment (regenerate it when the workload
# changes). The floors in the output are recomputed for the card the run finds.
#
#   OUT=/tmp/out bash benchmarks/gpu_session.sh            # on the GPU machine, from the repository root
#   PLAN=plan.json STAGES=depth,tagging IMAGES=2 bash benchmarks/gpu_session.sh   # any plan, e.g. tiny, on CPU
#
# Writes under $OUT: env.txt (versions, the card), gpu_dummy.log, and gpu_dummy.json (saved after every role, so
# a run cut short keeps what it measured). Exit status: gpu_throughput.py's (1 when a role failed to run).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-/tmp/gpu_session}
PLAN=${PLAN:-benchmarks/plans/grand_h100.json}
IMAGES=${IMAGES:-32}
LIMIT_S=${LIMIT_S:-540}
STAGES=${STAGES:-depth,tagging,detect_closed,detect_lvis,detect_ov,detect_ov2,sam_classify,label_assign,masks,ground_phrases,caption_vlm}
mkdir -p "$OUT"

{
  date -u
  python3 - <<'PY'
import importlib
for name in ("torch", "transformers", "timm", "pyarrow", "open_clip", "segment_anything", "vllm", "ray", "pydantic"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except ImportError:
        print(f"{name} not installed")
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
PY
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
} 2>&1 | tee "$OUT/env.txt"

PYTHONUNBUFFERED=1 timeout "$LIMIT_S" python3 benchmarks/gpu_throughput.py --dummy --plan "$PLAN" \
  --images "$IMAGES" --stages "$STAGES" --json "$OUT/gpu_dummy.json" 2>&1 | tee "$OUT/gpu_dummy.log"
status=${PIPESTATUS[0]}
echo "gpu_throughput.py exit status $status" | tee -a "$OUT/gpu_dummy.log"
exit "$status"
