"""Fails if a committed notebook carries outputs or execution counts (they must be stripped)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def dirty_cells(path: Path) -> list[int]:
    cells = json.loads(path.read_text())["cells"]
    return [
        index
        for index, cell in enumerate(cells)
        if cell.get("cell_type") == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]


def main() -> int:
    failures = {path.name: dirty_cells(path) for path in sorted(NOTEBOOKS.glob("*.ipynb"))}
    failures = {name: cells for name, cells in failures.items() if cells}
    for name, cells in failures.items():
        print(f"{name}: cells {cells} have outputs; strip them (jupyter nbconvert --clear-output)")
    print(f"checked {len(list(NOTEBOOKS.glob('*.ipynb')))} notebooks: outputs stripped" if not
          failures else "notebook check failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
