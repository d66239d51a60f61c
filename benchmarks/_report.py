"""What the benchmark scripts share: printing their result and saving it as JSON."""

from __future__ import annotations

import json
from pathlib import Path


def emit_json(result: dict, out: str | Path | None = None) -> None:
    """Print ``result`` as indented JSON and, when ``out`` is given, write the same text there."""
    text = json.dumps(result, indent=2)
    if out:
        Path(out).write_text(text + "\n", encoding="utf-8")
    print(text)
