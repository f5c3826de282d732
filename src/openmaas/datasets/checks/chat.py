"""Checks of the records a language model learns from: OpenAI's chat format (`messages`) and
prompt/completion pairs.

Example::

    example = chat_example(report, line, {"messages": [{"role": "user", "content": "hi"}]})
    # None: the problem "no assistant message: nothing to learn from" is in the report
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from openmaas.datasets.checks.fields import kind_of, report_missing, shortened, text_field
from openmaas.datasets.formats import Example, render_chat
from openmaas.datasets.report import ReportBuilder

CHAT_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def chat_example(report: ReportBuilder, line: int, values: Mapping[str, Any]) -> Example | None:
    """A conversation (`messages`) that ends in something to learn: an assistant turn."""
    messages = values.get("messages")
    if messages is None:
        report_missing(report, line, values, "messages", "missing_column")
        return None
    if not isinstance(messages, list) or not messages:
        report.add(
            line,
            "invalid_value",
            f"'messages' is {kind_of(messages)}; it must be a non-empty list of messages",
            column="messages",
            hint='write [{"role": "user", "content": "..."}, '
            '{"role": "assistant", "content": "..."}]',
        )
        return None
    rendered: list[dict[str, str]] = []
    ok = True
    for index, message in enumerate(messages):
        column = f"messages[{index}]"
        if not isinstance(message, dict):
            report.add(
                line,
                "invalid_value",
                f"{column} is {kind_of(message)}, not an object",
                column=column,
            )
            ok = False
            continue
        role = message.get("role")
        if role not in CHAT_ROLES:
            report.add(
                line,
                "invalid_value",
                f"{column}.role is {shortened(role)}",
                column=f"{column}.role",
                hint=f"use one of {', '.join(CHAT_ROLES)}",
            )
            ok = False
            continue
        content = message_text(message)
        if content is None:
            report.add(
                line,
                "invalid_value",
                f"{column}.content is {kind_of(message.get('content'))}",
                column=f"{column}.content",
                hint="write the content as a string or a list of text parts",
            )
            ok = False
        elif not content.strip():
            report.add(line, "empty_text", f"{column}.content is empty", column=f"{column}.content")
            ok = False
        else:
            rendered.append({"role": str(role), "content": content})
    if ok and not any(m["role"] == "assistant" for m in rendered):
        report.add(
            line,
            "invalid_value",
            "no assistant message: nothing to learn from",
            column="messages",
            hint="end each conversation with the assistant's answer",
        )
        ok = False
    return {"text": render_chat(rendered), "messages": rendered} if ok else None


def prompt_completion_example(
    report: ReportBuilder, line: int, values: Mapping[str, Any]
) -> Example | None:
    """A `prompt` (may be empty) and the non-empty `completion` to learn."""
    prompt = values.get("prompt")
    if prompt is None:
        report_missing(report, line, values, "prompt", "missing_column")
    elif not isinstance(prompt, str):
        report.add(
            line, "invalid_value", f"'prompt' is {kind_of(prompt)}, not a string", column="prompt"
        )
        prompt = None
    completion = text_field(report, line, values, "completion")
    if prompt is None or completion is None:
        return None
    return {"text": prompt + completion, "prompt": prompt, "completion": completion}


def message_text(message: Mapping[str, Any]) -> str | None:
    """The text of a message: a string, text parts joined, or its tool calls as JSON."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        for part in content
    ):
        return "".join(part["text"] for part in content)
    if content is None and message.get("tool_calls"):
        return json.dumps(message["tool_calls"], sort_keys=True, ensure_ascii=False)
    return None
