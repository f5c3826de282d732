"""A runtime whose loads wait on a named pipe, to hold one model's load open from a test.

A version whose params name `load_gate` (a FIFO's path) loads only once the test has opened
that FIFO for writing and closed it: opening blocks on both sides until the other arrives, so
the test knows the load is in progress without sleeping, and closing ends it. Run as a module
it starts the real server with the reverse-text task and this runtime registered::

    python -m tests.gated_loads serve --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import json
from pathlib import Path

from openmaas.runtimes.base import NATIVE_SPEC, LoadOptions, ModelSource, register_runtime
from tests.reverse_task import TASK, ReverseModel, ReverseRuntime

RUNTIME = "gated-reverse"


class GatedReverseRuntime(ReverseRuntime):
    name = RUNTIME

    def load(self, source: ModelSource, options: LoadOptions) -> ReverseModel:
        gate = source.params.get("load_gate")
        if gate:
            with open(gate, "rb") as fifo:  # blocks until the test opens it for writing
                fifo.read()  # until the test closes it
        return ReverseModel(source)


def write_model(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    spec = {"task": TASK, "runtime": RUNTIME, "format": RUNTIME}
    (directory / NATIVE_SPEC).write_text(json.dumps(spec), encoding="utf-8")
    return directory


if __name__ == "__main__":
    from openmaas.cli.main import main
    from tests import reverse_task

    reverse_task.register()
    register_runtime(RUNTIME, f"{__name__}:GatedReverseRuntime")
    main()
