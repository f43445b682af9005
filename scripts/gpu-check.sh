#!/usr/bin/env bash
# GPU checks of burn-peft in two halves: `bundle` here (a build machine with Rust, no GPU
# needed), `run` on the GPU machine (no Rust needed, no network needed).
#
#   scripts/gpu-check.sh bundle [BUNDLE]        # default BUNDLE: target/gpu-bundle
#   scripts/gpu-check.sh run [BUNDLE] [RESULTS] # default RESULTS: $OUT or ./gpu-results
#
# bundle: builds the CLI in release with the `vulkan` and `wgpu` features (target/gpu), strips
#   it into BUNDLE together with the Vulkan loader (Debian's libvulkan1, for machines whose
#   image has none) and PEFT's anchor benchmark (../shared/anchors/peft_bench.py, or
#   $PEFT_BENCH). The `cuda` feature is added when scripts/setup-cuda-llvm.sh has set up the
#   LLVM that burn's CUDA backend links (see the README).
# run: from the repository root, with BUNDLE copied there:
#   1. the numeric checks of scripts/backend_check.py on each GPU device (fixture eval against
#      PEFT's losses, training trajectories against flex), tolerance 1e-3;
#   2. bench-step, LoRA r16 all-linear and full fine-tuning, batch 8, seq 512, f32, at the
#      SHAPES (default "smollm2-135m"; llama-1b too with SHAPES="smollm2-135m llama-1b"), each
#      twice: a cold process (kernel compilation and autotuning, first step reported apart) and
#      a warm one (cubecl's persistent cache in target/environment, written by the first);
#   3. peft_bench.py on the same card and shapes, f32 (TF32 off) and bf16.
# Every result goes to RESULTS as JSON lines (ours.jsonl, peft.jsonl, checks.jsonl) and log.txt.
# Environment: DEVICES (default "vulkan"), SHAPES, METHODS (default "lora full"), DTYPES (default "f32 bf16"),
# SKIP_CHECKS=1, CHECK_ARGS (e.g. "--quick"), SKIP_PEFT=1, RUNS (default "cold warm"),
# STEP_TIMEOUT (seconds per bench process, default 240).
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
    cp "${PEFT_BENCH:-../shared/anchors/peft_bench.py}" "$bundle/peft_bench.py"
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
    bin_for() { echo "$bundle/burn-peft"; }
    for device in ${DEVICES:-vulkan}; do
        bin=$(bin_for "$device")
        if [ -z "${SKIP_CHECKS:-}" ]; then
            echo "== numeric checks on $device"
            python3 scripts/backend_check.py --bin "$bin" --device "$device" ${CHECK_ARGS:-} \
                --out "$results/checks.jsonl" || echo "checks on $device: some failed"
        fi
    done
    if [ -z "${SKIP_PEFT:-}" ]; then
        for dtype in f32 bf16; do
            echo "== PyTorch + PEFT, $dtype"
            shapes=$(echo "${SHAPES:-smollm2-135m}" | sed 's/smollm2-135m/smol/; s/llama-1b/1b/' | tr ' ' ',')
            timeout 300 python3 "$bundle/peft_bench.py" --device cuda --shapes "$shapes" \
                --methods "$(echo "${METHODS:-lora full}" | tr ' ' ',')" --dtype "$dtype" \
                --batch 8 --seq 512 --steps 10 --warmup 3 --out "$results/peft.jsonl" \
                || echo "peft_bench $dtype: exit $?"
        done
    fi
    for device in ${DEVICES:-vulkan}; do
        bin=$(bin_for "$device")
        for shape in ${SHAPES:-smollm2-135m}; do
            for method in ${METHODS:-lora full}; do
              for dtype in ${DTYPES:-f32 bf16}; do
                for run in ${RUNS:-cold warm}; do
                    echo "== bench-step $device $shape $method $dtype ($run)"
                    line=$(timeout "$step_timeout" "$bin" bench-step --device "$device" \
                        --shape "$shape" --method "$method" --r 16 --batch-size 8 \
                        --seq-len 512 --steps 5 --warmup 2 --dtype "$dtype" --json) \
                        || { echo "bench-step: exit $?"; continue; }
                    echo "$line"
                    echo "${line%\}},\"run\":\"$run\"}" >>"$results/ours.jsonl"
                done
              done
            done
        done
    done
    ;;
*)
    echo "usage: $0 bundle|run [BUNDLE] [RESULTS]" >&2
    exit 2
    ;;
esac
