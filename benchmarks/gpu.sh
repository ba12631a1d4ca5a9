#!/usr/bin/env bash
# Every engine benchmark on one device, as one prepared run (< 8 minutes on an H100/H200):
#   bash benchmarks/gpu.sh                     # CUDA: full sizes, speed variants, precision drift
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu.sh  # the same scripts on the CPU at toy sizes (~1 min)
# It prints ms per batch of each family's engine against its autograd path, the speed options
# flipped (channels-last, TF32), torch.compile of the step or of each phase (CUDA graphs), the
# projected epoch time of code base A's CIFAR-10 command, the fewer-steps study (sync / async /
# tol) and the precision drift of an EP update (float32, TF32, bfloat16 against float64). Needs
# torch, click and pyyaml only (no Ray, no MLflow); run from anywhere.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-$(test -x .venv/bin/python && echo .venv/bin/python || echo python3)}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
LIMIT=${LIMIT:-150}   # seconds per benchmark: one slow part cannot eat the whole run
status=0

"$PY" - "$DEVICE" <<'PYCHECK' || exit 2
import sys, torch
import eqsearch.config  # click / pyyaml present
dev = sys.argv[1]
if dev.startswith("cuda") and not torch.cuda.is_available():
    sys.exit(f"DEVICE={dev}: torch {torch.__version__} sees no CUDA device (DEVICE=cpu QUICK=1 runs the CPU path)")
name = torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu"
print(f"torch {torch.__version__} on {name}")
PYCHECK

run() {  # run LABEL ARGS...: one benchmark under the time limit; a failure is reported, the rest go on
    local label=$1; shift
    echo; echo "######## $label"
    local t0=$SECONDS
    timeout "$LIMIT" "$PY" "$@"
    local rc=$?
    [ $rc -eq 0 ] || { echo "!! $label: exit $rc (124: over ${LIMIT} s)"; status=1; }
    echo "-- $label: $((SECONDS - t0)) s"
}

if [ "$QUICK" = 1 ]; then
    run "MLP (code base A)" benchmarks/ep_mlp.py --device "$DEVICE" --repeats 1 --batches 2 --compile
    run "CNN (code base A)" benchmarks/ep_cnn.py --device "$DEVICE" --config mnist --repeats 1 --scale-steps 50 --mbs 8 --variants
    run "CNN compiled" benchmarks/ep_cnn.py --device "$DEVICE" --config mnist --repeats 1 --scale-steps 50 --mbs 8 --compile --skip-autograd
    run "CNN fewer steps" benchmarks/ep_cnn.py --device "$DEVICE" --orders --max-steps 20
    run "energies (code base C)" benchmarks/ep_energy.py --device "$DEVICE" --repeats 1 --batches 1
    run "continual EP (code base B)" benchmarks/ep_continual.py --device "$DEVICE" --repeats 1 --batches 1
    run "LCA-CNN (code base D)" benchmarks/lca_cnn.py --device "$DEVICE" --config fashion --repeats 1 --scale-steps 50 --mbs 4
    run "precision drift" benchmarks/precision_drift.py --device "$DEVICE" --cases mnist_mlp
else
    run "MLP (code base A)" benchmarks/ep_mlp.py --device "$DEVICE" --repeats 5 --batches 40 --compile
    run "CNN (code base A), CIFAR-10 epoch projected" benchmarks/ep_cnn.py --device "$DEVICE" --config both --repeats 3 --variants
    run "CNN compiled" benchmarks/ep_cnn.py --device "$DEVICE" --config both --repeats 3 --compile --skip-autograd
    run "CNN fewer steps" benchmarks/ep_cnn.py --device "$DEVICE" --orders --max-steps 400
    run "energies (code base C)" benchmarks/ep_energy.py --device "$DEVICE" --repeats 5 --batches 10
    run "continual EP (code base B)" benchmarks/ep_continual.py --device "$DEVICE" --repeats 5 --batches 10
    run "LCA-CNN (code base D)" benchmarks/lca_cnn.py --device "$DEVICE" --config both --repeats 3
    run "precision drift" benchmarks/precision_drift.py --device "$DEVICE"
fi
echo; echo "total $SECONDS s"
exit $status
