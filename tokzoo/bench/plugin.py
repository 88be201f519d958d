"""Core's benchmark metrics, registered through the same hook as any plugin's."""
from __future__ import annotations

from tokzoo import hookimpl


@hookimpl
def tokzoo_register_metrics(register):
    from tokzoo.bench.metrics import CORE_METRICS

    from tokzoo.bench.generation import ARProbe
    from tokzoo.bench.understanding import VQAProbe

    for name, (cls, description) in CORE_METRICS.items():
        register(name, cls, description)
    register("ar-probe", ARProbe, "AR probe: a small class-conditional GPT trained on the tokens; NLL bits, "
                                  "gFID / judge class accuracy of its samples (opt-in: slow)")
    register("vqa-probe", VQAProbe, "VQA probe: questions about each image's attributes (shape, colour, position, "
                                    "...) answered from its tokens by a small transformer; accuracy per attribute")
