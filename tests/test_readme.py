"""The README is executable: every command in its code blocks runs, in its order and as written (only its
placeholders -- runs/RUN, /mnt/PMMA, frame.tif, ... -- substituted), from a temporary folder that holds
links to the project, on the toy data; and what it says a command writes is there, with the content it
says. Every line of a code block must be a command, a comment or blank, and every command the prose gives
in `code` must be run here too or be named in UNTESTED with the reason. The checkout is left as it was."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import COLS, REPO, TINY, python_path

README = REPO / "README.md"
COMMAND = ("bash ", "python ", "OUT=", "THINFILM_PYTHON=")

UNTESTED = {
    "bash run.sh train": "the default run itself, ~10-15 min on 2 cores; its parts run in test_train at toy size",
    "bash run.sh test": "this suite",
    "bash run.sh train --config experiments/pmma_256.toml --set data.root=/mnt/PMMA "
    "--set data.train_csv=/mnt/PMMA/all_train.csv --set data.test_csv=/mnt/PMMA/all_test.csv":
        "the researcher's 119 M-parameter network at 256 px: a GPU's work (test_train runs the same entry point)",
    "bash run.sh evaluate": "needs the default run's checkpoint (the 15-min run above); test_evaluate runs the "
                            "same chain on a toy run",
    # commands the prose gives in `code`
    "THINFILM_PYTHON=$(which python3) bash run.sh train": "the default run (above); this test runs every other "
                                                          "run.sh command with THINFILM_PYTHON set",
    "python experiments/virtual_test.py --ckpt runs/RUN --data data/eval --out OUT":
        "8 specimens x inversions, films and 5 kinds of draws: ~7 min on the default run; its parts (inversion, "
        "from-frame, films of one specimen, img2img) run in test_sample and test_sampling",
    "bash run.sh evaluate --tstr": "the default run's chain and a second regressor (+11 min); test_evaluate runs "
                                   "--tstr on the toy data",
    "bash run.sh tensorboard": "a server that runs until stopped; test_train checks the events it serves",
    "bash run.sh train --gpus N": "DDP over N GPUs; test_train runs DDP with 2 CPU processes through torchrun",
    "bash run.sh bench [--config C --device D --precision P --compile --cuda-graph --json F]":
        "a synopsis; test_bench runs bench with --config, --device, --json at toy size, --compile (slow) and "
        "--cuda-graph's sampler (CUDA only)",
    "bash run.sh bench": "the default network's timings, ~3 min; test_bench runs the same entry point at toy size",
    "OUT=results bash experiments/gpu_bench.sh": "needs a GPU",
    "--set train.steps=3600 --set train.max_minutes=0": "a 25-min training run; overrides as every run takes them",
    "--resume RUN_DIR|CKPT|latest": "a synopsis; test_train resumes from a folder, a file and 'latest'",
    "--set sample.KEY=VALUE": "a synopsis; test_sample draws with --config's [sample] section and --set sample.*",
}
# what a command writes, relative to the folder it runs in, and what must hold of it (after substitution)
WRITES = {
    "--seed 7": ["out/manifest.csv", "out/0000.png"],
    "split --csv": ["PMMA/all_train.csv", "PMMA/all_test.csv"],
    "data inspect": ["preview.png"],
    "--out partial/": ["partial/0000.png"],
    "--out sweep/": ["sweep/strip.png", "sweep/film.gif"],
    "--out film/": ["film/film.gif"],
    "--out like/": ["like/0000.png"],
    "--out counterfactual/": ["counterfactual/round_trip.png", "counterfactual/film.gif"],
    "--out report/": ["report/report.md", "report/report.json"],
    "regression predict": ["pred.csv"],
}


def blocks() -> list[tuple[str, str]]:
    """(language tag, text) of every fenced code block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", README.read_text(), re.S | re.M)


def readme_commands() -> list[str]:
    """Every shell command in the README's untagged or shell code blocks, continuation lines joined, comments
    dropped; any other line there fails (a command this test would otherwise skip)."""
    commands = []
    for tag, block in blocks():
        assert tag in ("", "bash", "sh", "text", "toml"), f"a README code block tagged {tag!r}: tag it text or bash"
        if tag in ("text", "toml"):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            command = " ".join(re.split(r"\s+#", line)[0].split())
            assert not command or command.startswith(COMMAND), f"README line neither command nor comment: {line}"
            if command:
                commands.append(command)
    return commands


def prose_commands() -> list[str]:
    """Every `code` span outside the code blocks that is a command or a run's flags."""
    text = re.sub(r"^```.*?^```", "", README.read_text(), flags=re.S | re.M)
    spans = (" ".join(s.split()) for s in re.findall(r"`([^`]+)`", text))
    return [s for s in spans if s.startswith(COMMAND + ("--set ", "--resume "))]


def test_every_readme_command_is_run_or_listed_with_a_reason():
    """The lists above are true: every command in the README is run by the test below or named in UNTESTED,
    and everything UNTESTED names is still in the README."""
    shown = set(readme_commands()) | set(prose_commands())
    ran = set(readme_commands()) | set(PROSE_RUN)
    assert shown <= ran | set(UNTESTED), sorted(shown - ran - set(UNTESTED))
    assert set(UNTESTED) <= shown, sorted(set(UNTESTED) - shown)
    assert set(PROSE_RUN) <= shown, sorted(set(PROSE_RUN) - shown)


# commands the prose gives that the test below runs after the code blocks' (they need what those wrote)
PROSE_RUN = ["python -m thinfilm.regression predict --ckpt REG --images CSV --out pred.csv",
             "python experiments/figures.py --run runs/RUN"]


def workspace(tmp: Path, synth_dir: Path) -> Path:
    """A folder to run the README's commands from: links to the project's run.sh, thinfilm/ and experiments/,
    and /mnt/PMMA as the researcher's layout (all.csv beside data1/ ...) of the toy data."""
    for name in ("run.sh", "thinfilm", "experiments"):
        (tmp / name).symlink_to(REPO / name)
    root = tmp / "PMMA"
    root.mkdir()
    for series in synth_dir.glob("data*"):
        (root / series.name).symlink_to(series)
    pd.concat([pd.read_csv(synth_dir / "train.csv"), pd.read_csv(synth_dir / "test.csv")]).to_csv(
        root / "all.csv", index=False)
    return root


@pytest.mark.slow
def test_the_readme_commands_run(tiny_ckpt, synth_dir, tmp_path):
    root = workspace(tmp_path, synth_dir)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    from thinfilm.data import read_table, resolve_all
    frame = str(resolve_all(read_table(synth_dir / "test.csv", COLS))[2])                      # row 3
    tiny = " ".join(f"--set {shlex.quote(o)}" for o in TINY + [f"train.out_dir={tmp_path / 'runs'}"])
    splits = f"--set data.train_csv={root}/all_train.csv --set data.test_csv={root}/all_test.csv"
    regress = f"{splits} {tiny} --set regression.epochs=1 --set regression.batch_size=8 --set regression.run_name=reg"
    subs = [("data/synthetic/test.csv:20", f"{synth_dir / 'test.csv'}:5"), ("data/synthetic/", f"{synth_dir}/"),
            ("runs/RUN", str(tiny_ckpt.parents[1])), ("runs/REG", str(tmp_path / "runs" / "reg")),
            ("/mnt/PMMA", str(root)), ("frame.tif", frame), ("TEST.csv", str(synth_dir / "test.csv")),
            (" ...", " " + regress), ("--ckpt REG", f"--ckpt {tmp_path / 'runs' / 'reg'}"),
            ("--images CSV", f"--images {synth_dir / 'test.csv'}")]
    env = {**os.environ, "THINFILM_PYTHON": sys.executable,
           "PYTHONPATH": python_path()}
    for original in [c for c in readme_commands() if c not in UNTESTED] + PROSE_RUN:
        command = original
        for old, new in subs:
            command = command.replace(old, new)
        if command.startswith("python "):
            command = f"{shlex.quote(sys.executable)} {command[len('python '):]}"
        proc = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        for key, files in WRITES.items():
            if key in original:
                for f in files:
                    assert (tmp_path / f).exists(), f"{command} did not write {f}"
    check_contents(tmp_path, synth_dir)
    after = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    assert after == status, f"the README's commands changed the checkout:\n{after}"


def check_contents(tmp: Path, synth_dir: Path) -> None:
    """What the README says of the outputs: a manifest of raw conditions and seeds per frame; partial values
    leave the others unknown; a sweep of x3 from 0 to 0.12 in 9 frames; a film of every path row; train and
    test split by series; a report for every column; readings of every frame."""
    test = pd.read_csv(synth_dir / "test.csv")
    out = pd.read_csv(tmp / "out" / "manifest.csv")
    assert list(out.columns) == ["file", *COLS, "seed"] and np.allclose(out[COLS], test[COLS], rtol=1e-8)
    assert len(list((tmp / "out").glob("[0-9]*.png"))) == len(test)
    partial = pd.read_csv(tmp / "partial" / "manifest.csv")
    assert partial.x3[0] == 0.05 and partial.x2[0] == 38 and partial[["x1", "x4", "x5", "x6"]].isna().all(axis=None)
    sweep = pd.read_csv(tmp / "sweep" / "manifest.csv")
    assert np.allclose(sweep.x3, np.linspace(0, 0.12, 9)) and sweep.start_seed.nunique() == 1
    assert Image.open(tmp / "film" / "film.gif").n_frames == len(test)
    split = [pd.read_csv(tmp / "PMMA" / f"all_{s}.csv").filepath.str.extract(r"(data\d+)")[0]
             for s in ("train", "test")]
    assert not set(split[0]) & set(split[1]) and len(split[0]) + len(split[1]) == 48
    assert Image.open(tmp / "counterfactual" / "round_trip.png").size == Image.open(tmp / "out" / "0000.png").size
    report = (tmp / "report" / "report.json").read_text()
    assert all(f'"{c}"' in report for c in COLS)
    pred = pd.read_csv(tmp / "pred.csv")
    assert list(pred.columns) == ["file", *COLS] and len(pred) == len(test)
    assert (tmp / "docs" / "default_samples.png").is_file()                     # figures.py writes docs/ here
