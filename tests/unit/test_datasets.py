"""Datasets: every format, each validation problem by line, schema inference, statistics,
deterministic stratified splits, the content hash across formats, the service's project
rules, size limit and encryption at rest.

Real data (SST-2, AG News, CoNLL-2003) comes from ../shared/datasets, in small slices.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from openmaas.auth.entities import SYSTEM
from openmaas.crypto import EncryptionKey, Keyring
from openmaas.datasets.formats import (
    Format,
    canonical_json,
    content_sha256,
    detect_format,
    render_chat,
)
from openmaas.datasets.report import ValidationReport
from openmaas.datasets.schema import Source, TagScheme, infer_table_schema
from openmaas.datasets.service import (
    CONTENT_FILE,
    DatasetLimits,
    DatasetService,
    DatasetStatus,
)
from openmaas.datasets.split import check_ratios, parse_ratios, split_examples
from openmaas.datasets.stats import StatsBuilder, entity_types, label_counts
from openmaas.datasets.validate import DatasetReader, open_dataset
from openmaas.errors import (
    ArtifactCorrupted,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
)
from openmaas.registry.artifacts import ArtifactStore
from openmaas.store.database import Database
from openmaas.tasks.names import Task
from tests.conftest import SHARED_DATASETS
from tests.factories import member

DATA = SHARED_DATASETS or Path("shared-datasets-missing")
SST2 = DATA / "sst2" / "train.tsv"
AG_NEWS = DATA / "ag_news" / "test.csv"
CONLL = DATA / "conll2003" / "dev.txt"

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="needs the shared datasets")


def head_lines(path: Path, count: int) -> bytes:
    with path.open("rb") as handle:
        return b"".join(handle.readline() for _ in range(count))


def conll_sentences(path: Path, count: int) -> bytes:
    """The start of a CoNLL file up to the end of its `count`-th sentence."""
    kept: list[bytes] = []
    sentences = 0
    with path.open("rb") as handle:
        for line in handle:
            kept.append(line)
            if not line.strip() and kept[-2:-1] and kept[-2].strip():
                if not kept[-2].startswith(b"-DOCSTART-"):
                    sentences += 1
                if sentences == count:
                    break
    return b"".join(kept)


def read(
    data: bytes | str, filename: str = "", **options: Any
) -> tuple[DatasetReader, list[dict[str, Any]], ValidationReport]:
    raw = data.encode() if isinstance(data, str) else data
    reader = open_dataset(io.BytesIO(raw), filename=filename, **options)
    examples = list(reader)
    return reader, examples, reader.report()


def problems_at(report: ValidationReport) -> list[tuple[int | None, str]]:
    return [(problem.line, problem.code) for problem in report.problems]


def jsonl(*rows: Mapping[str, Any]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


# -- formats --------------------------------------------------------------------------------


@needs_data
def test_sst2_tsv_slice_reads_with_its_header() -> None:
    reader, examples, report = read(head_lines(SST2, 201), "train.tsv")
    schema = reader.schema
    assert (schema.format, schema.task, schema.has_header) == (
        Format.TSV,
        Task.TEXT_CLASSIFICATION,
        True,
    )
    assert (schema.text_column, schema.label_column) == ("sentence", "label")
    assert report.ok
    assert not report.problems
    assert len(examples) == report.rows_valid == 200
    assert examples[0] == {"text": "hide new secretions from the parental units ", "label": "0"}
    assert {example["label"] for example in examples} == {"0", "1"}


@needs_data
def test_ag_news_csv_without_header_is_inferred_from_content() -> None:
    reader, examples, report = read(head_lines(AG_NEWS, 400), "test.csv")
    schema = reader.schema
    assert not schema.has_header
    assert schema.columns == ("column_1", "column_2", "column_3")
    assert (schema.text_column, schema.label_column) == ("column_3", "column_1")
    assert any("no header row" in note for note in schema.notes)
    assert any("chosen by content" in note for note in schema.notes)
    assert report.ok
    assert len(examples) == 400
    assert set(label_counts(examples, Task.TEXT_CLASSIFICATION)) == {"1", "2", "3", "4"}
    assert examples[0]["text"].startswith("Unions representing workers at Turner")


@needs_data
def test_conll2003_is_iob1_and_arrives_as_bio_sentences() -> None:
    reader, examples, report = read(conll_sentences(CONLL, 120), "dev.txt")
    schema = reader.schema
    assert (schema.format, schema.task, schema.tag_scheme) == (
        Format.CONLL,
        Task.TOKEN_CLASSIFICATION,
        TagScheme.IOB1,
    )
    assert report.ok, report.problems
    assert len(examples) == 120
    first = examples[0]
    assert first["tokens"][:3] == ["CRICKET", "-", "LEICESTERSHIRE"]
    assert first["tags"][:3] == ["O", "O", "B-ORG"]
    # Every example is valid BIO now: no I- tag opens an entity.
    for example in examples:
        previous = "O"
        for tag in example["tags"]:
            assert not (tag.startswith("I-") and previous[2:] != tag[2:]), example
            previous = tag


@needs_data
def test_conll_entity_counts_match_the_published_figures() -> None:
    # The README's dev.txt figures: PER 1842, LOC 1837, ORG 1341, MISC 922; 3,250 sentences.
    with CONLL.open("rb") as handle:
        reader = open_dataset(handle, filename="dev.txt")
        examples = list(reader)
    assert len(examples) == 3250
    assert label_counts(examples, Task.TOKEN_CLASSIFICATION) == {
        "PER": 1842,
        "LOC": 1837,
        "ORG": 1341,
        "MISC": 922,
    }


def test_jsonl_text_label_and_integer_labels() -> None:
    reader, examples, report = read(
        jsonl({"text": "great", "label": 1}, {"text": "awful", "label": 0}), "a.jsonl"
    )
    assert reader.schema.source is Source.TEXT_LABEL
    assert examples == [{"text": "great", "label": "1"}, {"text": "awful", "label": "0"}]
    assert report.ok


def test_jsonl_tokens_and_tags() -> None:
    data = jsonl(
        {"tokens": ["Ada", "Lovelace", "wrote"], "tags": ["B-PER", "I-PER", "O"]},
        {"tokens": ["in", "London"], "tags": ["O", "B-LOC"]},
    )
    reader, examples, report = read(data, "ner.jsonl")
    assert (reader.schema.task, reader.schema.tag_scheme) == (
        Task.TOKEN_CLASSIFICATION,
        TagScheme.BIO,
    )
    assert examples[1] == {"tokens": ["in", "London"], "tags": ["O", "B-LOC"]}
    assert report.ok


def test_openai_chat_lines_are_rendered_to_text() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]},
        {"role": "assistant", "content": "Paris."},
    ]
    data = jsonl({"messages": messages}, {"messages": messages[1:]})
    reader, examples, report = read(data, "chat.jsonl")
    assert (reader.schema.source, reader.schema.task) == (Source.CHAT, Task.TEXT_GENERATION)
    assert report.ok, report.problems
    flat = [{"role": m["role"], "content": "Capital of France?"} for m in messages[1:2]]
    expected = render_chat([messages[0], *flat, messages[2]])
    assert examples[0]["text"] == expected
    assert expected.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")


def test_prompt_completion_and_plain_text_are_generation() -> None:
    reader, examples, _ = read(jsonl({"prompt": "Q: 2+2?\nA:", "completion": " 4"}), "pc.jsonl")
    assert reader.schema.source is Source.PROMPT_COMPLETION
    assert examples[0]["text"] == "Q: 2+2?\nA: 4"
    reader, examples, _ = read("text\nOnce upon a time\nThe end\n", "stories.csv")
    assert (reader.schema.source, reader.schema.task) == (Source.TEXT, Task.TEXT_GENERATION)
    assert examples == [{"text": "Once upon a time"}, {"text": "The end"}]


def test_csv_quoting_and_line_breaks_inside_fields() -> None:
    data = 'review,stars\n"Good, really ""good""",5\n"two\nlines",1\nok,5\nmeh,1\n'
    _, examples, report = read(data, "reviews.csv")
    assert report.ok, report.problems
    assert examples[0] == {"text": 'Good, really "good"', "label": "5"}
    assert examples[1]["text"] == "two\nlines"


@pytest.mark.parametrize(
    ("filename", "head", "expected"),
    [
        ("x.jsonl", b'{"text": "a"}\n', Format.JSONL),
        ("x.ndjson", b"", Format.JSONL),
        ("x.tsv", b"a\tb\n", Format.TSV),
        ("x.conll", b"EU B-ORG\n", Format.CONLL),
        ("upload", b'{"text": "a"}\n', Format.JSONL),
        ("train.txt", b"-DOCSTART- -X- O\n\nEU NNP B-ORG\n", Format.CONLL),
        ("train.txt", b"EU B-ORG\nrejects O\n\nPeter B-PER\n", Format.CONLL),
        ("data.txt", b"text\tlabel\ngood\tpos\n", Format.TSV),
        ("data.txt", b"text,label\ngood,pos\n", Format.CSV),
    ],
)
def test_format_by_name_then_content(filename: str, head: bytes, expected: Format) -> None:
    assert detect_format(filename, head or b"x", None) is expected


def test_an_explicit_format_wins_and_a_wrong_one_is_named() -> None:
    assert detect_format("a.csv", b"a\tb\n", "tsv") is Format.TSV
    assert detect_format("a.csv", b"{}\n", "json") is Format.JSONL
    with pytest.raises(InvalidRequest) as exc:
        detect_format("a.csv", b"a,b\n", "xlsx")
    assert exc.value.param == "format"


@pytest.mark.parametrize(
    ("head", "words"),
    [
        (b"", "empty"),
        (b"  \n\n", "empty"),
        (b"\x1f\x8b\x08\x00rest", "compressed"),
        (b"\xff\xfet\x00e\x00", "UTF-16"),
        (b"\x00\x01\x02binary", "binary"),
        (b"just some words\nmore words\n", "cannot tell"),
    ],
)
def test_unreadable_files_are_refused_with_the_reason(head: bytes, words: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        read(head, "upload")
    assert (exc.value.code, exc.value.status_code) == ("invalid_file", 400)
    assert words in exc.value.message


# -- validation problems, by line -----------------------------------------------------------


def test_missing_label_names_the_line_and_a_likely_typo() -> None:
    _, examples, report = read("text,label\ngood,pos\nbad,\nfine,neg\n", "a.csv")
    assert problems_at(report) == [(3, "missing_label")]
    assert report.problems[0].column == "label"
    assert len(examples) == 2
    assert not report.ok
    data = jsonl(
        {"text": "a", "label": "x"}, {"text": "b", "lable": "y"}, {"text": "c", "label": "y"}
    )
    _, _, report = read(data, "a.jsonl")
    missing = [p for p in report.problems if p.code == "missing_label"]
    assert [(p.line, p.column) for p in missing] == [(2, "label")]
    assert "did you mean 'label'" in missing[0].hint


def test_empty_text_names_the_line() -> None:
    _, _, report = read("sentence\tlabel\nfine\t1\n   \t0\nok\t0\n", "a.tsv")
    assert problems_at(report) == [(3, "empty_text")]
    assert report.problems[0].column == "sentence"
    assert report.problems[0].hint


@pytest.mark.parametrize(
    ("filename", "data", "line"),
    [
        ("a.csv", b"text,label\ngood,pos\ncaf\xe9,neg\nok,neg\n", 3),
        (
            "a.jsonl",
            b'{"text":"a","label":"x"}\n{"text":"caf\xe9","label":"y"}\n{"text":"b","label":"y"}\n',
            2,
        ),
        ("a.conll", b"EU B-ORG\n\nParis B-LOC\nVerlag\xe9 O\n\nBonn B-LOC\n", 4),
    ],
)
def test_bad_encoding_names_the_line_and_byte(filename: str, data: bytes, line: int) -> None:
    _, _, report = read(data, filename)
    assert problems_at(report) == [(line, "bad_encoding")]
    assert "0xe9" in report.problems[0].problem
    assert "UTF-8" in report.problems[0].hint


def test_an_extra_field_is_an_unknown_column_and_an_open_quote_is_pointed_out() -> None:
    data = 'text,label\n"a, b",x\na, b,x\nc,y\n"open quote,x\nd,y\n'
    _, examples, report = read(data, "a.csv")
    assert problems_at(report) == [(3, "unknown_column"), (5, "missing_column")]
    assert "3 fields" in report.problems[0].problem
    assert "quote left open" in report.problems[1].problem
    assert [e["text"] for e in examples] == ["a, b", "c"]


def test_a_row_the_csv_rules_cannot_read_is_an_invalid_row() -> None:
    huge = "x" * 200_000  # past the csv module's field limit (128 KiB)
    data = f'text,label\ngood,a\n"{huge}",b\nfine,b\n'
    _, examples, report = read(data, "a.csv")
    assert problems_at(report) == [(3, "invalid_row")]
    assert "quote" in report.problems[0].hint
    assert [e["text"] for e in examples] == ["good", "fine"]


def test_tsv_has_no_quoting() -> None:
    data = 'sentence\tlabel\n"quoted" words , here \t1\nan " odd quote \t0\n'
    _, examples, report = read(data, "a.tsv")
    assert report.ok
    assert [e["text"] for e in examples] == ['"quoted" words , here ', 'an " odd quote ']


def test_an_unknown_jsonl_field_is_a_warning_reported_once() -> None:
    rows = [{"text": f"t{i}", "label": "ab"[i % 2], "id": i} for i in range(5)]
    _, examples, report = read(jsonl(*rows), "a.jsonl")
    assert report.ok
    assert len(examples) == 5
    assert [(p.line, p.code, p.severity) for p in report.problems] == [
        (1, "unknown_column", "warning")
    ]
    assert report.problems[0].column == "id"


def test_a_named_column_that_does_not_exist_is_refused() -> None:
    with pytest.raises(InvalidRequest) as exc:
        read("text,label\na,b\n", "a.csv", text_column="body")
    assert exc.value.param == "text_column"
    assert "text, label" in exc.value.message
    with pytest.raises(InvalidRequest) as exc:
        read(jsonl({"text": "a", "label": "b"}), "a.jsonl", label_column="class")
    assert exc.value.param == "label_column"


def test_inconsistent_bio_and_invalid_tags_name_the_token_line() -> None:
    data = "Ada B-PER\nLovelace I-PER\n\nin O\nLondon I-LOC\n\nat O\nPARIS B_LOC\n\nok B-LOC\n"
    _, examples, report = read(data, "a.conll")
    assert problems_at(report) == [(5, "inconsistent_bio"), (8, "invalid_tag")]
    assert "London" in report.problems[0].problem
    assert report.problems[0].column == "tag"
    assert len(examples) == 2


def test_jsonl_ner_length_mismatch_and_invalid_json() -> None:
    data = (
        jsonl({"tokens": ["a", "b"], "tags": ["O", "B-X"]}, {"tokens": ["a"], "tags": ["O", "O"]})
        + "{not json\n"
        + '["an", "array"]\n'
    )
    _, _, report = read(data, "a.jsonl")
    assert problems_at(report) == [(2, "length_mismatch"), (3, "invalid_json"), (4, "invalid_json")]
    assert "array" in report.problems[2].problem


def test_chat_problems_name_the_message() -> None:
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    data = jsonl(
        good,
        {"messages": [{"role": "robot", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]},
        {"messages": []},
    )
    _, examples, report = read(data, "chat.jsonl")
    assert [(p.line, p.code, p.column) for p in report.problems] == [
        (2, "invalid_value", "messages[0].role"),
        (3, "invalid_value", "messages"),
        (4, "empty_text", "messages[1].content"),
        (5, "invalid_value", "messages"),
    ]
    assert len(examples) == 1


def test_file_level_problems_have_no_line() -> None:
    _, _, report = read("text,label\na,pos\nb,pos\n", "a.csv")
    assert problems_at(report) == [(None, "too_few_labels")]
    _, _, report = read("text,label\na,\nb,\n", "a.csv")
    assert problems_at(report)[-1] == (None, "no_examples")


def test_problems_stop_being_kept_after_the_cap_but_all_are_counted() -> None:
    rows = "".join(f"row {i},\n" if i % 2 else f"row {i},x{i % 3}\n" for i in range(500))
    _, examples, report = read("text,label\n" + rows, "a.csv", max_problems=10)
    assert len(report.problems) == 10
    assert report.errors == report.counts["missing_label"] == 250
    assert report.truncated
    assert len(examples) == 250
    assert [p.line for p in report.problems] == [3 + 2 * i for i in range(10)]
    assert report.summary() is not None
    assert "line 3" in (report.summary() or "")


# -- schema inference -----------------------------------------------------------------------


def test_columns_by_common_names() -> None:
    schema = infer_table_schema(
        Format.CSV, [("id", "Review", "Sentiment"), ("1", "good film", "pos")], None, None
    )
    assert (schema.text_column, schema.label_column, schema.has_header) == (
        "Review",
        "Sentiment",
        True,
    )


def test_columns_by_content_when_names_say_nothing() -> None:
    rows = [("code", "body_of_it", "kind")] + [
        (str(i), f"a long piece of writing number {i}", "ab"[i % 2]) for i in range(20)
    ]
    schema = infer_table_schema(Format.CSV, rows, None, None)
    assert (schema.text_column, schema.label_column) == ("body_of_it", "kind")
    assert len(schema.notes) == 2


def test_explicit_columns_override_inference() -> None:
    data = "title,text,label,topic\nT1,body one,x,sport\nT2,body two,y,news\n"
    reader, examples, _ = read(data, "a.csv", text_column="title", label_column="topic")
    assert (reader.schema.text_column, reader.schema.label_column) == ("title", "topic")
    assert examples[0] == {"text": "T1", "label": "sport"}


def test_no_text_column_is_refused() -> None:
    with pytest.raises(InvalidRequest) as exc:
        read("a,b\n1,2\n3,4\n", "numbers.csv")
    assert exc.value.code == "invalid_file"


# -- statistics -----------------------------------------------------------------------------


def test_stats_rows_labels_lengths_and_duplicates() -> None:
    examples = [
        {"text": "one two three", "label": "a"},
        {"text": "one two three", "label": "a"},  # duplicate row
        {"text": "one two three", "label": "b"},  # same text, other label
        {"text": "four", "label": "b"},
        {"text": "five six", "label": "a"},
    ]
    builder = StatsBuilder(Task.TEXT_CLASSIFICATION)
    for example in examples:
        builder.add(example)
    stats = builder.build()
    assert stats.rows == 5
    assert stats.labels == {"a": 3, "b": 2}
    assert (stats.duplicates, stats.duplicate_texts, stats.conflicting_labels) == (1, 2, 1)
    assert stats.words is not None
    assert stats.chars is not None
    assert (stats.words.min, stats.words.p50, stats.words.max) == (1, 3, 3)
    assert stats.words.mean == 2.4  # (3 + 3 + 3 + 1 + 2) / 5
    assert (stats.chars.min, stats.chars.max) == (4, 13)


def test_percentiles_are_nearest_rank() -> None:
    builder = StatsBuilder(Task.TEXT_GENERATION)
    for n in range(1, 101):
        builder.add({"text": " ".join(["w"] * n)})
    words = builder.build().words
    assert words is not None
    assert (words.p50, words.p90, words.p95, words.p99, words.max) == (50, 90, 95, 99, 100)


@needs_data
def test_ner_stats_count_entities_per_type() -> None:
    _, examples, _ = read(conll_sentences(CONLL, 50), "dev.txt")
    builder = StatsBuilder(Task.TOKEN_CLASSIFICATION)
    for example in examples:
        builder.add(example)
    stats = builder.build()
    expected = Counter(t for e in examples for t in entity_types(e["tags"]))
    assert stats.labels == dict(expected)
    assert stats.rows == 50
    assert stats.words is not None
    assert stats.words.max == max(len(e["tokens"]) for e in examples)


# -- splits ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ag_examples() -> list[dict[str, Any]]:
    if not DATA.is_dir():
        pytest.skip("needs the shared datasets")
    return read(head_lines(AG_NEWS, 1000), "test.csv")[1]


def test_split_is_deterministic_for_a_seed(ag_examples: list[dict[str, Any]]) -> None:
    task = Task.TEXT_CLASSIFICATION
    first = split_examples(ag_examples, task, seed=7)
    assert split_examples(ag_examples, task, seed=7) == first
    assert split_examples(ag_examples, task, seed=8).train != first.train
    # The row order of the file does not matter; each split keeps the file's order.
    shuffled = split_examples(list(reversed(ag_examples)), task, seed=7)
    for part, again in zip(first, shuffled, strict=True):
        assert sorted(map(canonical_json, part)) == sorted(map(canonical_json, again))
    index = {id(example): i for i, example in enumerate(ag_examples)}
    assert [index[id(e)] for e in first.test] == sorted(index[id(e)] for e in first.test)


@pytest.mark.parametrize(
    "ratios", [(0.8, 0.1, 0.1), (0.7, 0.2, 0.1), (0.6, 0.25, 0.15), (0.9, 0.1)]
)
def test_split_is_stratified_within_one_example(
    ag_examples: list[dict[str, Any]], ratios: Sequence[float]
) -> None:
    shares = check_ratios(ratios)
    splits = split_examples(ag_examples, Task.TEXT_CLASSIFICATION, seed=3, ratios=ratios)
    totals = label_counts(ag_examples, Task.TEXT_CLASSIFICATION)
    assert sum(len(part) for part in splits) == len(ag_examples)
    for part, share in zip(splits, shares, strict=True):
        counts = label_counts(part, Task.TEXT_CLASSIFICATION)
        for label, total in totals.items():
            assert abs(counts.get(label, 0) - total * share) < 1, (label, share)
        assert abs(len(part) - len(ag_examples) * share) <= 1


def test_small_and_uneven_labels_stay_within_one_example() -> None:
    examples = [{"text": f"t{i}", "label": label} for i, label in enumerate("aaaaaaabbbcx" * 3)]
    splits = split_examples(examples, Task.TEXT_CLASSIFICATION, seed=1)
    totals = label_counts(examples, Task.TEXT_CLASSIFICATION)
    for part, share in zip(splits, (0.8, 0.1, 0.1), strict=True):
        counts = label_counts(part, Task.TEXT_CLASSIFICATION)
        for label, total in totals.items():
            assert abs(counts.get(label, 0) - total * share) < 1
        assert abs(len(part) - len(examples) * share) <= 1


@needs_data
def test_ner_splits_by_sentence() -> None:
    _, examples, _ = read(conll_sentences(CONLL, 200), "dev.txt")
    train, validation, test = split_examples(examples, Task.TOKEN_CLASSIFICATION, seed=0)
    assert (len(train), len(validation), len(test)) == (160, 20, 20)
    together = sorted(json.dumps(e, sort_keys=True) for e in [*train, *validation, *test])
    assert together == sorted(json.dumps(e, sort_keys=True) for e in examples)


def test_ratios_are_checked() -> None:
    assert parse_ratios("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    assert parse_ratios("0.9,0.1") == (0.9, 0.1, 0.0)
    for bad in ("0.8,0.3", "1,0,0,0", "0,0.5,0.5", "a,b", "-0.2,0.6,0.6"):
        with pytest.raises(InvalidRequest) as exc:
            parse_ratios(bad)
        assert exc.value.param == "ratios"


# -- the content hash -----------------------------------------------------------------------


def test_the_content_hash_is_equal_across_formats() -> None:
    rows = [("a fine film", "1"), ("not good, at all", "0"), ('say "hi"', "1")]
    csv_text = "text,label\n" + "".join(
        f'"{t.replace(chr(34), chr(34) * 2)}",{label}\n' for t, label in rows
    )
    tsv_text = "sentence\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in rows)
    jsonl_text = jsonl(*({"text": t, "label": int(label)} for t, label in rows))
    hashes = {
        name: content_sha256(read(data, name)[1])
        for name, data in (("a.csv", csv_text), ("a.tsv", tsv_text), ("a.jsonl", jsonl_text))
    }
    assert len(set(hashes.values())) == 1, hashes
    changed = jsonl(*({"text": t, "label": int(label)} for t, label in rows[:2]))
    assert content_sha256(read(changed, "a.jsonl")[1]) not in hashes.values()


def test_conll_iob1_and_jsonl_bio_of_the_same_sentences_hash_alike() -> None:
    conll = "Ada I-PER\nLovelace I-PER\nwrote O\n\nin O\nLondon I-LOC\n\n"
    bio = jsonl(
        {"tokens": ["Ada", "Lovelace", "wrote"], "tags": ["B-PER", "I-PER", "O"]},
        {"tokens": ["in", "London"], "tags": ["O", "B-LOC"]},
    )
    assert content_sha256(read(conll, "a.conll")[1]) == content_sha256(read(bio, "a.jsonl")[1])


# -- the service ----------------------------------------------------------------------------


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'openmaas.db'}")
    db.migrate()
    yield db
    db.close()


def make_service(
    database: Database, root: Path, *, keys: Keyring | None = None, **limits: int
) -> DatasetService:
    store = ArtifactStore(root, keys, scratch_dirs=(root / "scratch",))
    store.start()
    service = DatasetService(database, store, DatasetLimits(**limits))
    service.start()
    return service


@pytest.fixture
def service(database: Database, tmp_path: Path) -> DatasetService:
    return make_service(database, tmp_path / "artifacts")


CLASSIFICATION_CSV = "text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(40))


def upload(service: DatasetService, data: str | bytes, name: str, project: str = "acme") -> Any:
    raw = data.encode() if isinstance(data, str) else data
    return service.create(
        io.BytesIO(raw), filename=name, project=project, caller=SYSTEM, created_by="om-test"
    )


def test_create_records_schema_stats_report_and_hashes(service: DatasetService) -> None:
    dataset = upload(service, CLASSIFICATION_CSV, "../../etc/train.csv")
    assert dataset.id.startswith("file-")
    assert len(dataset.id) == 29
    assert (dataset.filename, dataset.format, dataset.status) == (
        "train.csv",
        Format.CSV,
        DatasetStatus.PROCESSED,
    )
    assert dataset.size_bytes == len(CLASSIFICATION_CSV.encode())
    assert dataset.stats.rows == 40
    assert dataset.stats.labels == {"a": 20, "b": 20}
    assert dataset.task is Task.TEXT_CLASSIFICATION
    assert dataset.report.ok
    task, examples = service.load(dataset.id, caller=member("acme"))
    assert task is Task.TEXT_CLASSIFICATION
    assert dataset.content_sha256 == content_sha256(examples)
    assert service.get(dataset.id, caller=member("acme")) == dataset
    assert (
        b"".join(service.content(dataset.id, caller=member("acme"))) == CLASSIFICATION_CSV.encode()
    )


def test_another_projects_file_is_not_found(service: DatasetService) -> None:
    dataset = upload(service, CLASSIFICATION_CSV, "a.csv", project="acme")
    for call in (service.get, service.content, service.load, service.delete):
        with pytest.raises(NotFound) as hidden:
            call(dataset.id, caller=member("other"))
        with pytest.raises(NotFound) as absent:
            call("file-000000000000000000000000", caller=member("other"))
        assert hidden.value.code == absent.value.code == "file_not_found"
        assert hidden.value.message.replace(dataset.id, "X") == absent.value.message.replace(
            "file-000000000000000000000000", "X"
        )
    assert [d.id for d in service.list(caller=member("other"))] == []
    assert [d.id for d in service.list(caller=member("acme"))] == [dataset.id]
    assert [d.id for d in service.list(caller=SYSTEM)] == [dataset.id]  # admins see every project
    assert service.get(dataset.id, caller=SYSTEM).id == dataset.id


def test_list_is_newest_first_and_pages_with_after(service: DatasetService) -> None:
    ids = [upload(service, CLASSIFICATION_CSV, f"{i}.csv").id for i in range(4)]
    assert [d.id for d in service.list(caller=member("acme"))] == ids[::-1]
    assert [d.id for d in service.list(caller=member("acme"), order="asc")] == ids
    page = service.list(caller=member("acme"), limit=2)
    assert [d.id for d in service.list(caller=member("acme"), after=page[-1].id)] == ids[1::-1]
    assert [d.id for d in service.list(caller=member("acme"), purpose="batch")] == []


def test_delete_removes_the_record_and_the_file(service: DatasetService) -> None:
    dataset = upload(service, CLASSIFICATION_CSV, "a.csv")
    assert (service.root / dataset.id / CONTENT_FILE).is_file()
    assert service.delete(dataset.id, caller=member("acme")).id == dataset.id
    assert not (service.root / dataset.id).exists()
    with pytest.raises(NotFound):
        service.get(dataset.id, caller=member("acme"))


def test_a_file_failing_validation_is_kept_with_its_report_and_refused_for_training(
    service: DatasetService,
) -> None:
    dataset = upload(service, "text,label\ngood,pos\n,neg\nfine,\n", "bad.csv")
    assert dataset.status is DatasetStatus.ERROR
    assert [(p.line, p.code) for p in dataset.report.problems] == [
        (3, "empty_text"),
        (4, "missing_label"),
        (None, "too_few_labels"),
    ]
    assert dataset.status_details
    assert "line 3" in dataset.status_details
    with pytest.raises(InvalidRequest) as exc:
        service.load(dataset.id, caller=member("acme"))
    assert exc.value.code == "invalid_dataset"


def test_an_unreadable_upload_keeps_nothing(service: DatasetService) -> None:
    with pytest.raises(InvalidRequest) as exc:
        upload(service, b"", "empty.jsonl")
    assert exc.value.code == "invalid_file"
    with pytest.raises(InvalidRequest) as exc:
        service.create(
            io.BytesIO(b"x"),
            filename="a.csv",
            project="acme",
            caller=SYSTEM,
            purpose="assistants",
        )
    assert exc.value.param == "purpose"
    assert list(service.root.iterdir()) == []
    assert service.list(caller=SYSTEM) == []


def test_the_size_limit_is_enforced_while_streaming(database: Database, tmp_path: Path) -> None:
    service = make_service(database, tmp_path / "artifacts", max_bytes=1000)
    assert upload(service, "text,label\n" + "x,a\ny,b\n" * 100, "ok.csv").size_bytes == 811
    with pytest.raises(PayloadTooLarge) as exc:
        upload(service, "text,label\n" + "x,a\ny,b\n" * 200, "big.csv")
    assert (exc.value.status_code, exc.value.code) == (413, "file_too_large")
    assert "1000 bytes" in exc.value.message
    assert "OPENMAAS_MAX_DATASET_MB" in exc.value.message
    assert len(list(service.root.iterdir())) == 1  # only the first upload


def test_splits_come_from_the_service(service: DatasetService) -> None:
    dataset = upload(service, CLASSIFICATION_CSV, "a.csv")
    train, validation, test = service.splits(dataset.id, caller=member("acme"), seed=5)
    assert (len(train), len(validation), len(test)) == (32, 4, 4)
    assert service.splits(dataset.id, caller=member("acme"), seed=5) == (train, validation, test)
    with pytest.raises(InvalidRequest):
        service.splits(dataset.id, caller=member("acme"), ratios=(0.5, 0.6))


def test_files_are_encrypted_at_rest_and_read_back_in_the_clear(
    database: Database, tmp_path: Path
) -> None:
    keys = Keyring(EncryptionKey.generate())
    service = make_service(database, tmp_path / "artifacts", keys=keys)
    dataset = upload(service, CLASSIFICATION_CSV, "secret.csv")
    stored = (service.root / dataset.id / CONTENT_FILE).read_bytes()
    assert b"text 1" not in stored
    assert dataset.sha256
    assert dataset.size_bytes == len(CLASSIFICATION_CSV)
    assert b"".join(service.content(dataset.id, caller=SYSTEM)) == CLASSIFICATION_CSV.encode()
    assert len(service.load(dataset.id, caller=SYSTEM)[1]) == 40


def test_a_changed_file_is_refused_on_load(service: DatasetService) -> None:
    dataset = upload(service, CLASSIFICATION_CSV, "a.csv")
    path = service.root / dataset.id / CONTENT_FILE
    path.chmod(0o600)
    path.write_text(CLASSIFICATION_CSV.replace("text 3,b", "text 3,a"))
    with pytest.raises(ArtifactCorrupted):
        service.load(dataset.id, caller=SYSTEM)


def test_start_sweeps_what_interrupted_uploads_left(
    service: DatasetService, database: Database, tmp_path: Path
) -> None:
    kept = upload(service, CLASSIFICATION_CSV, "a.csv")
    old = service.root / "file-aaaaaaaaaaaaaaaaaaaaaaaa"
    young = service.root / "file-bbbbbbbbbbbbbbbbbbbbbbbb"
    for leftover in (old, young):
        leftover.mkdir()
        (leftover / CONTENT_FILE).write_text("partial")
    hours_ago = time.time() - 7200
    os.utime(old, (hours_ago, hours_ago))
    os.utime(service.root / kept.id, (hours_ago, hours_ago))
    assert service.start() == [old.name]
    assert young.is_dir()
    assert (service.root / kept.id).is_dir()


# -- the examples of docs/datasets.md ---------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "datasets.md"
DOC_FILE = re.compile(r"`([\w.]+)`:\n\n```(\w+)\n(.*?)```", re.DOTALL)
DOC_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def doc_block_after(marker: str) -> str:
    """The first code block after `marker` in the docs."""
    text = DOCS.read_text()
    found = DOC_BLOCK.search(text, text.index(marker))
    assert found is not None, marker
    return found.group(2)


def doc_files() -> dict[str, str]:
    """The example files of the docs, by name."""
    return {name: body for name, _, body in DOC_FILE.findall(DOCS.read_text())}


def test_the_docs_example_files_read_as_documented() -> None:
    files = doc_files()
    assert set(files) >= {"chat.jsonl", "train.jsonl", "reviews.csv", "ner.conll", "broken.csv"}
    expected = {
        "chat.jsonl": Task.TEXT_GENERATION,
        "completions.jsonl": Task.TEXT_GENERATION,
        "train.jsonl": Task.TEXT_CLASSIFICATION,
        "entities.jsonl": Task.TOKEN_CLASSIFICATION,
        "reviews.csv": Task.TEXT_CLASSIFICATION,
        "sst2.tsv": Task.TEXT_CLASSIFICATION,
        "ner.conll": Task.TOKEN_CLASSIFICATION,
    }
    options = {"reviews.csv": {"label_column": "stars"}}
    for name, task in expected.items():
        reader, examples, report = read(files[name], name, **options.get(name, {}))
        assert reader.schema.task is task, name
        assert report.ok, (name, report.problems)
        assert examples, name
    chat = read(files["chat.jsonl"], "chat.jsonl")[1]
    assert chat[1]["text"] == (
        "<|im_start|>user\nCapital of Italy?<|im_end|>\n<|im_start|>assistant\nRome<|im_end|>"
    )
    ner = read(files["ner.conll"], "ner.conll")[1]
    assert ner[0] == {
        "tokens": ["EU", "rejects", "German", "call"],
        "tags": ["B-ORG", "O", "B-MISC", "O"],
    }


def test_the_docs_validation_report_is_the_real_one() -> None:
    documented = json.loads(doc_block_after('is kept with `status: "error"` and this report'))
    report = read(doc_files()["broken.csv"], "broken.csv")[2]
    assert report.to_dict() == documented


def test_the_docs_hash_recipe_gives_the_content_hash() -> None:
    script = doc_block_after("To reproduce it:")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(script, {})
    examples = [{"text": "A moving, beautifully shot film.", "label": "positive"}]
    assert printed.getvalue().strip() == content_sha256(examples)
