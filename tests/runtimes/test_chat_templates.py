"""Chat templates render as transformers renders them, within a deadline and a size bound
(`runtimes/chat_templates.py`). The attacks run for real; no timing is asserted beyond the
outcome (the deadline is what stops the loops: without it they would run for hours)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from openmaas.errors import InvalidRequest
from openmaas.runtimes.base import LoadOptions, ModelSource
from openmaas.runtimes.chat_templates import ChatTemplate, RenderLimits, TemplateLimitExceeded
from openmaas.runtimes.transformers import TransformersRuntime
from tests.runtimes import tiny_models

LIMITS = RenderLimits(timeout_s=0.2, max_chars=100_000)
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": 'Say "hi" & <b>bye</b>'},
    {"role": "assistant", "content": "hi"},
    {"role": "user", "content": "Again, in JSON: {}"},
]

# Real templates' idioms: ChatML, a Llama-2 style template with raise_exception and loop
# variables, a namespace, tojson, strftime_now, a `{% generation %}` block, loop controls.
FAITHFUL = {
    "chatml": (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
        "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "llama2": (
        "{{ bos_token }}{% for message in messages %}"
        "{% if message['role'] == 'system' %}{% set ns = namespace(sys=message['content']) %}"
        "{% elif (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate') }}"
        "{% elif message['role'] == 'user' %}{{ '[INST] ' + message['content'].strip() + "
        "' [/INST]' }}{% else %}{{ ' ' + message['content'].strip() + ' ' + eos_token }}"
        "{% endif %}{% endfor %}"
    ),
    "tools": (
        "{%- set ns = namespace(count=0) -%}"
        "{%- for m in messages -%}{%- if m.role == 'assistant' -%}{% generation %}"
        "{{ m.content | tojson }}{% endgeneration %}{%- else -%}{{ m.role | upper }}: "
        "{{ m.content | replace('&', 'and') | trim }}{%- endif -%}"
        "{%- set ns.count = ns.count + 1 -%}{%- if loop.index > 10 -%}{% break %}{%- endif -%}"
        "\n{% endfor -%}{{ ns.count }} {{ messages | map(attribute='role') | join(',') }}"
        "{{ dict(a=1) | tojson }}{{ strftime_now('%Y') | length }}"
    ),
}


@pytest.fixture(scope="module")
def gpt2_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_gpt2(tmp_path_factory.mktemp("gpt2") / "gpt2")


@pytest.mark.parametrize("name", sorted(FAITHFUL))
def test_templates_render_as_transformers_renders_them(gpt2_tokenizer: Path, name: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(gpt2_tokenizer)
    template = FAITHFUL[name]
    messages = MESSAGES[1:] if name == "llama2" else MESSAGES
    expected = tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=True
    )
    ours = ChatTemplate(template, LIMITS).render(
        messages, add_generation_prompt=True, **tokenizer.special_tokens_map
    )
    assert ours == expected


# What a tenant's template may try; each would run for hours or allocate gigabytes.
ATTACKS = {
    "nested range loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    ),
    "nested loops over a variable": (
        "{% set s = 'x' * 50000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}"
    ),
    "repetition": "{{ 'x' * 1000000000 }}",
    "doubling by concatenation": (
        "{% set ns = namespace(s='xx') %}{% for i in range(64) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
    ),
    "doubling by addition": (
        "{% set ns = namespace(s='xx') %}{% for i in range(64) %}"
        "{% set ns.s = ns.s + ns.s %}{% endfor %}"
    ),
    "a wide filter": "{{ 'x' | center(1000000000) }}",
    "a wide method": "{{ 'x'.ljust(1000000000) }}",
    "a wide printf format": "{{ '%0999999999d' % 1 }}",
    "a wide format method": "{{ '{:>999999999}'.format(1) }}",
    "replace into every gap": "{{ ('x' * 10000) | replace('', 'y' * 10000) }}",
    "exponential recursion": "{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "endless output": (
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
    ),
    "a huge power": "{{ 10 ** 100000000 }}",
    "a folded constant": "{{ 'x' | center(1000000000) | length }}",
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_runaway_templates_are_stopped(name: str) -> None:
    with pytest.raises(TemplateLimitExceeded):
        ChatTemplate(ATTACKS[name], LIMITS).render(MESSAGES, add_generation_prompt=True)


def test_the_sandbox_still_refuses_escapes() -> None:
    escape = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(Exception, match="unsafe|SecurityError|not safely"):
        ChatTemplate(escape, LIMITS).render(MESSAGES)
    with pytest.raises(Exception, match="underscore"):
        ChatTemplate("{% set ns = namespace(_x=1) %}", LIMITS).render(MESSAGES)


def test_message_contents_are_not_mistaken_for_attacks() -> None:
    # Contents may be long and look like format strings; only what the template does counts.
    content = "%0999999999d {:>999999999} " + "x" * 50_000
    template = "{% for m in messages %}{{ m.content | trim }}{% endfor %}"
    rendered = ChatTemplate(template, LIMITS).render([{"role": "user", "content": content}])
    assert rendered == content.strip()


def test_a_model_refuses_its_runaway_template_with_400(tmp_path: Path) -> None:
    directory = tiny_models.build_gpt2(
        tmp_path / "loop", chat_template=ATTACKS["nested range loops"]
    )
    source = ModelSource.for_directory(directory, task="text-generation", runtime="transformers")
    options = LoadOptions(chat_template_timeout_s=0.2)
    model = TransformersRuntime().load(source, options)
    with pytest.raises(InvalidRequest, match="took too long.*OPENMAAS_CHAT_TEMPLATE_TIMEOUT_S"):
        model.chat_prompt(MESSAGES)  # type: ignore[attr-defined]


def test_a_rendered_prompt_over_the_limit_is_refused(tmp_path: Path) -> None:
    directory = tiny_models.build_gpt2(tmp_path / "plain")  # no template: the transcript
    source = ModelSource.for_directory(directory, task="text-generation", runtime="transformers")
    model = TransformersRuntime().load(source, LoadOptions(max_prompt_chars=1_000))
    with pytest.raises(InvalidRequest, match="OPENMAAS_MAX_PROMPT_CHARS"):
        model.chat_prompt([{"role": "user", "content": "x" * 2_000}])  # type: ignore[attr-defined]
