"""The command line answers at once: --help, list, plugins and a refused
command import neither torch nor any plugin's backend (plugins register
their factories by name; the backend is imported when a component is built)."""
import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "numpy", "vector_quantize_pytorch", "diffusers", "open_clip", "matplotlib", "PIL")
PROBE = """
import json, sys
from tokzoo.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,)


@pytest.mark.parametrize("argv, code", [
    (["--help"], 0), (["list"], 0), (["list", "quantizer"], 0), (["plugins"], 0),
    (["train", "vq-tinyy"], 2),  # a mistyped preset
    (["bench", "--tokenizers", "nosuch"], 2), (["bench", "--tokenizers", "vq-tiny", "--metrics", "psnr,nosuch"], 2),
    (["bench", "--tokenizers", "vq-tiny", "--data", "nosuch"], 2), (["bench", "--num-images", "-3"], 2),
    (["frobnicate"], 2),
])
def test_these_commands_import_no_backend(argv, code, tmp_path):
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=tmp_path, capture_output=True, text=True,
                         env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    lines = [line for line in out.stdout.splitlines() if line.startswith('{"code"')]
    assert lines, out.stdout[-2000:] + out.stderr[-2000:]
    got = json.loads(lines[-1])
    assert got["code"] == code, out.stderr[-2000:]
    assert got["heavy"] == [], f"{' '.join(argv)} imported {got['heavy']}"
    assert "Traceback" not in out.stderr
