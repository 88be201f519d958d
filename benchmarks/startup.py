"""How long the command line takes to answer, before and after, in one run.

Each command is run as a user types it (a fresh `python -m tokzoo.cli`
process from another folder, tokzoo's own plugins installed), median of
``--repeats`` wall times. ``--before REV`` times the same commands on that
git revision too (a temporary worktree put first on PYTHONPATH, core and the
first-party plugins both from it) and prints the ratio. Beside them: `python
-c "import torch"`, the floor of any command that needs torch.

    python benchmarks/startup.py [--before REV] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMANDS = [["--help"], ["list"], ["plugins"], ["show", "vq"], ["train", "vq-tinyy"],
            ["bench", "--tokenizers", "nosuch"], ["bench", "--tokenizers", "vq-tiny", "--metrics", "psnr,nosuch"]]
#: the targets of the issue this answers: --help and a refused command <= 0.5 s, list / plugins <= 1.5 s
TARGETS = {"--help": 0.5, "list": 1.5, "plugins": 1.5, "train vq-tinyy": 0.5, "bench --tokenizers nosuch": 0.5,
           "bench --tokenizers vq-tiny --metrics psnr,nosuch": 0.5}


def wall(argv: list[str], env: dict, cwd: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def source_env(root: Path | None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if root is not None:  # core and the first-party plugins from that checkout, before the installed ones
        paths = [root, root / "plugins" / "zoo", root / "plugins" / "semhitok", root / "plugins" / "baselines"]
        env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default=None, help="a git revision to time beside this checkout")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cwd = Path(d)
        sides = {"now": source_env(REPO)}
        if args.before:
            old = cwd / "before"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(old), args.before],
                           check=True)
            sides["before"] = source_env(old)
        try:
            floor = wall([sys.executable, "-c", "import torch"], sides["now"], cwd, args.repeats)
            rows = []
            for cmd in COMMANDS:
                got = {side: wall([sys.executable, "-m", "tokzoo.cli", *cmd], env, cwd, args.repeats)
                       for side, env in sides.items()}
                rows.append((" ".join(cmd), got))
                print(f"{' '.join(cmd):52s} " + "  ".join(f"{s} {v:5.2f} s" for s, v in got.items()), flush=True)
        finally:
            if args.before:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], check=False)
    print(f"\nwall time, median of {args.repeats}, from another folder; `python -c \"import torch\"`: {floor:.2f} s")
    head = f"{'command':52s}" + ("  before" if args.before else "") + "     now" + ("   ratio" if args.before else "")
    print(head + "  target")
    for name, got in rows:
        line = f"{name:52s}"
        if args.before:
            line += f"  {got['before']:5.2f} s"
        line += f" {got['now']:5.2f} s"
        if args.before:
            line += f"  {got['before'] / got['now']:5.1f}x"
        target = TARGETS.get(name)
        line += f"  {'<= %.1f s %s' % (target, 'ok' if got['now'] <= target else 'MISSED') if target else ''}"
        print(line)


if __name__ == "__main__":
    main()
