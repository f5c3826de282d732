"""The validation report of a dataset file: every problem by line (what is wrong, how to fix
it), counted by code, the first `max_problems` kept in full. `ReportBuilder` collects them
while a `DatasetReader` (`validate.py`) reads the file; the report is stored with the dataset
and served as JSON (`to_dict` / `from_dict`).

Example::

    problems = ReportBuilder(max_problems=10)
    problems.add(3, "empty_text", "'text' is empty", column="text")
    report = problems.build(rows_read=5, rows_valid=4)
    report.ok, report.summary()  # False, "validation failed: 1 error (empty_text x1); ..."
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

DEFAULT_MAX_PROBLEMS = 100
Severity = Literal["error", "warning"]

HINTS = {
    "bad_encoding": "save the file as UTF-8",
    "invalid_json": "write exactly one JSON object per line",
    "invalid_row": "quote fields that contain the delimiter, a quote or a line break (CSV), "
    "or remove tabs and line breaks inside fields (TSV)",
    "missing_column": "add the missing field to this row, or remove the row",
    "unknown_column": "remove the extra field, or quote a field that contains the delimiter",
    "empty_text": "fill in the text, or remove the row",
    "missing_label": "give the row a label, or remove it",
    "invalid_value": "see the expected shape in docs/datasets.md",
    "length_mismatch": "give every token exactly one tag",
    "invalid_tag": "write tags as O, B-TYPE or I-TYPE (for example B-PER)",
    "inconsistent_bio": "open every entity with B-TYPE; I-TYPE only continues an entity of "
    "the same type",
    "no_examples": "fix the problems reported and upload the file again",
    "too_few_labels": "a classifier needs examples of at least two labels",
    # datasets of images (images.py)
    "unreadable_image": "replace the file with a PNG, JPEG, GIF, BMP, WEBP or TIFF image",
    "image_too_small": "use images at least 8 x 8 pixels",
    "not_in_class_folder": "put every image inside a folder named after its class",
    "too_few_images": "give every class at least 3 images (one each for train, validation "
    "and test)",
    "few_images": "10 or more images per class train better",
    "mixed_channels": "grey images are repeated to RGB for training; convert them if that "
    "is not what you want",
}


@dataclass(frozen=True, slots=True)
class Problem:
    line: int | None  # 1-based; None for a problem of the whole file
    column: str | None
    code: str
    problem: str
    hint: str
    severity: Severity = "error"

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "column": self.column,
            "code": self.code,
            "severity": self.severity,
            "problem": self.problem,
            "hint": self.hint,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Problem:
        return cls(
            line=data.get("line"),
            column=data.get("column"),
            code=data["code"],
            problem=data["problem"],
            hint=data.get("hint", ""),
            severity="warning" if data.get("severity") == "warning" else "error",
        )


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """Every problem counted; the first `max_problems` kept in full."""

    problems: tuple[Problem, ...] = ()
    errors: int = 0
    warnings: int = 0
    counts: Mapping[str, int] = field(default_factory=dict)  # by code, all of them
    rows_read: int = 0
    rows_valid: int = 0
    max_problems: int = DEFAULT_MAX_PROBLEMS

    @property
    def ok(self) -> bool:
        return self.errors == 0

    @property
    def truncated(self) -> bool:
        return len(self.problems) < self.errors + self.warnings

    def summary(self) -> str | None:
        """One line for an error status (OpenAI's `status_details`); None when ok."""
        if self.ok:
            return None
        kinds = ", ".join(f"{code} x{n}" for code, n in sorted(self.counts.items()))
        text = f"validation failed: {self.errors} error{'s' if self.errors != 1 else ''} ({kinds})"
        first = next((p for p in self.problems if p.severity == "error"), None)
        if first is not None:
            where = f"line {first.line}: " if first.line is not None else ""
            text += f"; first: {where}{first.problem}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": self.errors,
            "warnings": self.warnings,
            "counts": dict(self.counts),
            "rows_read": self.rows_read,
            "rows_valid": self.rows_valid,
            "max_problems": self.max_problems,
            "truncated": self.truncated,
            "problems": [problem.to_dict() for problem in self.problems],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ValidationReport:
        return cls(
            problems=tuple(Problem.from_dict(p) for p in data.get("problems", ())),
            errors=int(data.get("errors", 0)),
            warnings=int(data.get("warnings", 0)),
            counts=dict(data.get("counts", {})),
            rows_read=int(data.get("rows_read", 0)),
            rows_valid=int(data.get("rows_valid", 0)),
            max_problems=int(data.get("max_problems", DEFAULT_MAX_PROBLEMS)),
        )


class ReportBuilder:
    """Collects the problems of one file as it is read (counting all, keeping the first
    `max_problems`); `build` makes the report once the last row is in."""

    def __init__(self, max_problems: int = DEFAULT_MAX_PROBLEMS) -> None:
        self.max_problems = max_problems
        self._problems: list[Problem] = []
        self._counts: Counter[str] = Counter()
        self._severities: Counter[str] = Counter()

    def add(
        self,
        line: int | None,
        code: str,
        problem: str,
        *,
        column: str | None = None,
        hint: str | None = None,
        severity: Severity = "error",
    ) -> None:
        self._counts[code] += 1
        self._severities[severity] += 1
        if len(self._problems) < self.max_problems:
            found = Problem(line, column, code, problem, hint or HINTS.get(code, ""), severity)
            self._problems.append(found)

    @property
    def errors(self) -> int:
        return self._severities["error"]

    def build(self, rows_read: int, rows_valid: int) -> ValidationReport:
        return ValidationReport(
            problems=tuple(self._problems),
            errors=self._severities["error"],
            warnings=self._severities["warning"],
            counts=dict(sorted(self._counts.items())),
            rows_read=rows_read,
            rows_valid=rows_valid,
            max_problems=self.max_problems,
        )
