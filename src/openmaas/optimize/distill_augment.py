"""More texts for the teacher to label: the transfer set of Tang et al. (2019), "Distilling
Task-Specific Knowledge from BERT into Simple Neural Networks".

A student learns the teacher's function better from many inputs near the training texts
than from the texts alone, and the teacher labels them for free. Each augmented copy of a
text is made word by word, then as a whole:

- **masking**: each word, with probability `mask_probability`, becomes `[MASK]` (a BERT
  teacher reads it as its mask token; the student learns it as a word of its vocabulary);
- **n-gram sampling**: with probability `ngram_probability`, the copy is cut to a random
  n-gram of itself, n drawn uniformly from 1 to 5.

Tang et al. also swap words for others of the same part of speech; that rule needs a tagger
and is not done here. Copies equal to their text or to an earlier copy are dropped, so a
one-word text may yield fewer than `copies`.

Example::

    augmented(["a gripping , funny film"], copies=2, mask_probability=0.1,
              ngram_probability=0.25, seed=0)
    # -> ["a [MASK] , funny film", "funny film"]  (whatever the seed draws)
"""

from __future__ import annotations

import random
from collections.abc import Sequence

MASK = "[MASK]"
LONGEST_NGRAM = 5
# Draws per wanted copy before giving up on a text whose copies keep repeating.
ATTEMPTS_PER_COPY = 4


def augmented(
    texts: Sequence[str],
    *,
    copies: int,
    mask_probability: float,
    ngram_probability: float,
    seed: int,
) -> list[str]:
    """Up to `copies` new texts for each of `texts`, in order, without repeats per text."""
    rng = random.Random(seed)  # noqa: S311 - data augmentation, not a secret
    out: list[str] = []
    for text in texts:
        words = text.split()
        if not words or copies == 0:
            continue
        seen = {" ".join(words)}
        made = 0
        for _ in range(copies * ATTEMPTS_PER_COPY):
            copy = _one_copy(words, rng, mask_probability, ngram_probability)
            if copy in seen:
                continue
            seen.add(copy)
            out.append(copy)
            made += 1
            if made == copies:
                break
    return out


def _one_copy(
    words: list[str], rng: random.Random, mask_probability: float, ngram_probability: float
) -> str:
    masked = [MASK if rng.random() < mask_probability else word for word in words]
    if rng.random() < ngram_probability:
        n = min(len(masked), rng.randint(1, LONGEST_NGRAM))
        start = rng.randrange(len(masked) - n + 1)
        masked = masked[start : start + n]
    return " ".join(masked)
