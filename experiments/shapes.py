"""How exactly real frames carry the marks at each frame shape: the simulator's exact reading (`measure`) of
the real frames of an evaluation set, resized to each shape, against their true x5 / x6 (original pixels).
The floor a generated frame of that shape is compared with (docs/experiments.md#precision, "shapes").

    python experiments/shapes.py --data data/eval/all.csv --shapes 64 32x128 32x96 48x160 128
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thinfilm.data import load_frame, read_table, resolve_all  # noqa: E402
from thinfilm.synthetic import ROI, measure  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a seed-format CSV of built-in frames (e.g. an evaluation set)")
    p.add_argument("--shapes", nargs="+", default=["64", "32x128", "32x96", "48x160", "128"],
                   help="a side, or HEIGHTxWIDTH")
    args = p.parse_args()
    table = read_table(args.data, [f"x{i}" for i in range(1, 9)])
    files = resolve_all(table)
    for text in args.shapes:
        size = [int(v) for v in text.split("x")] if "x" in text else int(text)
        shown = measure(np.stack([load_frame(f, ROI, size) for f in files]))
        error = shown[:, :2] - table.values[:, 4:6]
        h, w = (size, size) if isinstance(size, int) else size
        rmse = np.sqrt((error ** 2).mean(0))
        print(json.dumps({"shape": f"{h}x{w}", "pixels": h * w, "rmse_x5": round(float(rmse[0]), 2),
                          "rmse_x6": round(float(rmse[1]), 2)}), flush=True)


if __name__ == "__main__":
    main()
