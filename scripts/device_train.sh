#!/usr/bin/env bash
# Train the prior on a lent GPU machine (the device tool) and bring the EMA weights back through $OUT.
#
#   device run:  bash scripts/device_train.sh          (timeout_s about 590; MINUTES of training, default 8)
#   back here:   mkdir -p runs/demo_prior_v5_gpu
#                cat <files_at>/zssd_demo_prior_v5.safetensors.part-* > runs/demo_prior_v5_gpu/zssd_demo_prior_v5.safetensors
#                cp <files_at>/zssd_demo_prior_v5.json <files_at>/loss.csv runs/demo_prior_v5_gpu/
#   (a candidate: measure it with --checkpoint beside the shipped prior before anything goes to assets/)
#
# The machine is bare and offline: the package is installed from this tree (no dependencies: the machine's
# image has torch, numpy, pandas, scipy, safetensors, tqdm and threadpoolctl: all that training imports).
# Returned files must be under 16 MiB each, so the weights come back split.  A CPU dry run of the same script:
#   OUT=/tmp/o MINUTES=0.2 STEPS=4 WORKERS=1 bash scripts/device_train.sh
#
# To continue an earlier lease's network (same config) rather than start afresh, carry its EMA weights as a
# bfloat16 copy (half the bytes: the tree that travels must stay under 64 MiB) in an ignored folder:
#   python -c "from zssd_engine.prior.model import Prior as P; P.load('runs/demo_prior_v5_gpu', device='cpu').save('.carry/v5_init', dtype='bfloat16')"
#   device run (carry [".carry"]):  INIT_FROM=.carry/v5_init bash scripts/device_train.sh
set -euo pipefail
: "${OUT:?OUT must name the folder whose files come back}"
CONFIG=${CONFIG:-configs/demo_prior_v5_gpu.toml}
MINUTES=${MINUTES:-8}
WORKERS=${WORKERS:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}
RUN=${RUN:-/tmp/zssd_run}
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
python3 -m pip install -q --no-deps --no-build-isolation --no-index --target /tmp/zssd_site . >/dev/null
export PYTHONPATH=/tmp/zssd_site${PYTHONPATH:+:$PYTHONPATH}
{ command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv; } || echo "no GPU"
args=(train --config "$CONFIG" --out "$RUN" --max-minutes "$MINUTES" --data-workers "$WORKERS" --no-progress)
[ -n "${STEPS:-}" ] && args+=(--steps "$STEPS")
[ -n "${RESUME:-}" ] && args+=(--resume "$RESUME")
[ -n "${INIT_FROM:-}" ] && args+=(--init-from "$INIT_FROM")
set +e
python3 -m zssd_engine.cli "${args[@]}" 2>&1 | tee "$OUT/train.log"
rc=${PIPESTATUS[0]}
set -e
name=$(python3 -c "import tomllib,sys; print(tomllib.load(open(sys.argv[1],'rb'))['name'])" "$CONFIG")
if [ -f "$RUN/$name.safetensors" ]; then
  split -b 15M -d "$RUN/$name.safetensors" "$OUT/$name.safetensors.part-"
  cp "$RUN/$name.json" "$OUT/"; cp "$RUN/loss.csv" "$OUT/" 2>/dev/null || true
  (cd "$RUN" && ls -la) >> "$OUT/train.log"
  python3 -c "import json,sys; t=json.load(open(sys.argv[1]))['training']; print('steps', t['steps'], 'in',
t['wall_time_s'], 's; waiting for data', t.get('data_wait_s'), 's')" "$RUN/$name.json" | tee -a "$OUT/train.log" || true
fi
exit "$rc"
