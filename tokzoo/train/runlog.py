"""metrics.jsonl: one JSON record per logged step or evaluation, appended by
rank 0; cut back on resume so that every step appears once."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokzoo.ckptio import atomic_write

NAME = "metrics.jsonl"


class MetricsLog:
    def __init__(self, run_dir: Path, enabled: bool = True):
        self.path, self.enabled = Path(run_dir) / NAME, enabled

    def append(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def size(self) -> int:
        """Its size now, stored in each checkpoint (what a resume cuts back to)."""
        return self.path.stat().st_size if self.path.is_file() else 0

    def truncate(self, size: int | None, step: int) -> None:
        """Cut back to ``size`` bytes, what it held when the checkpoint was saved;
        ``None`` (a checkpoint from before sizes were stored): the records up to ``step``."""
        f = self.path
        if not f.is_file():
            return
        if size is None:
            keep = []
            for line in f.read_text(errors="replace").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= step:
                        keep.append(line)
                except ValueError:
                    continue
            atomic_write(f, "".join(k + "\n" for k in keep))
        elif f.stat().st_size > size:
            with open(f, "r+b") as fh:
                fh.truncate(size)
