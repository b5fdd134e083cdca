"""Print the ATEN_CPU_CAPABILITY levels this CPU can run, lowest first (`make test-numerics` loops on them).

PyTorch dispatches its CPU kernels to the best level the CPU has; setting ATEN_CPU_CAPABILITY to a lower
one makes it run the kernels another CI machine (without AVX-512, or without AVX2) would run.
``--lower``: only the levels below the best one (CI: `make test` already runs everything at the best).
"""

import sys

import torch

X86 = ["default", "avx2", "avx512"]

best = torch.backends.cpu.get_cpu_capability().lower()
levels = X86[: X86.index(best) + 1] if best in X86 else ["default", best]
print(" ".join(levels[:-1] if "--lower" in sys.argv[1:] else levels))
