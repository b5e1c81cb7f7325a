"""Linear probe: how well a frozen backbone's features separate a dataset's image labels.

A backbone must keep what the target data's classes are told by. The probe
trains a logistic layer on the average- and max-pooled features of the train split's images
(multi-label, from the masks) and prints the val AUC of each class, for the given weights and
for freshly initialised features as a yardstick.

    python analysis/probe.py --data-root DIR [--backbone lite0] [--weights lite0-imagenet]
        [--output-stride 8]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def pooled_features(backbone: torch.nn.Module, layout, split: str):
    """(N × 2C average- and max-pooled features, N × 20 labels) of a split's images."""
    from icam.data.transforms import normalize
    from icam.data.voc import load_image

    labels = layout.labels(split)
    rows = []
    with torch.no_grad():
        for image_id in layout.ids(split):
            f = backbone(normalize(load_image(layout.image_path(image_id)))[None])
            rows.append(torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1))
    return torch.cat(rows), torch.stack([torch.from_numpy(labels[i]) for i in layout.ids(split)])


def auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """P(score of a positive > score of a negative); ties count half."""
    pos, neg = scores[positive], scores[~positive]
    greater = (pos[:, None] > neg[None]).float() + 0.5 * (pos[:, None] == neg[None]).float()
    return float(greater.mean())


def probe_aucs(train: tuple, val: tuple, steps: int = 300, seed: int = 0) -> dict[int, float]:
    """Val AUC per class (index into the label vector) of a logistic probe fitted on `train`;
    classes without positives and negatives in both splits are left out."""
    (x_train, y_train), (x_val, y_val) = train, val
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    classes = [c for c in range(y_train.shape[1])
               if 0 < y_train[:, c].sum() < len(y_train) and 0 < y_val[:, c].sum() < len(y_val)]
    generator = torch.Generator().manual_seed(seed)
    probe = torch.nn.Linear(x_train.shape[1], len(classes))
    with torch.no_grad():
        probe.weight.normal_(0, 0.01, generator=generator)
        probe.bias.zero_()
    optimizer = torch.optim.Adam(probe.parameters(), 1e-2, weight_decay=1e-3)
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(probe(x_train),
                                                                    y_train[:, classes])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        scores = probe(x_val)
    return {c: auc(scores[:, k], y_val[:, c] > 0) for k, c in enumerate(classes)}


def main(argv=None) -> int:
    from icam.data.voc import VOCLayout
    from icam.models import BACKBONES, build_backbone
    from icam.models.weights import load_pretrained

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--backbone", default="lite0", choices=BACKBONES)
    parser.add_argument("--weights", default="lite0-imagenet")
    parser.add_argument("--output-stride", type=int, default=8)
    args = parser.parse_args(argv)
    layout = VOCLayout(args.data_root)
    torch.manual_seed(0)
    for name in ("random initialisation", args.weights):
        backbone = build_backbone(args.backbone, args.output_stride).eval()
        if name == args.weights:
            load_pretrained(backbone, args.weights, strict=False)
        aucs = probe_aucs(pooled_features(backbone, layout, "train"),
                          pooled_features(backbone, layout, "val"))
        cells = ", ".join(f"class {c + 1}: {v:.2f}" for c, v in aucs.items())
        print(f"{name}: mean val AUC {np.mean(list(aucs.values())):.2f} ({cells})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
