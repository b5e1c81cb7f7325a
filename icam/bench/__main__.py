"""`python -m icam.bench NAME [options]`: speed, memory and storage against naive implementations.

Each benchmark lives in its own module `icam.bench.<name>` with a `main(argv)` function.
"""

import importlib
import sys

BENCHMARKS = {
    "fsl": "FSL forward+backward: windowed vs all-pairs (time, peak memory, accuracy)",
    "contour": "contour F over a VOC-size set: fast vs reference procedure",
    "train": "training throughput and peak memory of one stage (--compare: fp32 and bf16)",
    "infer": "CAM inference: fp32 against bf16 (time, labels that agree)",
    "gpu": "the GPU check: the paper preset's stages in fp32 and bf16, trials packed per GPU",
    "storage": "bytes per image of stored CAMs: naive float32 vs ours; a trial, a study",
    "compaction": "J and F of every stage: products stored as float32 vs ours (12-bit)",
    "randomwalk": "random-walk labels: sparse transition vs the dense reference (time)",
    "depthwise": "Lite0's depthwise convolutions: PyTorch's CPU backward vs ours (time)",
    "pcm": "the PCM at inference: affinities in cache-sized blocks vs the whole matrix (time)",
    "allocator": "CAM inference and training: glibc's malloc vs freed memory kept (time)",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHMARKS:
        print("usage: python -m icam.bench {" + ",".join(BENCHMARKS) + "} [options]")
        for name, text in BENCHMARKS.items():
            print(f"  {name:8s} {text}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(f"icam.bench.{argv[0]}")
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
