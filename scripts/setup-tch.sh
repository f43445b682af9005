#!/usr/bin/env bash
# Sets up the LibTorch backend (`--features tch`, `--device tch` / `tch:cuda:N`).
#
# burn-tch 0.22.1 (tch 0.22 / torch-sys 0.22) is built against PyTorch 2.9.0's libtorch. The
# supported way here is a Python virtual environment with a full `pip install torch==2.9.0`
# (about 4 GB: the wheel's CUDA libraries need the NVIDIA wheels it depends on, and the torch
# wheel alone leaves them unresolved). torch-sys then finds libtorch through
# `LIBTORCH_USE_PYTORCH=1` and the `python3` first on PATH.
#
#   scripts/setup-tch.sh [VENV_DIR]        # default: $BURN_PEFT_CACHE/torch-2.9.0 or
#                                          #          ~/.cache/burn-peft/torch-2.9.0
#   source <(scripts/setup-tch.sh --env [VENV_DIR])
#   cargo build --release -p burn-peft-cli --features tch --target-dir target/tch
#   target/tch/release/burn-peft bench-step --shape smollm2-135m --method lora --device tch
#
# The env lines put the venv first on PATH (for the build) and its torch/lib on
# LD_LIBRARY_PATH (for running the binary).
set -euo pipefail
print_env=0
if [[ "${1:-}" == "--env" ]]; then
    print_env=1
    shift
fi
venv="${1:-${BURN_PEFT_CACHE:-$HOME/.cache/burn-peft}/torch-2.9.0}"
if [[ ! -x "$venv/bin/python3" ]] || ! "$venv/bin/python3" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.9.0")' 2>/dev/null; then
    echo "setting up PyTorch 2.9.0 in $venv (about 4 GB)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet torch==2.9.0 >&2
fi
lib="$("$venv/bin/python3" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)"
if [[ $print_env == 1 ]]; then
    echo "export PATH=\"$venv/bin:\$PATH\""
    echo "export LIBTORCH_USE_PYTORCH=1"
    echo "export LD_LIBRARY_PATH=\"$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
else
    echo "PyTorch 2.9.0 ready in $venv; for the build and the binary:" >&2
    echo "  source <($0 --env $venv)" >&2
fi
