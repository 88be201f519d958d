"""The paper-size SemHiTok and VILA-U presets end to end (marker ``paper``), as
tests/test_presets_paper.py runs the pixel ones: a file of its own so that
make test-paper (pytest-xdist --dist loadfile) gives them their own worker."""
from __future__ import annotations

import pytest

from test_presets_paper import SEMANTIC, paper_preset_end_to_end, paper_setup, this_turn  # noqa: F401 (the fixture)


@pytest.mark.paper
@pytest.mark.parametrize("preset", this_turn(SEMANTIC))
def test_semantic_paper_preset_end_to_end(preset, paper_setup, tmp_path, record_property):  # noqa: F811
    paper_preset_end_to_end(preset, paper_setup, tmp_path, record_property)
