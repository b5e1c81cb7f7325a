"""Freed memory kept in the process, so large tensors stop page-faulting in fresh pages.

glibc's malloc serves blocks above its mmap threshold (128 KiB, rising with use to at most
32 MiB) with fresh mmap'd pages and gives them back on free, and trims the top of its heap
once enough of it is free. A CPU training step or a CAM inference allocates and frees tensors
of several MiB (the PCM's affinities of a training batch are 32 MiB) at every call, so each
call makes the kernel fault in and zero those pages again. `MALLOC_ENV`, given to Ray's worker
processes (`icam.harness.start_ray`), keeps freed blocks for reuse, as PyTorch's CUDA caching
allocator does on a GPU: CAM inference and training steps run about a fifth faster on 2 cores
(`python -m icam.bench allocator`) and the arithmetic, so every result, is unchanged. A worker
keeps its peak memory until it exits. glibc reads these variables when a process starts (its
runtime `mallopt` measured slower for inference); other C libraries ignore them.
"""

MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(256 << 20),  # blocks up to 256 MiB come from the heap
    "MALLOC_TRIM_THRESHOLD_": str(1 << 40),  # and the heap is never trimmed
    "MALLOC_TOP_PAD_": str(64 << 20),  # it grows 64 MiB at a time
}
