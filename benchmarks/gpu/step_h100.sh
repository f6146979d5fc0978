#!/usr/bin/env bash
# Issue 8's GPU measurement in one call (< 8 minutes) on a lent H100 / H200:
#
#   run(command="bash benchmarks/gpu/step_h100.sh", carry=["benchmarks/gpu/wheels"], timeout_s=540)
#
# It installs what the device image (Python 3.12, torch 2.11, timm, transformers, peft, pluggy,
# typer, rich, tqdm, safetensors, numpy, scipy) lacks from cp312 wheels in the ignored folder
# benchmarks/gpu/wheels, then rdmx and every plugin, into a private SITE on PYTHONPATH; builds the
# panel of recipes/irdm_panel.toml at real size with random weights on a synthetic 256-px folder
# (tracking off); and runs benchmarks/step.py: the gradient-cached step with the loss gradient
# cached at the features (the previous scheme, chunk 8 = today's setting) and at the image (chunk
# 8 and the probed "auto" chunk), bf16 ViT weights and a bf16-autocast generator, the components
# alone, loss + balancer at N = 5120, evaluation of 16,384 samples (measured on 2,048, scaled),
# and torch.compile on the generator and two encoders. Tables and JSON go to $OUT.
#
# Fill the wheel folder once, on a machine with network (versions = the ones rdmx is tested with):
#   pip download --python-version 3.12 --only-binary=:all: --no-deps -d benchmarks/gpu/wheels \
#     pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
#     tomli-w==1.2.0 diffusers==0.42.1 importlib_metadata==9.1.0 zipp==4.1.2 pytorch-fid==0.3.0 \
#     open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
#   pip wheel --no-deps -w benchmarks/gpu/wheels dreamsim==0.2.1
#
# Environment: OUT (default benchmarks/results/gpu), WHEELS (default benchmarks/gpu/wheels), SITE
# (default a fresh temporary folder), PYTHON (default python3), RECIPE (default the panel); SMOKE=1
# runs the same logic on the CPU with tiny models (tests/test_step_benchmark.py), SKIP_INSTALL=1
# uses the current environment.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-benchmarks/results/gpu}
WHEELS=${WHEELS:-benchmarks/gpu/wheels}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
START=$SECONDS
log() { echo "[step_h100 +$((SECONDS - START))s] $*" | tee -a "$OUT/log.txt"; }

# 1. rdmx's missing dependencies, rdmx and its plugins, into a private site folder
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  SITE=${SITE:-$(mktemp -d)/site}
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    log "no wheels in $WHEELS: fill it first (the pip download / pip wheel lines at the top of this script)"
    exit 2
  fi
  log "installing $(ls "$WHEELS"/*.whl | wc -l) wheels, rdmx and its plugins into $SITE"
  "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl
  "$PY" -m pip install --quiet --no-deps --no-build-isolation --target "$SITE" . plugins/rdmx-*/
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

# 2. what this machine is
"$PY" - <<'PYEOF' 2>&1 | tee -a "$OUT/log.txt"
import importlib, sys
import torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"{p.total_memory / 2**30:.1f} GiB")
for m in ("timm", "transformers", "diffusers", "open_clip", "pydantic", "rdmx"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"), mod.__file__)
    except Exception as exc:  # noqa: BLE001
        print(m, "missing:", exc)
from rdmx.plugins import get_plugins
print("plugins:", ", ".join(f"{i.name}={i.status}" for i in get_plugins().infos))
for i in get_plugins().failures():
    print("plugin failed:", i.name, getattr(i, "error", ""))
PYEOF

# 3. the step benchmark (partial results stay in the log if the time limit cuts it)
if [ "${SMOKE:-0}" = 1 ]; then
  ARGS=(--tiny --device cpu --batch 16 --steps 1 --repeats 1 --eval-n 64 --loss-n 256 --budget-mib 8
        --compile-components)
  LIMIT=${LIMIT:-900}
else
  ARGS=(--batch 256 --steps 2 --repeats 3 --eval-n 2048 --weights-dtype bfloat16 --generator-precision bfloat16
        --compile-components generator convnext mae)
  LIMIT=${LIMIT:-$((470 - (SECONDS - START)))}
fi
log "benchmarks/step.py ${ARGS[*]} (limit ${LIMIT}s)"
status=0
timeout "$LIMIT" "$PY" benchmarks/step.py --recipe "${RECIPE:-recipes/irdm_panel.toml}" --runs features:8,image:8,image:auto "${ARGS[@]}" \
  --json "$OUT/step_gpu.json" --out "$OUT/step_gpu.txt" 2>&1 | tee -a "$OUT/log.txt" || status=$?
log "done (status $status)"
exit "$status"
