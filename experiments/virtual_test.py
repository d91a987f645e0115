"""A virtual tensile test of one specimen, measured where the truth is known (docs/experiments.md#virtual-test).

For unseen specimens of a built-in evaluation set (all frames of each series, in time order), frame j is
predicted from an early frame k of the same specimen and compared with the true frame j:
    inversion    k inverted under its own measurements (DDIM run backwards), drawn forward under j's, with
                 each film tail (`sample.film_tail`), each guidance scale on x3-x6, and each low-pass cutoff
                 (the inverted start's coarse frequencies redrawn: `lowpass_renoised`)
    independent  j drawn from its own noise (no starting frame)
    img2img S    k noised to strength S and drawn under j's measurements (the checkpoint's sampler)
and scored by the exact reading of the marks (x5 error, px, against j's x5), the specimen's identity (the
correlation of the film's fine texture with the true frame j's, beside what the real frames k and j share
and what two different specimens share) and the pixel error. Films of 9 rows before fracture: the real
series, `--path` (one start noise for the whole film) and the inversion of the film's first frame, for each
tail, by the correlation of consecutive frames' texture and their mean change in the flat film.

    python experiments/virtual_test.py --ckpt runs/RUN --data EVAL_FOLDER --out results/virtual
EVAL_FOLDER holds all.csv (`python -m thinfilm.prepare synth --out EVAL_FOLDER --series 8 --seed 99 --all`).
Writes OUT/virtual.json, OUT/counterfactual.png (per specimen: real k, real j..., inverted j..., image-to-image
0.5 j...), OUT/film.gif; prints a one-line summary (the films' change against the real film's, the
counterfactual marks against independent draws').
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thinfilm import checkpoint, data  # noqa: E402
from thinfilm.diffusion import GaussianDiffusion, Init, randn  # noqa: E402
from thinfilm.metrics import gaussian_blur, region_mask  # noqa: E402
from thinfilm.sampling import Execution, Guidance, Plan, frame_seed, generate, invert, start_noise  # noqa: E402
from thinfilm.synthetic import FILM_COLS, FLAT_ROWS, ROI, measure  # noqa: E402

STRENGTHS = (0.3, 0.5, 0.8)


def texture(frames: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """The film's fine texture: each frame less its Gaussian blur (sigma px), in the flat film, [N, P]."""
    high = frames.astype(np.float64) - gaussian_blur(frames, sigma)
    return high[:, region_mask(frames.shape[-2:], FLAT_ROWS, FILM_COLS)]


def corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of [N, P] arrays."""
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1) + 1e-12)


def flat_change(frames: np.ndarray) -> float:
    """Mean absolute change between consecutive frames in the flat film, levels."""
    d = np.abs(np.diff(frames.astype(np.float32), axis=0))
    return float(d[:, region_mask(frames.shape[-2:], FLAT_ROWS, FILM_COLS)].mean())


def lowpass_renoised(z: torch.Tensor, fresh: torch.Tensor, cutoff: float) -> torch.Tensor:
    """z [.., H, W] with its spatial frequencies below `cutoff` (cycles per px) taken from `fresh` instead: the
    coarse layout (where the marks go) from fresh noise, the fine texture (the specimen's) from z."""
    h, w = z.shape[-2:]
    low = torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.rfftfreq(w)[None, :] ** 2 < cutoff**2
    return torch.fft.irfft2(torch.where(low, torch.fft.rfft2(fresh), torch.fft.rfft2(z)), s=(h, w))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", required=True, help="folder with all.csv: every frame of each evaluation series")
    p.add_argument("--out", required=True)
    p.add_argument("--specimens", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--guidance", default="2", help="draw the inverted specimen with these guidance scales on "
                   "x3-x6 (inverted without), comma-separated; the first draws the films (1 = off)")
    p.add_argument("--films-only", action="store_true", help="only the films (no counterfactual table)")
    p.add_argument("--tails", default=None, help="film tails to compare (sample.film_tail), comma-separated; "
                   "default: 0 and the checkpoint's; the last is summarised")
    p.add_argument("--cutoffs", default="", help="counterfactuals from the inverted start with its frequencies "
                   "below each cutoff (cycles/px) redrawn, comma-separated")
    a = p.parse_args()
    cutoffs = [float(c) for c in a.cutoffs.split(",") if c.strip()]
    torch.set_num_threads(a.threads)
    loaded = checkpoint.load_model(a.ckpt, ema=True, device="cpu")
    cfg, norm, net = loaded.config, loaded.normalizer, loaded.net
    tails = [int(t) for t in a.tails.split(",") if t.strip()] if a.tails else sorted({0, cfg.sample.film_tail})
    r, cols = cfg.data.resolution, norm.columns
    diffusion = GaussianDiffusion.from_config(cfg)
    plan = Plan.from_config(cfg)
    still = plan._replace(sampler="ddim", eta=0.0)
    on = Execution(torch.device("cpu"))
    geometric = tuple(cols.index(c) for c in ("x3", "x4", "x5", "x6"))
    scales = [float(g) for g in a.guidance.split(",")]
    steered = still._replace(guidance=Guidance(scales[0], geometric))
    table = data.read_table(Path(a.data) / "all.csv", cols)
    files = data.resolve_all(table)
    broken = data.after_fracture(table, cols[0])
    series = np.array([data.series_of(q) for q in table.paths])
    real = np.stack([data.load_frame(f, ROI, r) for f in files])
    x5 = cols.index("x5")

    ks, targets, films = [], [], []
    for name in sorted(set(series))[:a.specimens]:
        rows = np.array(sorted(np.flatnonzero(series == name), key=lambda i: data.frame_order(table.paths[i])))
        whole = rows[~broken[rows]]
        k = whole[1]                                                     # early: the second frame
        picks = [whole[len(whole) // 3], whole[2 * len(whole) // 3], whole[-1]]
        picks += list(rows[broken[rows]][:1])                            # the first frame after fracture
        ks.append(k)
        targets.append(picks)
        films.append(whole[np.unique(np.linspace(1, len(whole) - 1, 9).round().astype(int))])

    def draw(rows: np.ndarray, how: Plan, seeds, amp: torch.dtype | None = None, **kw) -> np.ndarray:
        return data.to_uint8(generate(net, diffusion, norm.encode(table.values[rows]), list(seeds), how,
                                      on._replace(amp=amp), **kw))

    results: dict[str, dict] = {}
    plans = {"": still} | {f" guided {g:g}": still._replace(guidance=Guidance(g, geometric)) for g in scales if g != 1}
    variants = {f"inversion{lowpass}{name} tail {t}": how.one_specimen(t) for t in tails for name, how in plans.items()
                for lowpass in ["", *[f" lowpass {c}" for c in cutoffs]]}
    per: dict[str, list] = {m: [] for m in [*variants, "independent", *[f"img2img {s}" for s in STRENGTHS]]}
    if a.films_only:
        per = {}
    starts, trips = [], {}
    for i, (k, picks) in enumerate(zip(ks, targets)):
        frame_k = data.to_network(real[k])[None]
        cond_k = norm.encode(table.values[[k]])
        for name, amp in (("fp32", None), ("bf16", torch.bfloat16)):
            start = invert(net, diffusion, frame_k, cond_k, still, on._replace(amp=amp))
            back = draw(np.array([k]), still, [0], start=start, amp=amp)[0]
            trips.setdefault(name, []).append(np.abs(back.astype(int) - real[k]))
            if amp is None:
                starts.append(start)
        picks = np.array(picks)
        if a.films_only:
            continue
        own = [frame_seed(9, int(j)) for j in picks]                   # each new frame's own exposure
        for method, how in variants.items():
            z = starts[-1]
            if "lowpass" in method:
                fresh = randn(z.shape, torch.Generator().manual_seed(frame_seed(10, i)), "cpu")
                z = lowpass_renoised(z, fresh, float(method.split()[2]))
            per[method].append(draw(picks, how, own, start=z))
        per["independent"].append(draw(picks, plan, [frame_seed(7, int(j)) for j in picks]))
        for s in STRENGTHS:
            per[f"img2img {s}"].append(draw(picks, plan, [frame_seed(8, int(j)) for j in picks],
                                            init=Init(frame_k, s)))
    wanted = np.concatenate(targets)
    truth = real[wanted]
    same = corr(texture(real[np.repeat(ks, [len(t) for t in targets])]), texture(truth))
    n = len(targets)                            # another specimen's frame at the same stage of its test
    pairs = np.array([(a_, b_) for i in range(n) for a_, b_ in zip(targets[i], targets[(i + 1) % n])])
    results["real"] = {"identity_k_j": round(float(same.mean()), 3),
                       "identity_other_specimen": round(float(corr(texture(real[pairs[:, 0]]),
                                                                   texture(real[pairs[:, 1]])).mean()), 3)}
    for method, drawn in per.items():
        gen = np.concatenate(drawn)
        ident = corr(texture(gen), texture(truth))
        err = measure(gen)[:, 0] - table.values[wanted, x5]
        asked = table.values[wanted, x5] - table.values[np.repeat(ks, [len(t) for t in targets]), x5]
        moved = measure(gen)[:, 0] - measure(real[np.repeat(ks, [len(t) for t in targets])])[:, 0]
        real_err = measure(truth)[:, 0] - table.values[wanted, x5]
        results[method] = {"identity": round(float(ident.mean()), 3),
                           "identity_share": round(float(ident.mean() / same.mean()), 3),
                           "x5_rmse_px": round(float(np.sqrt(np.mean(err**2))), 2),
                           "x5_rmse_real_px": round(float(np.sqrt(np.mean(real_err**2))), 2),
                           "pixel_error": round(float(np.abs(gen.astype(int) - truth).mean()), 2),
                           "x5_moved_per_asked": round(float((moved * asked).sum() / (asked**2).sum()), 3)}
    base = results["independent"]["x5_rmse_px"] if per else 0
    for method in per:
        results[method]["x5_rmse_vs_independent"] = round(results[method]["x5_rmse_px"] / base, 3)
    for name, errors in trips.items():
        e = np.stack(errors)
        results[f"round_trip_{name}"] = {"within_1_level": round(float(np.mean(e <= 1)), 3),
                                         "mean_error": round(float(e.mean()), 3)}

    film_frames = {"real": [real[rows] for rows in films]}
    for t in tails:
        path, inverted = [], []
        for i, rows in enumerate(films):
            own = [frame_seed(12, i * 1000 + int(j)) for j in rows]     # each frame's own exposure
            shared = start_noise(net.frame_shape, [frame_seed(11, i)])
            path.append(draw(rows, still.one_specimen(t), own, start=shared))
            inverted.append(draw(rows, steered.one_specimen(t), own, start=starts[i]))
        film_frames[f"path tail {t}"], film_frames[f"inversion tail {t}"] = path, inverted
    for name, films_of in film_frames.items():
        consecutive = np.concatenate([corr(texture(f[:-1]), texture(f[1:])) for f in films_of])
        results[f"film {name}"] = {"consecutive_identity": round(float(consecutive.mean()), 3),
                                   "flat_change": round(float(np.mean([flat_change(f) for f in films_of])), 3)}
    real_change = results["film real"]["flat_change"]
    for name in film_frames:
        results[f"film {name}"]["change_vs_real"] = round(results[f"film {name}"]["flat_change"] / real_change, 2)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "virtual.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    shown = f"inversion{f' guided {scales[0]:g}' if scales[0] != 1 else ''} tail {tails[-1]}"
    film = results[f"film inversion tail {tails[-1]}"], results[f"film path tail {tails[-1]}"]
    line = (f"summary (tail {tails[-1]}): film change {film[1]['change_vs_real']}x real --path, "
            f"{film[0]['change_vs_real']}x --from-frame; consecutive identity {film[1]['consecutive_identity']} / "
            f"{film[0]['consecutive_identity']} (real {results['film real']['consecutive_identity']})")
    if shown in results:
        line += (f"; counterfactual ({shown}): marks {results[shown]['x5_rmse_vs_independent']}x independent "
                 f"draws', identity {results[shown]['identity_share']} of the real share")
    print(line)
    pictures(out, real, ks, targets, per.get(shown), per.get("img2img 0.5"),
             film_frames["real"][0], film_frames[f"inversion tail {tails[-1]}"][0], table.values[films[0]], cols)


def pictures(out: Path, real, ks, targets, inverted, img2img, real_film, drawn_film, film_rows, cols) -> None:
    """counterfactual.png: per specimen (up to 4) real k | real j... | inverted j... | img2img 0.5 j...;
    film.gif: the first specimen's real film beside the inversion of its first frame."""
    from PIL import Image

    from thinfilm.sample import captioned

    r, gap = real.shape[-2], 2
    rows = []
    for k, picks, inv, i2i in list(zip(ks, targets, inverted or [], img2img or []))[:4]:
        tiles = [real[k]] + [real[j] for j in picks] + list(inv) + list(i2i)
        rows.append(np.concatenate([np.pad(t, ((gap, gap), (gap, gap)), constant_values=255) for t in tiles], 1))
    if rows:
        width = max(row.shape[1] for row in rows)
        sheet = np.concatenate([np.pad(row, ((0, 0), (0, width - row.shape[1])), constant_values=255)
                                for row in rows])
        Image.fromarray(sheet).resize((sheet.shape[1] * 2, sheet.shape[0] * 2), Image.Resampling.NEAREST).save(
            out / "counterfactual.png")
    pairs = [np.concatenate([a, np.full((r, gap), 255, np.uint8), b], 1)
             for a, b in zip(real_film, drawn_film)]
    images = [captioned(f, row, cols) for f, row in zip(pairs, film_rows)]
    images[0].save(out / "film.gif", save_all=True, append_images=images[1:], duration=300, loop=0)


if __name__ == "__main__":
    main()
