"""The pieces the pages are built from: highlighting keeps the bytes, charts are valid SVG
of a fixed size, the playbook arithmetic is right."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET

from resonfl_server.backend.web.charts import Series, line_chart, stacked_bars
from resonfl_server.backend.web.guidance import ema_survival, training_notes
from resonfl_server.backend.web.highlight import highlight
from resonfl.config import TrainingConfig
from resonfl.job import template_text


def _text_of(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def test_highlighting_keeps_every_byte_of_the_job_scripts() -> None:
    for name in ("custom_client_executor.py", "custom_persistor.py"):
        source = template_text(name)
        assert _text_of(str(highlight(source, name))) == source
    json_text = '{\n  "a": [1, -2.5e3, true, null, "x\\"y"]\n}\n'
    assert _text_of(str(highlight(json_text, "meta.json"))) == json_text


def test_charts_are_valid_svg_with_a_fixed_viewbox() -> None:
    charts = [
        line_chart(
            "Val loss",
            [Series("site-1", [(0, 2.3), (1, 1.7)]), Series("global", [(0, 2.2)], dashed=True)],
            3,
        ),
        line_chart("Empty", [], 3),
        stacked_bars("Time", [(0, 3.0, 9.5), (1, 4.0, 6.0)], 3),
    ]
    for chart in charts:
        svg = re.search(r"<svg.*</svg>", str(chart), re.S)
        assert svg is not None
        root = ET.fromstring(svg.group(0))
        assert root.get("viewBox") == "0 0 360 200"
    assert "no data yet" in str(charts[1])


def test_ema_trap_arithmetic_matches_the_playbook() -> None:
    assert round(ema_survival(0.999, 148), 2) == 0.86
    raw = {"ema_decay": "0.999", "local_steps": "148", "ema_persist": "false"}
    notes = training_notes(raw, TrainingConfig(), None)
    ema = next(n for n in notes if n.title == "The EMA trap")
    assert ema.level == "warn" and "86%" in ema.text and "14%" in ema.text
