"""Thread settings of the PyTorch baselines, applied before torch is imported.

Debian's torch 1.13 runs ATen's intra-op work on a libgomp (OpenMP) pool and its matrix products
on the pthread build of OpenBLAS, which keeps a second pool. Left alone, libgomp's idle workers
spin between parallel regions and take the cores from OpenBLAS' workers; on the 2-core machine
the baseline forward ran about 1.5x slower that way and a 15-token forward several times slower.
So every baseline calls configure(N) before importing torch or numpy (numpy loads the same
OpenBLAS), which sets, unless the environment already sets them:

    OMP_WAIT_POLICY=PASSIVE   idle OpenMP workers sleep instead of spinning
    OMP_NUM_THREADS=N  OPENBLAS_NUM_THREADS=N  MKL_NUM_THREADS=N

and then start(N) imports torch and calls torch.set_num_threads(N), N being chesslens' thread
count. OpenBLAS keeps N threads because torch does not split a matrix product across its own
pool: OPENBLAS_NUM_THREADS=1 made the forward about 1.6x slower. A value already in the
environment wins (an A/B run is `OPENBLAS_NUM_THREADS=1 bench_forward ...`); describe() says
what the process actually ran with, and the benchmarks print it.
"""

import os

VARIABLES = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def configure(threads):
    """Set the thread variables for `threads` threads; must run before torch/numpy load."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for name in VARIABLES[1:]:
        os.environ.setdefault(name, str(threads))


def start(threads):
    """Import torch with `threads` intra-op threads; returns the module."""
    import torch

    torch.set_num_threads(threads)
    return torch


def _blas_libraries():
    """Paths of the BLAS libraries mapped into this process (OpenBLAS, MKL, reference BLAS)."""
    found = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                name = os.path.basename(path)
                if ("blas" in name or "mkl" in name) and path not in found:
                    found.append(path)
    except OSError:
        pass
    return found


def describe(threads):
    """One line: torch version, parallel backend, BLAS libraries, the variables and thread counts
    in effect, and the autograd mode the baselines run under."""
    import torch

    env = " ".join(f"{n}={os.environ.get(n, '(unset)')}" for n in VARIABLES)
    blas = ",".join(_blas_libraries()) or "none found"
    return (
        f"torch {torch.__version__}; BLAS {blas}; {env}; torch.set_num_threads({threads}) -> "
        f"get_num_threads() {torch.get_num_threads()}; torch.inference_mode; weights prepared once"
    )
