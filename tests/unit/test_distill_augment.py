"""Tang et al.'s transfer set: masked copies and n-gram samples of the training texts."""

from __future__ import annotations

from openmaas.optimize.distill_augment import MASK, augmented

TEXTS = ["a gripping , funny and deeply moving film", "dull", "the plot never comes together"]


def _is_made_from(copy: str, text: str) -> bool:
    """A run of the text's words, some of them replaced by the mask token."""
    words, source = copy.split(), text.split()
    return any(
        all(w in (MASK, t) for w, t in zip(words, source[i : i + len(words)], strict=True))
        for i in range(len(source) - len(words) + 1)
    )


def test_copies_are_masked_or_cut_versions_of_their_text_without_repeats() -> None:
    for text in TEXTS:
        copies = augmented([text], copies=5, mask_probability=0.3, ngram_probability=0.5, seed=1)
        assert len(copies) == len(set(copies))
        assert text not in copies
        assert all(_is_made_from(copy, text) for copy in copies), copies
    long = augmented(TEXTS[:1], copies=5, mask_probability=0.3, ngram_probability=0.5, seed=1)
    assert len(long) == 5
    assert any(MASK in copy for copy in long)
    assert any(len(copy.split()) < len(TEXTS[0].split()) for copy in long)
    # "dull" has one copy of its own to give: "[MASK]".
    assert augmented(["dull"], copies=5, mask_probability=0.5, ngram_probability=0.5, seed=1) in (
        [],
        [MASK],
    )


def test_the_same_seed_gives_the_same_copies_and_zero_copies_none() -> None:
    first = augmented(TEXTS, copies=3, mask_probability=0.1, ngram_probability=0.25, seed=7)
    assert first == augmented(TEXTS, copies=3, mask_probability=0.1, ngram_probability=0.25, seed=7)
    assert first != augmented(TEXTS, copies=3, mask_probability=0.1, ngram_probability=0.25, seed=8)
    assert augmented(TEXTS, copies=0, mask_probability=0.5, ngram_probability=0.5, seed=0) == []


def test_without_masking_or_sampling_no_copy_differs_so_none_is_made() -> None:
    assert augmented(TEXTS, copies=4, mask_probability=0.0, ngram_probability=0.0, seed=0) == []
