#!/usr/bin/env bash
# GPU checks of burn-peft in two halves: `bundle` here (a build machine with Rust, no GPU
# needed), `run` on the GPU machine (no Rust needed, no network needed).
#
#   scripts/gpu-check.sh bundle [BUNDLE]        # default BUNDLE: target/gpu-bundle
#   scripts/gpu-check.sh run [BUNDLE] [RESULTS] # default RESULTS: $OUT or ./gpu-results
#
# bundle: builds the CLI in release with the `vulkan` and `wgpu` features (target/gpu), strips
#   it into BUNDLE together with the Vulkan loader (Debian's libvulkan1, for machines whose
#   image has none) and the PyTorch + PEFT runner (scripts/peft_runner.py, or
#   $PEFT_RUNNER). The `cuda` feature is added when scripts/setup-cuda-llvm.sh has set up the
#   LLVM that burn's CUDA backend links (see docs/backends.md).
# run: from the repository root, with BUNDLE copied there, the items of PLAN in order:
#   SHAPE:DTYPE  bench-step at that shape (smollm2-135m, llama-1b) and type (f32, bf16, f16),
#                each of METHODS (default "lora full"), r 16 all-linear, batch 8, seq 512, once
#                per RUNS (default "1 2": a process that compiles and autotunes, then one that
#                finds cubecl's kernel and autotune caches in target/environment, so the first
#                step of each is the first-step latency with and without the cache); then
#                the bundle's peft_runner.py on the same card, shape and type (bf16 or f32
#                with TF32 off; SKIP_PEFT=1 skips it);
#   ours:SHAPE:DTYPE, peft:SHAPE:DTYPE  one side only (ours: SHAPE may be an HF config.json,
#                e.g. scripts/shapes/smollm2-135m-10-layers.json);
#   env:VAR=VAL  exports VAR=VAL for the items after it (e.g. env:CUBECL_AUTOTUNE_LEVEL=minimal
#                with env:BURN_PEFT_KERNEL_CACHE=/tmp/fresh for a cold start in a fresh cache);
#   checks:DEV   the numeric checks of scripts/backend_check.py on DEV (fixture eval against
#                PEFT's losses, training trajectories against flex), with CHECK_ARGS.
#   Default PLAN: "smollm2-135m:f32 smollm2-135m:bf16 checks:cuda llama-1b:bf16 llama-1b:f32".
# Every result goes to RESULTS as JSON lines (ours.jsonl, peft.jsonl, checks.jsonl) and log.txt.
# While it runs, nvidia-smi samples the GPU's utilization into gpu-util.csv (every 250 ms).
# Environment: PLAN, BENCH_DEVICE (default cuda), METHODS, RUNS, BENCH_ARGS (more bench-step
# flags, e.g. "--phases"), CHECK_ARGS (e.g. "--quick"),
# SKIP_PEFT=1, STEP_TIMEOUT (seconds per bench process, default 240), BUDGET (seconds after
# which no new item starts and running ones are cut, for leases with a hard limit).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
bundle=${2:-target/gpu-bundle}

case "$mode" in
bundle)
    features=vulkan,wgpu
    # The cuda feature needs scripts/setup-cuda-llvm.sh first (offline LLVM for cubecl).
    if [ -e "${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-23.1.0-4/.tracel-llvm-installed" ]; then
        features=$features,cuda
    fi
    CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000} \
        cargo build --release -p burn-peft-cli --features "$features" --target-dir target/gpu
    rm -rf "$bundle"
    mkdir -p "$bundle/debs"
    # Stripped and xz-compressed (about 5x smaller), to travel light; `run` unpacks it with
    # Python's lzma, which every Python has.
    strip -o "$bundle/burn-peft" target/gpu/release/burn-peft
    xz -T2 -6 "$bundle/burn-peft"
    echo "$features" >"$bundle/features"
    cp "${PEFT_RUNNER:-scripts/peft_runner.py}" "$bundle/peft_runner.py"
    # The Vulkan loader and the GL dispatch libraries that NVIDIA's Vulkan driver
    # (libGLX_nvidia) needs; the driver and its ICD file come with the NVIDIA driver there.
    lists=$(mktemp -d)
    mkdir -p "$lists/partial"
    apt_opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
    apt-get "${apt_opts[@]}" update >/dev/null 2>&1
    (cd "$bundle/debs" && apt-get "${apt_opts[@]}" download libvulkan1 libglvnd0 libgl1 libglx0 libegl1 libgles2 \
        libopengl0 >/dev/null 2>&1)
    rm -rf "$lists"
    du -sh "$bundle"/*
    ;;
run)
    results=${3:-${OUT:-gpu-results}}
    mkdir -p "$results"
    exec > >(tee -a "$results/log.txt") 2>&1
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    if ! ldconfig -p | grep -q libvulkan.so.1 || ! ldconfig -p | grep -q libGLdispatch.so.0; then
        for f in "$bundle"/debs/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    if [ -f "$icd" ] && [ -z "${VK_DRIVER_FILES:-}" ]; then export VK_DRIVER_FILES=$icd; fi
    step_timeout=${STEP_TIMEOUT:-240}
    if [ ! -x "$bundle/burn-peft" ]; then
        python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
            "$bundle/burn-peft.xz" "$bundle/burn-peft"
        chmod +x "$bundle/burn-peft"
    fi
    # CUDA: NVRTC and the driver are found through CUDA_PATH.
    if [ -z "${CUDA_PATH:-}" ] && [ -d /usr/local/cuda ]; then export CUDA_PATH=/usr/local/cuda; fi
    bin="$bundle/burn-peft"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader \
            -lms 250 >"$results/gpu-util.csv" 2>/dev/null &
        sampler=$!
        trap 'kill $sampler 2>/dev/null || true' EXIT
    fi
    # Everything below stops starting new work BUDGET seconds after this line, so that a lease
    # with a hard limit still brings back what finished.
    deadline=$(($(date +%s) + ${BUDGET:-86400}))
    limited() { # MAX CMD...: timeout min(MAX, time left), or skip when under 30 s are left
        local max=$1 left=$((deadline - $(date +%s)))
        shift
        if [ "$left" -lt 30 ]; then echo "skipped, budget spent: ${*:1:3}" >&2; return 1; fi
        timeout "$((left < max ? left : max))" "$@"
    }
    ours() { # shape dtype: bench-step for each method, RUNS processes each
        for method in ${METHODS:-lora full}; do
            for run in ${RUNS:-1 2}; do
                echo "== bench-step ${BENCH_DEVICE:-cuda} $1 $method $2 (process $run) at $(date +%T.%N)"
                # shellcheck disable=SC2086
                line=$(limited "$step_timeout" "$bin" bench-step --device "${BENCH_DEVICE:-cuda}" \
                    --shape "$1" --method "$method" --r 16 --batch-size 8 --seq-len 512 \
                    --steps 5 --warmup 2 --dtype "$2" ${BENCH_ARGS:-} --json) || { echo "bench-step: exit $?"; continue; }
                echo "$line"
                echo "${line%\}},\"run\":\"$run\"}" >>"$results/ours.jsonl"
            done
        done
    }
    peft() { # shape dtype: PyTorch + PEFT on the same card
        [ -n "${SKIP_PEFT:-}" ] && return 0
        echo "== PyTorch + PEFT $1 $2"
        limited 300 python3 "$bundle/peft_runner.py" --device cuda \
            --shapes "$(echo "$1" | sed 's/smollm2-135m/smol/; s/llama-1b/1b/')" \
            --methods "$(echo "${METHODS:-lora full}" | tr ' ' ',')" --dtype "$2" \
            --batch 8 --seq 512 --steps 10 --warmup 3 --out "$results/peft.jsonl" \
            || echo "peft_runner: exit $?"
    }
    # PLAN: items in order; SHAPE:DTYPE runs ours then PEFT at that shape and type,
    # checks:DEVICE runs scripts/backend_check.py there with CHECK_ARGS.
    for item in ${PLAN:-smollm2-135m:f32 smollm2-135m:bf16 checks:cuda llama-1b:bf16 llama-1b:f32}; do
        case "$item" in
        checks:*)
            echo "== numeric checks on ${item#checks:}"
            # shellcheck disable=SC2086
            limited 600 python3 scripts/backend_check.py --bin "$bin" --device "${item#checks:}" \
                ${CHECK_ARGS:-} --out "$results/checks.jsonl" || echo "checks: exit $?"
            ;;
        env:*=*)
            echo "== export ${item#env:}"
            export "${item#env:}"
            ;;
        ours:*:* | peft:*:*)
            spec=${item#*:}
            "${item%%:*}" "${spec%:*}" "${spec##*:}"
            ;;
        *:*)
            ours "${item%%:*}" "${item#*:}"
            peft "${item%%:*}" "${item#*:}"
            ;;
        *)
            echo "unknown PLAN item '$item' (SHAPE:DTYPE, ours:SHAPE:DTYPE, peft:SHAPE:DTYPE, env:VAR=VAL or checks:DEVICE)" >&2
            exit 2
            ;;
        esac
    done
    du -sh target/environment 2>/dev/null || true
    ;;
*)
    echo "usage: $0 bundle|run [BUNDLE] [RESULTS]" >&2
    exit 2
    ;;
esac
