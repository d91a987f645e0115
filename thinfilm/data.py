"""The data pipeline: CSV table, path rebasing, ROI crop + resize, condition normaliser, frame cache.

A split is a CSV in the researcher's format (`filepath` + condition columns). Frames are cropped to
`data.roi`, resized (box filter = area average, antialiased) to `data.resolution` (a square, or height x
width: `config.frame_size`) and kept as uint8 in a memory-mapped cache, so no epoch after the first decodes
a TIFF.

Its command line is thinfilm.prepare (`bash run.sh data synth | split | inspect`, or `python -m
thinfilm.prepare`), which imports this module and nothing imports back.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from thinfilm import LEVELS, UserError
from thinfilm.config import DataConfig, hw

CACHE_VERSION = 1
SYNTHETIC_VERSION = 2             # bump when the simulator draws other frames for the same settings


class DataError(UserError):
    """A CSV, frame or folder that cannot be used as given."""


# ---------------------------------------------------------------------------------------- table
@dataclass
class Table:
    """One split: frame paths as written in the CSV and the condition values, [N, C] float64."""
    csv: Path
    paths: list[str]
    values: np.ndarray
    columns: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def read_table(csv: str | Path, columns: Sequence[str], need_paths: bool = True) -> Table:
    """Read a seed-format CSV; every problem is a `DataError` naming the file, line and column."""
    csv = Path(csv)
    if not csv.is_file():
        raise DataError(f"{csv}: CSV not found (set data.train_csv / data.test_csv, or run "
                        f"`bash run.sh data synth` for the built-in data)")
    try:
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{csv}: not a readable CSV ({str(err).splitlines()[0]})") from None
    frame.columns = [c.strip() for c in frame.columns]
    wanted = (["filepath"] if need_paths else []) + list(columns)
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(f"{csv}: missing column(s) {', '.join(missing)}; the header has "
                        f"{', '.join(frame.columns)} (set data.columns to this dataset's condition columns)")
    if len(frame) == 0:
        raise DataError(f"{csv}: no rows below the header")
    values = frame[list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        rows, cols = np.nonzero(bad)
        where = [f"line {r + 2} column {columns[c]} ({frame.iloc[r][columns[c]]!r})"
                 for r, c in zip(rows[:5], cols[:5])]
        more = f" and {bad.sum() - 5} more" if bad.sum() > 5 else ""
        raise DataError(f"{csv}: empty, NaN or non-numeric condition values at {'; '.join(where)}{more}")
    paths = frame["filepath"].tolist() if need_paths else [""] * len(frame)
    return Table(csv, paths, values, list(columns))


# ----------------------------------------------------------------------------------- rebasing
def _parts(path: str) -> list[str]:
    """Split a path written on any OS into its components, dropping a drive or UNC prefix."""
    return [p for p in re.split(r"[\\/]+", PureWindowsPath(path).as_posix().split(":", 1)[-1]) if p]


def is_absolute(path: str) -> bool:
    return path.startswith(("/", "\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", path))


def resolve(path: str, root: Path) -> Path | None:
    """The file `path` names under `root`: a relative path joins root; an absolute path from another
    machine resolves to the longest trailing part of it that exists under root. None if not found."""
    if is_absolute(path) and Path(path).is_file():
        return Path(path)
    parts = _parts(path)
    if not is_absolute(path):
        candidate = root.joinpath(*parts)
        return candidate if candidate.is_file() else None
    for k in range(len(parts), 0, -1):
        candidate = root.joinpath(*parts[-k:])
        if candidate.is_file():
            return candidate
    return None


def resolve_all(table: Table, root: str | Path = "") -> list[Path]:
    """Resolve every frame of a table, or raise one error listing all the missing ones."""
    base = Path(root) if root else table.csv.parent
    if root and not base.is_dir():
        raise DataError(f"data.root {base} is not a folder")
    found = [resolve(p, base) for p in table.paths]
    missing = [(i, p) for i, (p, f) in enumerate(zip(table.paths, found)) if f is None]
    if missing:
        first = "; ".join(f"line {i + 2}: {p}" for i, p in missing[:3])
        raise DataError(f"{table.csv}: {len(missing)} of {len(table)} frames not found under {base} "
                        f"(e.g. {first}); set data.root to the folder that holds the series folders "
                        f"(e.g. the one containing {'/'.join(_parts(missing[0][1])[-2:-1]) or 'the frames'})")
    return found  # type: ignore[return-value]


# ------------------------------------------------------------------------------------ frames
def load_frame(path: Path, roi: Sequence[int], resolution: int | Sequence[int]) -> np.ndarray:
    """Crop `roi` = (top, left, height, width) from a frame and resize it to `resolution` (a side, or
    [height, width]): uint8 [H, W].

    8- and 16-bit (and float) grayscale are scaled by their full range, RGB is converted to luma.
    """
    try:
        image = Image.open(path)
        image.load()
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read the frame ({err})") from None
    top, left, height, width = roi
    if top < 0 or left < 0 or top + height > image.height or left + width > image.width:
        raise DataError(f"{path}: data.roi {list(roi)} (top, left, height, width) lies outside the "
                        f"frame of {image.width}x{image.height} px (width x height); fix data.roi")
    image = image.crop((left, top, left + width, top + height))
    if image.mode in ("RGB", "RGBA", "P", "LA"):
        image = image.convert("L")
    array = np.asarray(image)
    if array.dtype == np.uint8:
        scale = 255.0
    elif array.dtype in (np.uint16, np.dtype(">u2"), np.dtype("<u2")):
        scale = 65535.0
    elif array.dtype == np.bool_:
        scale = 1.0
    elif np.issubdtype(array.dtype, np.integer):
        scale = float(np.iinfo(array.dtype).max)
    else:
        scale = 1.0                                     # float frames: taken to be in [0, 1]
    h, w = hw(resolution)
    small = Image.fromarray(array.astype(np.float32) * (255.0 / scale)).resize((w, h), Image.Resampling.BOX)
    return np.clip(np.asarray(small), 0, 255).round().astype(np.uint8)


def to_network(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W] -> float [..., 1, H, W] in [-1, 1] (the network's space)."""
    x = frames if isinstance(frames, torch.Tensor) else torch.tensor(np.asarray(frames))   # copied: memmaps are
    # read-only, which torch warns about
    return (x.float() / LEVELS - 1).unsqueeze(-3)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [..., 1, H, W] in [-1, 1] -> uint8 [..., H, W]."""
    return ((x.squeeze(-3).clamp(-1, 1) + 1) * LEVELS).round().to(torch.uint8).cpu().numpy()


def stretch(x: torch.Tensor, cond: torch.Tensor, s: torch.Tensor, columns: torch.Tensor,
            shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zoom augmentation: frames [B, 1, R, R] stretched horizontally by s [B] about their centre
    column (bicubic, edge columns repeated), and the normalised conditions of `columns` (horizontal
    pixel distances) scaled with them: raw v -> s v, i.e. z -> s z + (s - 1) shift / scale, where
    `shift` holds shift / scale of those columns. A camera at another magnification, so distances in
    pixels vary without the strains changing (d0 scales too): the network has to read them."""
    theta = torch.zeros(len(s), 2, 3, dtype=torch.float64, device=x.device)
    theta[:, 0, 0], theta[:, 1, 1] = 1 / s.double(), 1            # source column = column / s
    # the grid in float64, then rounded: the same source positions as dividing in the frames' dtype
    grid = F.affine_grid(theta, list(x.shape), align_corners=False).to(x.dtype)
    x = F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False).clamp(-1, 1)
    cond = cond.clone()
    cond[:, columns] = cond[:, columns] * s[:, None] + (s[:, None] - 1) * shift
    return x, cond


# ------------------------------------------------------------------------------------- cache
def size_label(resolution: int | Sequence[int]) -> str:
    """'64' for a square (the caches of earlier versions keep their names), '32x96' for height x width."""
    h, w = hw(resolution)
    return f"{h}" if h == w else f"{h}x{w}"


def _cache_key(table: Table, files: list[Path], roi: Sequence[int], resolution: int | Sequence[int]) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION} {list(roi)} {size_label(resolution)}".encode())
    h.update(table.csv.read_bytes())
    for f in files:
        st = f.stat()
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def cached_frames(table: Table, files: list[Path], roi: Sequence[int], resolution: int | Sequence[int],
                  cache_dir: str | Path, progress: bool = True) -> np.ndarray:
    """The split's frames as uint8 [N, H, W], memory-mapped from a cache built on first use.

    The key covers the CSV's bytes, every frame's path, size and mtime, the ROI and the resolution:
    any change builds a new cache (and removes that CSV's stale one) instead of reusing it. The name
    carries the CSV's location, so two datasets' train.csv share a cache folder without evicting each other.
    """
    from tqdm import tqdm

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    where = hashlib.sha1(str(table.csv.resolve()).encode()).hexdigest()[:6]
    stem = f"{table.csv.stem}-{where}-{size_label(resolution)}px-"
    path = cache_dir / f"{stem}{_cache_key(table, files, roi, resolution)}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    frames = np.empty((len(files), *hw(resolution)), np.uint8)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        jobs = pool.map(lambda f: load_frame(f, roi, resolution), files)
        for i, frame in enumerate(tqdm(jobs, total=len(files), desc=f"caching {table.csv.name}",
                                       unit="frame", disable=not progress)):
            frames[i] = frame
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, frames)
    os.replace(tmp, path)
    for stale in cache_dir.glob(f"{stem}*.npy"):
        if stale != path and ".tmp" not in stale.name:
            stale.unlink(missing_ok=True)
    return np.load(path, mmap_mode="r")


class Images(NamedTuple):
    """Frames read for judging: names as listed, uint8 [N, H, W], raw conditions [N, C] (NaN = not given)."""
    names: list[str]
    frames: np.ndarray
    values: np.ndarray


def read_images(csv: str | Path, columns: Sequence[str], roi: Sequence[int], resolution: int | Sequence[int],
                root: str = "", need_values: bool = False, cache_dir: str | Path | None = None) -> Images:
    """Frames listed by a sample manifest (`file` column: PNGs in the network's ROI space, relative
    to the manifest) or by a seed-format CSV (`filepath`: camera frames, cropped and resized like training
    data, cached under `cache_dir` when given). need_values: every column must be present and finite."""
    csv = Path(csv)
    if not csv.is_file():
        raise DataError(f"{csv}: CSV not found")
    header = pd.read_csv(csv, nrows=0).columns.str.strip().tolist()
    if "file" not in header:
        table = read_table(csv, columns if need_values else [c for c in columns if c in header])
        files = resolve_all(table, root)
        frames = (cached_frames(table, files, roi, resolution, cache_dir, progress=False) if cache_dir else
                  np.stack([load_frame(f, roi, resolution) for f in files]))
        values = np.full((len(table), len(columns)), np.nan)
        for j, c in enumerate(columns):
            if c in table.columns:
                values[:, j] = table.values[:, table.columns.index(c)]
        return Images(table.paths, np.asarray(frames), values)
    manifest = pd.read_csv(csv, skipinitialspace=True)
    manifest.columns = [c.strip() for c in manifest.columns]
    missing = [c for c in columns if c not in manifest.columns]
    if need_values and missing:
        raise DataError(f"{csv}: missing column(s) {', '.join(missing)}; the header has {', '.join(header)} "
                        f"(the model reads {', '.join(columns)})")
    values = np.stack([pd.to_numeric(manifest[c], errors="coerce").to_numpy(np.float64) if c in manifest.columns
                       else np.full(len(manifest), np.nan) for c in columns], axis=1)
    if need_values and not np.isfinite(values).all():
        r, c = np.argwhere(~np.isfinite(values))[0]
        raise DataError(f"{csv}: line {r + 2} column {columns[c]} is empty or not a number: every frame judged "
                        "needs all its conditions (sample with --conditions, not --values)")
    frames = []
    for i, name in enumerate(manifest.file.astype(str)):
        path = csv.parent / name
        if not path.is_file():
            raise DataError(f"{csv}: line {i + 2}: frame {path} not found")
        image = Image.open(path)
        if image.size != hw(resolution)[::-1]:
            raise DataError(f"{path}: {image.width}x{image.height} px (width x height), but the model reads "
                            f"{hw(resolution)[1]}x{hw(resolution)[0]} frames (data.resolution); sample at that size")
        frames.append(np.asarray(image.convert("L")))
    return Images(manifest.file.astype(str).tolist(), np.stack(frames), values)


# -------------------------------------------------------------------------------- normaliser
@dataclass
class Normalizer:
    """Physical <-> normalised conditions: (v - shift) / scale per column, fitted on training data.

    zscore: shift = mean, scale = std (population std; the researcher's loader divided by the mean).
    minmax: maps the training range to [-1, 1]. none: identity. A constant column gets scale 1, so
    it maps to 0 instead of dividing by zero. `low`/`high` keep the training range for warnings.
    """
    kind: str
    columns: list[str]
    shift: list[float]
    scale: list[float]
    low: list[float]
    high: list[float]

    @classmethod
    def fit(cls, values: np.ndarray, columns: Sequence[str], kind: str = "zscore") -> "Normalizer":
        values = np.asarray(values, np.float64)
        low, high = values.min(0), values.max(0)
        if kind == "zscore":
            shift, scale = values.mean(0), values.std(0)
        elif kind == "minmax":
            shift, scale = (high + low) / 2, (high - low) / 2
        elif kind == "none":
            shift, scale = np.zeros(values.shape[1]), np.ones(values.shape[1])
        else:
            raise DataError(f"data.normalize: unknown kind {kind!r}; use zscore, minmax or none")
        scale = np.where(scale > 1e-12 * np.maximum(np.abs(shift), 1), scale, 1.0)
        return cls(kind, list(columns), shift.tolist(), scale.tolist(), low.tolist(), high.tolist())

    def encode(self, values: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Physical [B, C] -> normalised float32 [B, C] (NaN, an unknown field, stays NaN)."""
        v = torch.tensor(np.asarray(values, np.float64))
        return ((v - torch.tensor(self.shift, dtype=torch.float64)) /
                torch.tensor(self.scale, dtype=torch.float64)).float()

    def decode(self, values: torch.Tensor) -> np.ndarray:
        """Normalised [B, C] -> physical float64 [B, C]."""
        return values.double().cpu().numpy() * np.array(self.scale) + np.array(self.shift)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("kind", "columns", "shift", "scale", "low", "high")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Normalizer":
        return cls(**{k: d[k] for k in ("kind", "columns", "shift", "scale", "low", "high")})


# ------------------------------------------------------------------------------------ splits
@dataclass
class Split:
    """A split ready for training: uint8 frames [N, H, W] and normalised conditions [N, C]."""
    table: Table
    frames: np.ndarray
    conditions: torch.Tensor


def ensure_synthetic(cfg: DataConfig, progress: bool = True) -> None:
    """With data.synthetic, generate the built-in dataset where the CSVs point, if it is missing or was
    generated with other settings (its `synthetic.json` says which)."""
    if not cfg.synthetic:
        return
    out = Path(cfg.train_csv).parent
    stamp = out / "synthetic.json"
    have = Path(cfg.train_csv).is_file() and Path(cfg.test_csv).is_file()
    want = synthetic_settings(cfg.synthetic_series, cfg.synthetic_frames, cfg.synthetic_seed, cfg.texture,
                              cfg.brightness)
    if have and stamp.is_file() and json.loads(stamp.read_text()) == want:
        return
    if have and not stamp.is_file():
        raise DataError(f"{out} holds a dataset without synthetic.json (not generated by this thinfilm "
                        f"version): delete it to generate the built-in data there, or set data.synthetic=false")
    lit = f", film brightening {cfg.brightness:g} levels / MPa" if cfg.brightness else ""
    print(f"generating the built-in synthetic dataset under {out} ({cfg.texture} texture{lit}; once) ...")
    synthesize(out, cfg, progress)


def synthetic_settings(series: int, frames: int, seed: int, texture: str, brightness: float = 0.0) -> dict[str, Any]:
    """What `synthetic.json` records of a generated dataset (`brightness` only where it is on, so a dataset
    generated before it existed still matches)."""
    lit = {"brightness": brightness} if brightness else {}
    return {"series": series, "frames": frames, "seed": seed, "texture": texture, **lit, "version": SYNTHETIC_VERSION}


def load_splits(cfg: DataConfig, progress: bool = True) -> tuple[Split, Split, Normalizer]:
    """Train and test splits (frames cached, conditions normalised with train-split statistics)."""
    ensure_synthetic(cfg, progress)
    tables = [read_table(cfg.train_csv, cfg.columns), read_table(cfg.test_csv, cfg.columns)]
    files = [resolve_all(t, cfg.root) for t in tables]       # every missing file, before any decoding
    norm = Normalizer.fit(tables[0].values, cfg.columns, cfg.normalize)
    splits = [Split(t, cached_frames(t, f, cfg.roi, cfg.resolution, cfg.cache_dir, progress),
                    norm.encode(t.values)) for t, f in zip(tables, files)]
    return splits[0], splits[1], norm


def series_of(path: str) -> str:
    """The test series a frame belongs to: the folder that holds it (`data1` in ...\\data1\\0001.tif)."""
    parts = _parts(path)
    return parts[-2] if len(parts) >= 2 else ""


def frame_order(path: str) -> tuple:
    """A sort key putting a series' frames in time order by their file names, numbers compared as numbers
    (`9.tif` before `10.tif`): a CSV need not list them in order."""
    name = _parts(path)[-1] if _parts(path) else path
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part)


def after_fracture(table: Table, load: str, drop: float = 0.1) -> np.ndarray:
    """Which frames show a broken specimen: [N] bool. Per series, in time order (`frame_order` of the file
    names, whatever the CSV's order), the frames after the one with the highest `load` whose load is under
    `drop` times that peak (in the real tests the load falls to ~0 within 1-2 frames of fracture). A NaN
    load counts as unbroken."""
    j = table.columns.index(load)
    series = np.array([series_of(p) for p in table.paths])
    broken = np.zeros(len(table), dtype=bool)
    for name in np.unique(series):
        rows = np.flatnonzero(series == name)
        rows = np.array(sorted(rows, key=lambda i: frame_order(table.paths[i])))
        v = table.values[rows, j]
        if np.isnan(v).all():
            continue
        peak = int(np.nanargmax(v))
        broken[rows[peak + 1:]] = v[peak + 1:] < drop * v[peak]
    return broken


def split_series(series: Sequence[str], test_series: Sequence[str] = ()) -> list[str]:
    """Which series are held out: given ones, or the researcher's rule (fewer than 5 series: one,
    the middle one in sorted order; otherwise a fifth of them, evenly spaced)."""
    names = sorted(set(series), key=lambda s: (len(s), s))
    if test_series:
        unknown = sorted(set(test_series) - set(names))
        if unknown:
            raise DataError(f"--test-series {', '.join(unknown)} not found; series are {', '.join(names)}")
        return list(test_series)
    if len(names) < 2:
        raise DataError(f"only one series ({names[0] if names else 'none'}) found: a split by series "
                        "needs at least two folders")
    k = 1 if len(names) < 5 else max(1, round(len(names) / 5))
    return [names[int((i + 0.5) * len(names) / k)] for i in range(k)]


def write_split(table: pd.DataFrame, out: Path, train_name: str, test_name: str,
                test_series: Sequence[str] = ()) -> list[tuple[Path, pd.DataFrame]]:
    """Write a seed-format table as train / test CSVs under `out`, split by series (`split_series`);
    returns each file with its rows."""
    series = table.filepath.map(series_of)
    held = series.isin(split_series(series, test_series))
    out.mkdir(parents=True, exist_ok=True)
    written = [(out / train_name, table[~held]), (out / test_name, table[held])]
    for path, rows in written:
        rows.to_csv(path, index=False, float_format="%.9g")
    return written


def synthesize(out: Path, world: DataConfig, progress: bool = True, split: bool = True) -> None:
    """Generate the built-in dataset `world` describes (its synthetic_* keys, texture, brightness) under `out`
    and write its train/test CSVs split by series, named as world's train_csv / test_csv (split=False: every
    frame in all.csv, an evaluation set of specimens no run has seen)."""
    from thinfilm.synthetic import generate

    w = world
    table = generate(out, w.synthetic_series, w.synthetic_frames, w.synthetic_seed, progress, w.texture, w.brightness)
    settings = synthetic_settings(w.synthetic_series, w.synthetic_frames, w.synthetic_seed, w.texture, w.brightness)
    train_name, test_name = Path(w.train_csv).name, Path(w.test_csv).name
    (out / "synthetic.json").write_text(json.dumps(settings) + "\n")
    if split:
        write_split(table, out, train_name, test_name)
    else:
        table.to_csv(out / "all.csv", index=False, float_format="%.9g")

