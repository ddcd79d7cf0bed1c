"""docs/own-model.md's code runs as written: its `python` blocks, in order, in an empty folder.

A block whose first line is ``# file: NAME`` is written to NAME instead of run (model_def.py);
the others run in one shared namespace, as a reader pasting them into one session would.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "own-model.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def test_the_guides_code_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = BLOCK.findall(GUIDE.read_text(encoding="utf-8"))
    assert len(blocks) >= 5, "the guide lost its code"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "guide"}
    for number, code in enumerate(blocks, 1):
        first = code.splitlines()[0]
        if first.startswith("# file: "):
            Path(first.removeprefix("# file: ").strip()).write_text(code, encoding="utf-8")
            continue
        try:
            exec(compile(code, f"{GUIDE.name} block {number}", "exec"), namespace)  # our own docs
        except Exception as exc:  # name the block that broke
            raise AssertionError(f"block {number} of {GUIDE.name} failed: {exc!r}\n{code}") from exc
    assert (tmp_path / "my-job" / "workspace" / "model_out" / "checkpoint.pt").is_file()
    assert os.getcwd() == str(tmp_path)
