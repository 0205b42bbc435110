#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run: the CUDA tests, the corruption and pipeline benchmarks on the GPU,
# the CLI end to end on CUDA (digits, generated ImageNet-C with --decode gpu, attacks), torchrun with ranks on
# CUDA, then the whole test suite with CUDA present. Each step has a time limit inside an overall budget.
#
# Usage (repository root, ../shared/data beside it for the real-image steps):
#   bash benchmarks/gpu_checks.sh OUT_DIR [BUDGET_SECONDS]
# Each step's output goes to OUT_DIR/<step>.log; a summary line per step is printed. STEPS="a b" runs only the
# named steps.
set -uo pipefail
out=${1:-gpu-checks}
budget=${2:-500}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
dev=${DEVICE:-cuda}
start=$SECONDS
val=${VAL:-../shared/data/imagenet-val-100}

step() {  # step NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    [[ -z "${STEPS:-}" || " $STEPS " == *" $name "* ]] || return 0
    local left=$((budget - (SECONDS - start) - 5))
    if ((left < 15)); then echo "=== $name: skipped, budget spent"; return; fi
    ((limit > left)) && limit=$left
    local t0=$SECONDS
    timeout "$limit" bash -c '"$@"' step "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "=== $name: rc=$rc in $((SECONDS - t0)) s (limit $limit s)"
    tail -n "${TAIL:-12}" "$out/$name.log"
}

cli() { $py -m robustbench_rpc "$@"; }
ckpt=robustbench_rpc/assets/checkpoints/symvit_digits.safetensors

environment() {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    $py -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__,
'timm', timm.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
    nproc
}

cli_end_to_end() {
    local r=${RUNS:-/tmp/gpu-check-runs}
    rm -rf "$r"
    set -e
    cli evaluate -m symvit_digits_patch8_32 -c "$ckpt" --suite digits,digits-c --corruptions gaussian_noise,glass_blur,fog \
        --severities 3 --device "$dev" --out "$r/digits-$dev" -q
    cli evaluate -m symvit_digits_patch8_32 -c "$ckpt" --suite digits,digits-c --corruptions gaussian_noise,glass_blur,fog \
        --severities 3 --device cpu --out "$r/digits-cpu" -q
    $py - "$r/digits-$dev" "$r/digits-cpu" <<'EOF'
import sys
from robustbench_rpc.results.store import ResultsStore
a, b = (dict((s.slug(), rec) for s, rec, _ in ResultsStore(p).iter_cells()) for p in sys.argv[1:3])
assert a.keys() == b.keys()
for key in a:
    pa, pb = a[key].sort_values("index")["pred"].to_numpy(), b[key].sort_values("index")["pred"].to_numpy()
    print(f"{key[:70]}: predictions equal on {(pa == pb).mean():.1%} of {len(pa)}")
EOF
    cli attack -m symvit_digits_patch8_32 -c "$ckpt" --dataset digits --attack pgd,fgsm,autoattack --eps 4/255 --limit 64 \
        --device "$dev" --out "$r/attack-$dev" -q
    if [ -d "$val" ]; then
        cli evaluate -m deit_tiny_patch16_224 --suite clean,imagenet-c --imagenet "$val" --imagenet-c generated \
            --corruptions standard --severities 3 --device "$dev" --decode gpu --amp bf16 --workers 4 \
            --out "$r/val-nvjpeg" -q
        cli evaluate -m deit_tiny_patch16_224 --suite clean --imagenet "$val" --device "$dev" --decode cpu \
            --out "$r/val-cpu" -q
        cli table "$r/val-nvjpeg" "$r/val-cpu"
    fi
    ROBUSTBENCH_RPC_BACKEND=gloo torchrun --nproc-per-node 2 -m robustbench_rpc evaluate -m symvit_digits_patch8_32 -c "$ckpt" \
        --suite digits,digits-c --corruptions fog --severities 3 --device "$dev:0" --out "$r/torchrun" -q
    cli evaluate -m symvit_digits_patch8_32 -c "$ckpt" --suite digits,digits-c --corruptions fog --severities 3 \
        --device "$dev:0" --out "$r/single" -q
    $py - "$r/torchrun" "$r/single" <<'EOF'
import sys
from robustbench_rpc.results.store import ResultsStore
a, b = (dict((s.slug(), rec) for s, rec, _ in ResultsStore(p).iter_cells()) for p in sys.argv[1:3])
assert a.keys() == b.keys() and a
for key in a:
    same = a[key].drop(columns=[c for c in a[key].columns if "time" in c]).equals(
        b[key].drop(columns=[c for c in b[key].columns if "time" in c]))
    print(f"torchrun 2 CUDA ranks (gloo) vs single process, {key[:60]}: records equal = {same}")
EOF
}

export out py dev val ckpt
export -f cli environment cli_end_to_end
echo "budget $budget s, device $dev"
step environment 30 environment
step cuda-tests 90 $py -m pytest -q -p no:cacheprovider tests/test_device_decode.py tests/test_symvit_parity.py \
    tests/test_fan_parity.py tests/test_corruptions.py tests/test_corruption_sampling.py -k "cuda or nvjpeg or gpu" -rA
step corruptions-cpu-generator 150 $py benchmarks/corruptions.py --device "$dev" --batch 128 --ref-images 8 \
    --min-time 0.3 --rounds 2
step corruptions-gpu-generator 60 $py benchmarks/corruptions.py --device "$dev" --batch 128 --ref-images 0 \
    --min-time 0.3 --rounds 2 --generator device
step corruption-tests 90 $py -m pytest -q -p no:cacheprovider tests/test_corruptions.py tests/test_corruption_sampling.py
step pipeline 150 $py benchmarks/pipeline.py --device "$dev" --model deit_small_patch16_224 --workers 8 \
    --threads 8 --batch-size 128 --copies 40 --c-images 100 --c-copies 10 --corruptions gaussian_noise,contrast,fog \
    --severity 3
TAIL=40 step cli-end-to-end 120 cli_end_to_end
OMP_NUM_THREADS=2 step full-test-suite 200 $py -m pytest -v -p no:cacheprovider -n 8 tests
echo "total $((SECONDS - start)) s"
