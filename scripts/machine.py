"""The machine a benchmark ran on, as one line: CPU model, cores, the SIMD features that decide
which kernels run (gemm's AVX-512 ones among them). Imported by the benchmark scripts, which
print it above their tables, since a claim holds only for the CPU it was measured on."""

import os
import platform

SIMD = ["sse4_2", "avx2", "fma", "avx512f", "avx512bw", "avx512_bf16", "avx512_fp16",
        "amx_tile", "amx_bf16", "asimd", "sve"]


def describe():
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    simd = " ".join(f for f in SIMD if f in flags) or "unknown"
    return f"{model}, {cores} cores, SIMD: {simd}"


if __name__ == "__main__":
    print(describe())
