"""A/B: this tree's training speed against another revision's, in one run.

    python bench/ab.py 54f0401 [--rounds 5] [--threads 2] [--impl fastnn-bf16] [--book-setup]
                               [--save]

Builds REV in a temporary git worktree (an in-place build: needs the build requirements,
`pip install cython setuptools scipy-openblas32`), then runs the book's MNIST example
(batch 128, 3 epochs; the median of epochs 2-3 over all rounds) and the batch-1 step
(4000 steps) with each tree in turn, `--rounds` times, each run in its own process with
threads pinned equal (this tree's bench/e2e.py, importing fastnn from the tree under test).
Prints medians, the ratios new / old and the machine; --save writes bench/results/ab.md
(float32, no metric), else ab-<impl>[-book].md.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from common import environment

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def build(tree):
    out = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tree,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"building {tree} failed:\n{out.stderr[-2000:]}")


def e2e(tree, threads, impl, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["PYTHONPATH"] = tree
    # this tree's bench/e2e.py for both: the same measurement, the library of tree
    out = subprocess.run([sys.executable, os.path.join(HERE, "e2e.py"), "--impl", impl,
                          "--threads", str(threads), *args], cwd=HERE, env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"e2e in {tree} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("rev", help="the revision to compare against (e.g. a commit)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--impl", default="fastnn", choices=["fastnn", "fastnn-bf16"],
                   help="bench/e2e.py's --impl: float32 (the default) or mixed_bfloat16")
    p.add_argument("--book-setup", action="store_true",
                   help="bench/e2e.py's --book-setup: the accuracy metric and the progress bar")
    p.add_argument("--save", action="store_true",
                   help="write bench/results/ab.md (ab-<impl>[-book].md for the others)")
    args = p.parse_args()
    load = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="fastnn-ab-")
    old = os.path.join(tmp, "old")
    subprocess.run(["git", "worktree", "add", "-q", "--detach", old, args.rev], cwd=ROOT, check=True)
    try:
        build(old)
        build(ROOT)
        res = {"old": {"book": [], "b1": []}, "new": {"book": [], "b1": []}}
        for r in range(args.rounds):
            for name, tree in (("old", old), ("new", ROOT)):
                setup = ["--book-setup"] if args.book_setup else []
                book = e2e(tree, args.threads, args.impl, "--epochs", "3", *setup)
                b1 = e2e(tree, args.threads, args.impl, "--batch-size", "1", "--steps", "4000",
                         *setup)
                res[name]["book"] += book["epoch_times"][1:]
                res[name]["b1"].append(b1["epoch_times"][0] / b1["steps"] * 1e6)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", old], cwd=ROOT)
        shutil.rmtree(tmp, ignore_errors=True)
    med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in res.items()}
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    lines = [f"# A/B: {head} (new, this tree) against {args.rev} (old), {args.impl}"
             + (", the book's setup (accuracy metric, progress bar)" if args.book_setup else ""),
             "",
             f"{args.rounds} rounds, trees in turn, {args.threads} threads on every side; "
             "medians (book: epochs 2-3 of every round).", "",
             "| | old | new | new / old |", "| --- | --- | --- | --- |",
             f"| book epoch (batch 128), s | {med['old']['book']:.3f} | {med['new']['book']:.3f} | "
             f"{med['new']['book'] / med['old']['book']:.3f} |",
             f"| batch-1 step, us | {med['old']['b1']:.0f} | {med['new']['b1']:.0f} | "
             f"{med['new']['b1'] / med['old']['b1']:.3f} |", "",
             "Every run: " + json.dumps({n: {k: [round(x, 4) for x in v] for k, v in d.items()}
                                         for n, d in res.items()}), "", "```", *environment(args.threads),
             "load average before: %.2f %.2f %.2f" % load, "```"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.save:
        name = ("ab.md" if args.impl == "fastnn" and not args.book_setup else
                f"ab-{args.impl}{'-book' if args.book_setup else ''}.md")
        with open(os.path.join(HERE, "results", name), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
