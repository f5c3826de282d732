"""Word vectors imported from a word2vec/GloVe text file, registered as a `word2vec` model:
served on /v1/embeddings like the `word2vec` recipe's output, and usable as the starting
`embeddings` of a network trained from scratch.

The file is parsed by `word_vectors.text_format` (no pickle; size, word-count and dimension
limits; 400 naming a bad line), written in the directory format of `word_vectors.saved` in a
private scratch directory, and registered from there like any model directory.

Example::

    with open("glove.6B.50d.txt", "rb") as stream:
        version = register_text_vectors(registration, "glove-50d", stream, VersionSpec(),
                                        caller=principal, filename="glove.6B.50d.txt")
"""

from __future__ import annotations

from typing import IO

from openmaas.auth.access import require_caller
from openmaas.auth.entities import Principal
from openmaas.registry.entities import ModelVersion
from openmaas.registry.intake import walk_directory
from openmaas.registry.names import split_qualified
from openmaas.registry.registration import RegistrationService, VersionSpec
from openmaas.registry.sources import FilePlan
from openmaas.word_vectors.saved import save_word_vectors
from openmaas.word_vectors.text_format import read_text_vectors

SCRATCH_FACTOR = 2  # the saved directory: the float32 matrix and the vocabulary's JSON


def register_text_vectors(
    registration: RegistrationService,
    name: str,
    stream: IO[bytes],
    spec: VersionSpec,
    *,
    caller: Principal,
    filename: str,
) -> ModelVersion:
    """Parse the text vectors in `stream` and register them as the model's next version."""
    who = require_caller(caller)
    split_qualified(name)
    # Refused before the file is read: a name the caller may not register to.
    registration.check_target(name, spec, who)
    imported = read_text_vectors(stream, max_bytes=registration.limits.max_total_bytes)
    saved = imported.vectors
    scratch = registration.artifacts.new_scratch(saved.vectors.nbytes * SCRATCH_FACTOR)
    try:
        save_word_vectors(scratch, saved)
        source = {
            "type": "text-vectors",
            "filename": filename,
            "words": len(saved.words),
            "dimensions": saved.dimensions,
            "header": imported.header,
            "skipped_repeats": imported.skipped_repeats,
        }
        plan = FilePlan(files=walk_directory(scratch), source=source, root=scratch)
        return registration.register_plan(name, plan, spec, caller=who)
    finally:
        registration.artifacts.discard(scratch)
