"""Condition fidelity of sampled frames on the synthetic data: what each frame shows against what the
real frame with the same measurements shows (thinfilm.synthetic.fidelity), feature by feature, and
their texture against the real frames'.

    python -m thinfilm.sample --ckpt RUN --conditions data/synthetic/test.csv --out OUT
    python experiments/fidelity.py --samples OUT --reference data/synthetic/test.csv
Rows of OUT/manifest.csv are matched to the reference CSV by their condition values.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from thinfilm.data import load_frame, read_table, resolve_all
from thinfilm.synthetic import ROI, fidelity


def score(samples: str | Path, reference: str | Path, root: str = "") -> dict[str, float]:
    """fidelity() of the frames in `samples` (a sample CLI folder) against the reference CSV's frames."""
    samples = Path(samples)
    manifest = pd.read_csv(samples / "manifest.csv")
    columns = [c for c in manifest.columns if c not in ("file", "seed")]
    table = read_table(reference, columns)
    files = resolve_all(table, root)
    generated = np.stack([np.asarray(Image.open(samples / f)) for f in manifest.file])
    res = generated.shape[-1]
    match = [int(np.argmin(np.abs(table.values - row).sum(1))) for row in manifest[columns].to_numpy()]
    real = np.stack([load_frame(files[i], ROI, res) for i in match])
    return fidelity(generated, real)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--root", default="")
    args = p.parse_args()
    print(json.dumps({k: round(v, 4) for k, v in score(args.samples, args.reference, args.root).items()}))


if __name__ == "__main__":
    main()
