#!/usr/bin/env python3
"""Regenerates tests/fixtures/glpft/: GLPFT's training data as the reference's own scripts
(X-PLUG/Multi-LLM-Agent, GLPFT/process_data/toolbench/) write it, for `umi data glpft`.

Two cases, each the scripts run unchanged, in the order of `GLPFT/scripts/prepro_toolbench.sh`
(stage 1, stage 2, then backbone, planner, caller and summarizer with `--prompt_type
toolbench_<mode>`):

1. `train-example/`: the seed's own example. Input: its `raw_data/raw_data_stage_1.json`
   (copied here); expected: what stage 2 and the four role scripts write from it (this
   script checks that they equal the example's shipped files byte for byte).
2. `toolbench-real/`: the 15 ToolBench answer files of data/toolbench-real, each also
   copied under the id `<id>00` (26 files, 24 with `train_messages`), with the test ids in
   `toolbench-real/test_query_ids/` (two excluded: `11` as a dict key, `127` in a list).
   Expected: all six outputs as the scripts write them (stage 1 keeps its first 20
   trajectories, the `data[:20]` left in the script), and in `all-trajectories/` the same
   with stage 1's `data[:20]` replaced by `data` (umi's `--all-trajectories`), the one
   change made to any script.

Stage 1 walks directories with `os.listdir`, whose order the file system decides; the
scripts run here with `os.listdir` returning names in sorted order, the order umi uses.

Expected files are stored gzipped (`*.json.gz`).

    python3 scripts/make_glpft_fixture.py PATH/TO/Multi-LLM-Agent/GLPFT

Needs `pip install tqdm` in the Python that runs it (stage 1 imports it).
"""
import gzip
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/glpft"
MODES = ["backbone", "planner", "caller", "summarizer"]

# Runs a script with os.listdir sorted, everything else as `python script args`.
SORTED_LISTDIR = (
    "import os, runpy, sys\n"
    "_listdir = os.listdir\n"
    "os.listdir = lambda path='.': sorted(_listdir(path))\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)

TEST_IDS = {
    "G1_category": {},
    "G1_instruction": {"11": 1},
    "G1_tool": {},
    "G2_category": {},
    "G2_instruction": ["127"],
    "G3_instruction": {},
}


def run(glpft, script, *args):
    subprocess.run(
        [sys.executable, "-c", SORTED_LISTDIR, str(script), *map(str, args)],
        cwd=glpft, env={"PYTHONPATH": str(glpft)}, check=True, stdout=subprocess.DEVNULL,
    )


def stage2_and_roles(glpft, stage1, out):
    run(glpft, "process_data/toolbench/prepro_raw_stage_2.py",
        "--input_path", stage1, "--output_path", out)
    for mode in MODES:
        run(glpft, f"process_data/toolbench/prepro_{mode}.py",
            "--input_path", out / "raw_data_stage_2.json",
            "--output_path", out / f"train_{mode}.json",
            "--prompt_type", f"toolbench_{mode}")


def store(src_dir, names, dest):
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        data = (src_dir / name).read_bytes()
        with gzip.GzipFile(dest / f"{name}.gz", "wb", mtime=0) as f:
            f.write(data)


def outputs(with_stage1):
    names = ["raw_data_stage_1.json"] if with_stage1 else []
    return names + ["raw_data_stage_2.json"] + [f"train_{m}.json" for m in MODES]


def toolbench_dir(tmp):
    """data/toolbench-real's answers, each also under the id <id>00, and the test ids."""
    data = tmp / "toolbench"
    for group in ["G1_answer", "G2_answer", "G3_answer"]:
        (data / "answer" / group).mkdir(parents=True)
        for f in sorted((ROOT / "data/toolbench-real/answer" / group).iterdir()):
            qid, rest = f.name.split("_", 1)
            shutil.copy(f, data / "answer" / group / f.name)
            shutil.copy(f, data / "answer" / group / f"{qid}00_{rest}")
    ids = data / "test_query_ids"
    ids.mkdir()
    fixture_ids = OUT / "toolbench-real/test_query_ids"
    fixture_ids.mkdir(parents=True, exist_ok=True)
    for name, value in TEST_IDS.items():
        text = json.dumps(value) + "\n"
        (ids / f"{name}.json").write_text(text)
        (fixture_ids / f"{name}.json").write_text(text)
    return data


def main():
    glpft = pathlib.Path(sys.argv[1]).resolve()
    example = glpft / "dataset/toolbench/train-example"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)

        # 1. train-example: stage 2 and the roles from the example's stage 1.
        out = tmp / "example"
        stage2_and_roles(glpft, example / "raw_data/raw_data_stage_1.json", out)
        shipped = {"raw_data_stage_2.json": example / "raw_data/raw_data_stage_2.json"}
        shipped.update({f"train_{m}.json": example / f"train_{m}.json" for m in MODES})
        for name, path in shipped.items():
            if (out / name).read_bytes() != path.read_bytes():
                sys.exit(f"{name}: the scripts' output differs from the shipped example")
        store(example / "raw_data", ["raw_data_stage_1.json"], OUT / "train-example")
        store(out, outputs(False), OUT / "train-example/expected")

        # 2. toolbench-real: the whole pipeline from ToolBench answer files.
        data = toolbench_dir(tmp)
        out = tmp / "real"
        run(glpft, "process_data/toolbench/prepro_raw_stage_1.py",
            "--data_dir", data, "--output_path", out)
        stage2_and_roles(glpft, out / "raw_data_stage_1.json", out)
        store(out, outputs(True), OUT / "toolbench-real/expected")

        # The same with every trajectory (stage 1 without its `data[:20]`).
        script = (glpft / "process_data/toolbench/prepro_raw_stage_1.py").read_text()
        if script.count("data[:20]") != 1:
            sys.exit("prepro_raw_stage_1.py no longer has its data[:20]")
        patched = tmp / "prepro_raw_stage_1_all.py"
        patched.write_text(script.replace("data[:20]", "data"))
        out = tmp / "real-all"
        run(glpft, patched, "--data_dir", data, "--output_path", out)
        stage2_and_roles(glpft, out / "raw_data_stage_1.json", out)
        store(out, outputs(True), OUT / "toolbench-real/expected/all-trajectories")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
