"""Rewrite tests/module_seconds.json (the order `make test` starts modules in) from a run's
JUnit XML: `pytest ... -o junit_duration_report=total --junitxml=run.xml`, then
`python tests/module_seconds.py run.xml`."""

from __future__ import annotations

import collections
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

SMALLEST_S = 5.0


def main(junit_xml: str) -> None:
    seconds: collections.Counter[str] = collections.Counter()
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        # classname is tests.<dir>.<module>[.<Class>]
        module = case.get("classname", "").split(".")[:3]
        seconds["/".join(module) + ".py"] += float(case.get("time", 0))
    slow = {name: round(s) for name, s in seconds.most_common() if s >= SMALLEST_S}
    target = Path(__file__).with_name("module_seconds.json")
    target.write_text(json.dumps(slow, indent=1) + "\n")
    print(f"{len(slow)} modules of {SMALLEST_S:g} s or more written to {target}")


if __name__ == "__main__":
    main(sys.argv[1])
