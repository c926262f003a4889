#!/usr/bin/env bash
# The prepared GPU check of issue 22 (part 5): full-size models with random weights ("dummy weights: throughput
# only") on the vision roles of a profile and one VLM role, in a few minutes of a ten-minute budget: PROFILE=grand
# (default; grand.yaml, LLaVA-1.5-13B captions) or PROFILE=grand2026 (grand2026.yaml's vision roles, ovss and the
# Florence-2 region descriptions, Qwen3-VL-2B captions through transformers).
#
# Needs only python3 with torch, transformers, timm and pyarrow: no Ray, no vLLM, no package registry, no model
# hub, no manifest parsing. The roles, their input sizes, crops, queries, tokens and batches come from a cost plan
# written by `grand-engine models cost --manifest grand --var weights_dir=weights --json
# benchmarks/plans/grand_h100.json` (and the same with grand2026) on a machine with the full environment
# (regenerate them when the workload changes). The floors in the output are recomputed for the card the run finds.
#
#   OUT=/tmp/out bash benchmarks/gpu_session.sh            # on the GPU machine, from the repository root
#   OUT=/tmp/out PROFILE=grand2026 bash benchmarks/gpu_session.sh
#   PLAN=plan.json STAGES=depth,tagging IMAGES=2 bash benchmarks/gpu_session.sh   # any plan, e.g. tiny, on CPU
#
# Writes under $OUT: env.txt (versions, the card), gpu_dummy.log, and gpu_dummy.json (saved after every role, so
# a run cut short keeps what it measured). Exit status: gpu_throughput.py's (1 when a role failed to run).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-/tmp/gpu_session}
PROFILE=${PROFILE:-grand}
case "$PROFILE" in
  grand) PROFILE_STAGES=depth,tagging,detect_closed,detect_lvis,detect_ov,detect_ov2,sam_classify,label_assign,masks,ground_phrases,caption_vlm ;;
  grand2026) PROFILE_STAGES=depth,tagging,ovss,detect_closed,detect_lvis,detect_ov,detect_ov2,sam_classify,label_assign,masks,ground_phrases,region_attributes,caption_vlm ;;
  *) echo "PROFILE must be grand or grand2026, got $PROFILE" >&2; exit 2 ;;
esac
PLAN=${PLAN:-benchmarks/plans/${PROFILE}_h100.json}
IMAGES=${IMAGES:-32}
LIMIT_S=${LIMIT_S:-540}
STAGES=${STAGES:-$PROFILE_STAGES}
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
