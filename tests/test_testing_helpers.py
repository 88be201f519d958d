"""tokzoo.testing: the docs' "Testing a plugin" snippet runs, installed or not."""
import re
import sys

from conftest import make_dist
from conftest import REPO



def _docs_snippet() -> tuple[str, str]:
    doc = (REPO / "docs" / "plugins.md").read_text()
    section = doc[doc.index("## Testing a plugin"):]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    conftest, test = code.split("# test_sign.py\n")
    return conftest, test


def _sign_module() -> str:
    doc = (REPO / "docs" / "plugins.md").read_text()
    return re.findall(r"```python\n(.*?)```", doc, re.S)[0]


def _run_snippet(tmp_path, installed: bool):
    import subprocess

    pkg = tmp_path / "site"
    if installed:  # the plugin is also installed: its entry point must not clash with the test's copy
        make_dist(pkg, "tokzoo-sign", "0.1.0", {"sign": "tokzoo_sign"}, {"tokzoo_sign/__init__.py": _sign_module()})
    else:
        (pkg / "tokzoo_sign").mkdir(parents=True)
        (pkg / "tokzoo_sign" / "__init__.py").write_text(_sign_module())
    tests = tmp_path / "plugin_tests"
    tests.mkdir()
    conftest, test = _docs_snippet()
    (tests / "conftest.py").write_text(conftest.replace("# conftest.py\n", ""))
    (tests / "test_sign.py").write_text(test + "\n\ndef test_registry_restored():\n"
                                       "    from tokzoo.registry import get_registry\n"
                                       "    assert 'sign' not in get_registry().names('quantizer') or "
                                       f"{installed!r}\n")
    import os

    env = dict(os.environ, PYTHONPATH=str(pkg))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def test_docs_testing_snippet_passes_when_the_plugin_is_not_installed(tmp_path):
    out = _run_snippet(tmp_path, installed=False)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "2 passed" in out.stdout


def test_docs_testing_snippet_passes_when_the_plugin_is_installed(tmp_path):
    out = _run_snippet(tmp_path, installed=True)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "2 passed" in out.stdout
