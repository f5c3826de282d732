"""Checks of token-classification records (NER): a list of tokens and one tag per token, the
tags in BIO (`O`, `B-TYPE`, `I-TYPE`), from JSONL rows or CoNLL sentences.

Example::

    example = tokens_tags_example(report, schema, record, record.values)
    # {"tokens": ["Paris"], "tags": ["B-LOC"]}, or None with each bad tag reported by line
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from openmaas.datasets.checks.fields import kind_of, report_missing, shortened
from openmaas.datasets.formats import BIO_TAG, Example, Format, RawRecord
from openmaas.datasets.report import ReportBuilder
from openmaas.datasets.schema import DatasetSchema, TagScheme


def tokens_tags_example(
    report: ReportBuilder, schema: DatasetSchema, record: RawRecord, values: Mapping[str, Any]
) -> Example | None:
    """Tokens with one BIO tag each (IOB1 converted when the schema says so)."""
    tokens_column = schema.tokens_column or "tokens"
    tags_column = schema.tags_column or "tags"
    line = record.line
    if schema.format is Format.CONLL:  # read as lists already; columns named singly
        tokens, tags = values["tokens"], values["tags"]
    else:
        tokens, tags = values.get(tokens_column), values.get(tags_column)
    ok = True
    for column, value in ((tokens_column, tokens), (tags_column, tags)):
        if value is None:
            report_missing(report, line, values, column, "missing_column")
            ok = False
        elif not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            report.add(
                line,
                "invalid_value",
                f"{column!r} must be a list of strings, not {kind_of(value)}",
                column=column,
                hint='write tokens and tags as lists of strings, e.g. ["Paris"] and ["B-LOC"]',
            )
            ok = False
    if not ok:
        return None
    assert isinstance(tokens, list)
    assert isinstance(tags, list)
    if not tokens or not all(token.strip() for token in tokens):
        report.add(line, "empty_text", "no tokens, or an empty token", column=tokens_column)
        return None
    if len(tokens) != len(tags):
        report.add(
            line,
            "length_mismatch",
            f"{len(tokens)} tokens but {len(tags)} tags",
            column=tags_column,
        )
        return None
    iob1 = schema.tag_scheme is TagScheme.IOB1
    checked = bio_tags(report, record, tokens, tags, tags_column, iob1=iob1)
    return None if checked is None else {"tokens": list(tokens), "tags": checked}


def bio_tags(
    report: ReportBuilder,
    record: RawRecord,
    tokens: Sequence[str],
    tags: Sequence[str],
    column: str,
    *,
    iob1: bool,
) -> list[str] | None:
    """The tags as BIO (IOB1 converted), or None after reporting each bad tag."""
    lines = record.token_lines or (record.line,) * len(tags)
    result: list[str] = []
    ok = True
    previous = "O"
    for index, (token, tag) in enumerate(zip(tokens, tags, strict=True)):
        where = f"token {index + 1} ({shortened(token)})"
        if not BIO_TAG.fullmatch(tag):
            report.add(
                lines[index],
                "invalid_tag",
                f"tag {shortened(tag)} on {where} is not O, B-TYPE or I-TYPE",
                column=column,
            )
            ok, previous = False, "O"
            result.append("O")
            continue
        continues = tag[2:] == previous[2:] and previous != "O"
        if tag.startswith("I-") and not continues:
            if iob1:
                tag = "B-" + tag[2:]
            else:
                report.add(
                    lines[index],
                    "inconsistent_bio",
                    f"tag {tag} on {where} follows {previous}: an I- tag must continue an "
                    f"entity of type {tag[2:]}",
                    column=column,
                )
                ok = False
        result.append(tag)
        previous = tag
    return result if ok else None
