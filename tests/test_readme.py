"""The README is executable: every command in its code blocks runs here, in its order, on the toy data with
its placeholders (runs/RUN, /mnt/PMMA, out/, ...) substituted, and writes what the README says it writes;
or it is named in UNTESTED with the reason. A command added to the README is run by default."""
import os
import re
import shlex
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO, TINY

README = REPO / "README.md"

UNTESTED = {
    "bash run.sh train": "the default run itself, ~10-15 min on 2 cores; its parts run in test_train at toy size",
    "bash run.sh test": "this suite",
    "bash run.sh train --config experiments/pmma_256.toml --set data.root=/mnt/PMMA "
    "--set data.train_csv=/mnt/PMMA/all_train.csv --set data.test_csv=/mnt/PMMA/all_test.csv":
        "the researcher's 119 M-parameter network at 256 px: a GPU's work (test_train runs the same entry point)",
    "bash run.sh evaluate": "needs the default run's checkpoint (the 15-min run above); test_evaluate runs the "
                            "same chain on a toy run",
}

OUTPUTS = {"out", "partial", "sweep", "film", "like", "report", "counterfactual"}   # folders the README writes
# what each command must leave behind, relative to the folder it writes (after substitution)
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
}


def readme_commands() -> list[str]:
    """Every shell command in the README's code blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"^```\n(.*?)^```", README.read_text(), re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            command = " ".join(re.split(r"\s+#", line)[0].split())
            if command.startswith(("bash ", "python ", "OUT=")):
                commands.append(command)
    return commands


def test_the_untested_list_is_short_and_true():
    """Every command not run below is in the README and needs more than the suite can give (a GPU, the
    15-minute default run, the suite itself)."""
    commands = readme_commands()
    assert len(commands) >= 15 and len(UNTESTED) <= 4
    for command in UNTESTED:
        assert command in commands, f"UNTESTED names a command the README no longer shows: {command}"


@pytest.mark.slow
def test_the_readme_commands_run(tiny_ckpt, synth_dir, tmp_path):
    root = tmp_path / "PMMA"                        # /mnt/PMMA: the researcher's layout, all.csv beside data1/ ...
    root.mkdir()
    for series in synth_dir.glob("data*"):
        (root / series.name).symlink_to(series)
    pd.concat([pd.read_csv(synth_dir / "train.csv"), pd.read_csv(synth_dir / "test.csv")]).to_csv(
        root / "all.csv", index=False)
    from thinfilm.data import read_table, resolve_all
    frame = str(resolve_all(read_table(synth_dir / "test.csv", [f"x{i}" for i in range(1, 9)]))[2])  # row 3
    tiny = " ".join(f"--set {shlex.quote(o)}" for o in TINY + [f"train.out_dir={tmp_path / 'runs'}",
                                                               f"data.cache_dir={tmp_path / 'cache'}"])
    splits = f"--set data.train_csv={root}/all_train.csv --set data.test_csv={root}/all_test.csv"
    regress = f"{splits} {tiny} --set regression.epochs=1 --set regression.batch_size=8 --set regression.run_name=reg"
    subs = [("data/synthetic/test.csv:20", f"{synth_dir / 'test.csv'}:5"), ("data/synthetic/", f"{synth_dir}/"),
            ("runs/RUN", str(tiny_ckpt)), ("runs/REG", str(tmp_path / "runs" / "reg")), ("/mnt/PMMA", str(root)),
            ("frame.tif", frame), ("TEST.csv", str(synth_dir / "test.csv")), (" ...", " " + regress)]
    env = {**os.environ, "THINFILM_PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    ran = []
    for original in readme_commands():
        if original in UNTESTED:
            continue
        command = original
        for old, new in subs:
            command = command.replace(old, new)
        command = re.sub(r"(?<=[ =])(\w+)/(?=\s|$|manifest)", lambda m: f"{tmp_path}/{m[1]}/"
                         if m[1] in OUTPUTS else m[0], command)
        if "data inspect" in command:                        # the toy frames need the toy cache and preview
            command += f" --set data.cache_dir={tmp_path / 'cache'} --preview {tmp_path / 'preview.png'}"
        if command.startswith("python "):
            command = f"{shlex.quote(sys.executable)} {command[len('python '):]}"
        proc = subprocess.run(command, shell=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        for key, files in WRITES.items():
            if key in original:
                for f in files:
                    assert (tmp_path / f).exists(), f"{command} did not write {f}"
        ran.append(command)
    assert len(ran) == len(readme_commands()) - len(UNTESTED)
