"""The streaming data-quality lint: each check on crafted rows, its false positives, bounds and properties."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataprep.findings import CATALOGUE, name_options
from dataprep.quality import (
    MAX_ANSWERS,
    QUALITY_CODES,
    REPEATED_MIN,
    QualityLint,
    find_mojibake,
    find_placeholder,
)


def conv(*texts: object, roles: tuple[str, ...] = ("user", "assistant"), **extra: object) -> dict:
    """Messages alternating ``roles`` (user first); a dict in ``texts`` is a message as it is, out of turn."""
    msgs, i = [], 0
    for t in texts:
        if isinstance(t, dict) and "role" in t:
            msgs.append(t)
        else:
            msgs.append({"role": roles[i % len(roles)], "content": t})
            i += 1
    return {"messages": msgs, **extra}


def lint_of(*convs: dict, start: int = 1, **kw: object) -> QualityLint:
    lint = QualityLint(**kw)
    for i, c in enumerate(convs, start=start):
        lint.add(i, c)
    return lint


def codes(lint: QualityLint) -> list[str]:
    return [f.code for f in lint.findings()]


def mojibaked(text: str, encoding: str = "cp1252") -> str:
    raw = text.encode("utf-8")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:  # cp1252 leaves 5 bytes undefined: read those texts as Latin-1
        return raw.decode("latin-1")


# -- unfilled_placeholder ---------------------------------------------------------------------------------------
PLACEHOLDERS = [
    "I am {{name}}, an AI assistant developed by {{author}}.",  # LLaMA-Factory identity.json
    "Hello! I'm {{ name }}.",
    "Hi, I am {{NAME}}.",
    "Template: {{ user.name }} wrote this",
    "I'm {name}, created by {company_name}.",
    "Best regards,\n[Your Name]",
    "Dear [Recipient's Name],\nthank you.",
    "Sincerely, [Name]",
    "Welcome to [Company Name]!",
    "Date: [Insert date here]",
    "Please contact <PLACEHOLDER> for details.",
    "I am <MODEL_NAME>, here to help.",
    "Signed: [NAME]",
    "From [COMPANY NAME] with love",
    "[INSERT DATE]",
    "Write to <YOUR_EMAIL>.",
    "Put [TEXT HERE].",
    "Name: <USERNAME>",
    "To: [Name of the Recipient]",
]

NOT_PLACEHOLDERS = [
    "```python\nname = 'Ada'\nprint(f'Hello {name}')\n```",  # an f-string in a code fence
    '```python\nprint(f"{greeting}, {name}")',  # an unclosed fence masks to the end
    "~~~jinja\nHello {{ name }}\n~~~",  # a template in a ~~~ fence
    "Use `{name}` or `{{ name }}` in the template.",  # inline code
    "Use ``{name}`` here.",
    '{"a": 1, "b": {"c": [1, 2]}}',  # JSON
    '{"greeting": "Hello {name}", "to": "{{name}}"}',  # a template inside JSON data
    '[{"role": "user", "content": "{question}"}]',
    r"The result is \frac{a}{b} + \sqrt{ab}.",  # LaTeX
    r"$x^{n} + x_{ij} = \mathbf{{x}}$",
    "The set {x} has one element; {0} and {1} are format fields.",
    'print(f"Hello {name}")',  # code outside a fence
    'msg = "Hi {name}".format(name=user)',
    'println!("{name}");',
    'Console.WriteLine($"Hello {name}");',
    "GET /users/{id}/posts/{post_id}",  # URL templates
    "echo ${name} and ${HOME}",  # shell
    "Tokens like [CLS], [SEP], [MASK], <EOS>, <PAD>, [INST] and <<SYS>>.",
    "[TODO] fix; [NOTE] see; [A] or [B]; reference [1].",
    "See [Name](https://example.com) and [Company][1].",  # Markdown links
    "row[NAME] = df[NAME]",  # indexing
    "Use <div> and <span>; List<T>, Map<K, V>.",
    "<Name>Ada</Name> is XML.",
    "usage: cp <source> <dest>",
    "[x] done, [ ] to do",
    "a {b c} d; {Name}; {_x}",
    "{{0}} and {{ 1 }}",
    "print(f'{{name}} is literal')",
    "[Terms of Service], [Click here], [Press Release], [Names]",
]


@pytest.mark.parametrize("text", PLACEHOLDERS)
def test_placeholder_fires_on_assistant_text(text):
    lint = lint_of(conv("Who are you?", text), start=7)
    (f,) = lint.findings()
    assert f.code == "unfilled_placeholder" and f.rows == (7,)
    assert f.data["count"] == 1 and f.data["example"] and len(f.data["example"]) <= 80


@pytest.mark.parametrize("text", NOT_PLACEHOLDERS)
def test_placeholder_false_positives(text):
    assert find_placeholder(text) is None
    assert codes(lint_of(conv("Show me.", text))) == []


def test_placeholder_only_in_assistant_text():
    lint = lint_of(conv({"role": "system", "content": "You are {{name}}."}, "Hi [Your Name]", "Hello there!"))
    assert codes(lint) == []


def test_placeholder_in_a_list_of_parts():
    parts = [{"type": "text", "text": "I am"}, {"type": "text", "text": "{{name}}"}]
    assert codes(lint_of(conv("Who?", parts))) == ["unfilled_placeholder"]


def test_placeholder_after_code_still_fires():
    text = "```python\nprint(f'{x}')\n```\nRegards, [Your Name]"
    m = find_placeholder(text)
    assert m is not None and m.group() == "[Your Name]"


# -- near_empty_answer ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content", ["", "   ", "\n\t", ".", " - ", None, [], [{"type": "text", "text": " "}]]
)
def test_near_empty_answer_fires(content):
    lint = lint_of(conv("Question?", content), start=3)
    (f,) = [f for f in lint.findings() if f.code == "near_empty_answer"]
    assert f.rows == (3,) and f.data["count"] == 1


@pytest.mark.parametrize("content", ["A", " 7 ", "Y", "é", "ok", "No.", "x" * 5000, " " * 100 + "ab"])
def test_near_empty_answer_spares_labels_and_answers(content):
    assert "near_empty_answer" not in codes(lint_of(conv("Pick one", content)))


def test_near_empty_answer_spares_tool_calls():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    msgs = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
        {"role": "assistant", "content": "It is sunny."},
    ]
    assert codes(lint_of({"messages": msgs})) == []


def test_near_empty_answer_counts_a_row_once():
    lint = lint_of(conv("a?", "", "b?", "."))
    assert lint.to_dict()["counts"]["near_empty_answer"] == 1


# -- repeated_answer --------------------------------------------------------------------------------------------
CANNED = "I'm sorry, but I can't help with that request."


def test_repeated_answer_fires_at_the_threshold():
    lint = lint_of(*(conv(f"Prompt number {i}", CANNED) for i in range(REPEATED_MIN)), start=11)
    (f,) = lint.findings()
    assert f.code == "repeated_answer" and f.rows == (11,)
    assert f.data["count"] == REPEATED_MIN
    assert f.data["answers"] == [{"rows": REPEATED_MIN, "first_row": 11, "example": CANNED}]
    assert f.data["repeated_min"] == REPEATED_MIN


def test_repeated_answer_below_the_threshold_is_quiet():
    assert codes(lint_of(*(conv(f"Prompt {i}", CANNED) for i in range(REPEATED_MIN - 1)))) == []


def test_repeated_answer_needs_different_prompts():
    # the same prompt and answer again are duplicate rows, not a canned answer
    rows = [conv(f"Prompt {i % 3}", CANNED) for i in range(500)]
    assert codes(lint_of(*rows)) == []
    # whitespace variants of a prompt are the same prompt
    rows = [conv(f"  Same   prompt{' ' * i}", CANNED) for i in range(50)]
    assert codes(lint_of(*rows)) == []


def test_repeated_answer_normalizes_whitespace_and_keeps_case():
    rows = [conv(f"P{i}", ("  " if i % 2 else "") + CANNED.replace(" ", "\n  ")) for i in range(REPEATED_MIN)]
    assert codes(lint_of(*rows)) == ["repeated_answer"]
    rows = [conv(f"P{i}", CANNED.upper() if i % 2 else CANNED) for i in range(REPEATED_MIN)]
    assert codes(lint_of(*rows)) == []


def test_repeated_answer_spares_short_labels():
    rows = [conv(f"Review {i}: great film", "positive") for i in range(1000)]
    rows += [conv(f"Q{i}", "The answer is B.") for i in range(1000)]
    assert codes(lint_of(*rows)) == []


def test_repeated_answer_counts_rows_and_lists_the_most_repeated_first():
    other = "As an AI language model, I do not have personal opinions."
    rows = [conv(f"Q{i}", CANNED) for i in range(30)] + [conv(f"R{i}", other) for i in range(45)]
    rows.append(conv("S", CANNED, "T", CANNED))  # one row, twice: one row more
    lint = lint_of(*rows, repeated_min=5)
    (f,) = lint.findings()
    assert f.data["count"] == 31 + 45
    assert [(a["rows"], a["first_row"]) for a in f.data["answers"]] == [(45, 31), (31, 1)]
    assert f.rows == (1, 31)
    assert lint.to_dict()["counts"]["repeated_answer"] == 76


def test_repeated_answer_table_stays_bounded():
    lint = QualityLint()
    biggest = 0
    for i in range(200_000):
        text = f"Distinct answer number {i} with some padding text."
        if i % 500 == 0:  # a canned answer among many distinct ones survives the pruning
            text = CANNED
        lint.add(i + 1, conv(f"Prompt {i}", text))
        biggest = max(biggest, len(lint._answers))
    assert biggest <= MAX_ANSWERS
    d = lint.to_dict()
    assert d["answer_table"]["prunes"] >= 2 and d["answer_table"]["cap"] == MAX_ANSWERS
    assert codes(lint) == ["repeated_answer"]
    assert d["checks"]["repeated_answer"]["answers"][0] == {"rows": 400, "first_row": 1, "example": CANNED}


def test_a_small_table_keeps_the_frequent_answers():
    lint = QualityLint(max_answers=64, repeated_min=3)
    for i in range(10_000):
        text = CANNED if i % 7 == 0 else f"A distinct answer, number {i}."
        lint.add(i + 1, conv(f"P{i}", text))
        assert len(lint._answers) <= 64
    assert [a["example"] for a in lint.to_dict()["checks"]["repeated_answer"]["answers"]] == [CANNED]


# -- mojibake ---------------------------------------------------------------------------------------------------
MOJIBAKE_SOURCES = [
    "Café au lait",
    "don’t “quote” — dash",
    "à bientôt",
    "naïve résumé",
    "Über Öl und Grüße",
    "niño",
    "São Paulo",
    "ÉTÉ",
    "Noël",
    "Österreich",
    "Привет мир",
    "Cześć, łódź",
    "中文",
    "😀",
    "αβγ",
    "שלום",
    "20°C",
    "©2024",
    "a\u00a0b",
    "\ufeffhello",
    "→ ™",
]


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
@pytest.mark.parametrize("source", MOJIBAKE_SOURCES)
def test_mojibake_fires_on_double_decoded_utf8(source, encoding):
    assert find_mojibake(mojibaked(source, encoding)) is not None


@pytest.mark.parametrize(
    "text",
    [
        "CafÃ©",
        "Ã¨",
        "sÃ»r",
        "NoÃ«",
        "Ã–sterreich",
        "ESPAÃ‘A",
        "donâ€™t",
        "â€œhiâ€",
        "price:Â\u00a05",
        "bad \ufffd byte",
        "ÃƒÂ©",
    ],
)
def test_mojibake_fires_on_the_usual_sequences(text):
    assert find_mojibake(text) is not None


LEGIT_ACCENTS = [
    "São Paulo",
    "NÃO",
    "SÃO PAULO E MAÇÃ",
    "AMANHÃ, IRMÃ.",
    "IRMÃ…",
    "“IRMÃ” e “AÇÃO”",
    "Ça va? À bientôt, voilà\u00a0»",
    "CAFÉ\u00a0! ÉCOLE « X »",
    "»Groß« und »Weiß«, „Spaß“ und „Gruß“",
    "«ESPAÑA» «AÑO» «AMANHÃ»",
    "Ya está…” ¿Qué? ¡Olé!",
    "café…»",
    "Nº 5, 1ª, L·L, 3×2",
    "píše příště",
    "Tiếng Việt có dấu",
    "Ελληνικά, Привет, 日本語, שלום, 😀",
    "Ærø, ÅNGSTRÖM, Þórður, Ðakovo",
]


@pytest.mark.parametrize("text", LEGIT_ACCENTS)
def test_mojibake_spares_legitimate_accents(text):
    assert find_mojibake(text) is None
    assert codes(lint_of(conv(text, text + " -- " + text))) == []


@pytest.mark.parametrize("role", ["system", "user", "assistant"])
def test_mojibake_in_any_role(role):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    msgs.append({"role": "assistant", "content": "Hello"})
    msgs[["system", "user", "assistant"].index(role)]["content"] = "CafÃ© prÃªt"
    lint = lint_of({"messages": msgs}, start=42)
    (f,) = lint.findings()
    assert f.code == "mojibake" and f.rows == (42,) and "Ã©" in f.data["example"]


def test_mojibake_in_reasoning_content():
    m = {"role": "assistant", "content": "ok then", "reasoning_content": "the user wants donâ€™t"}
    assert codes(lint_of(conv("Hi", m))) == ["mojibake"]


def test_mojibake_example_escapes_control_characters():
    lint = lint_of(conv("Hi", mojibaked("“quoted”", "latin-1")))
    example = lint.findings()[0].data["example"]
    assert "\\x80" in example and "\x80" not in example


# -- ends_with_user_turn ----------------------------------------------------------------------------------------
def test_ends_with_user_turn():
    lint = lint_of(conv("Hi", "Hello!", "And then?"), conv("Hi", "Hello!"), conv("Only a question?"), start=5)
    (f,) = lint.findings()
    assert f.code == "ends_with_user_turn" and f.rows == (5, 7) and f.data["count"] == 2
    assert f.data["example"] == "And then?" and f.severity.value == "info"


# -- the lint as a whole ----------------------------------------------------------------------------------------
CLEAN = [
    conv("What is 2 + 2?", "2 + 2 = 4."),
    conv({"role": "system", "content": "You are helpful."}, "Name a colour.", "Blue, like the sky."),
    conv("Write code", "```python\ndef f(x):\n    return {x: [x]}\n```"),
    conv("JSON?", '{"name": "Ada", "tags": ["a", "b"]}'),
    conv("Math?", r"$\frac{a}{b}$ and {x}"),
    conv("Português?", "Sim, NÃO e São Paulo."),
    conv("Pick", "B"),
]


def test_clean_dataset_has_no_findings():
    lint = lint_of(*CLEAN)
    assert lint.findings() == []
    d = lint.to_dict()
    assert d["rows"] == len(CLEAN) and d["counts"] == dict.fromkeys(QUALITY_CODES, 0)


def test_rows_are_the_ones_passed_and_capped():
    lint = QualityLint(max_rows_listed=3)
    for row in (1000, 1003, 1010, 2000, 2001):
        lint.add(row, conv("Who are you?", "I am {{name}}."))
    lint.add(2002, conv("Who are you?", "I am Ada."))
    (f,) = lint.findings()
    assert f.rows == (1000, 1003, 1010) and f.data["count"] == 5
    d = lint.to_dict()["checks"]["unfilled_placeholder"]
    assert d["rows"] == [1000, 1003, 1010] and d["count"] == 5 and d["example_row"] == 1000


def test_findings_use_the_catalogue_and_serialize():
    rows = [
        conv("Who?", "I am {{name}}."),
        conv("Hi", " "),
        conv("Hi", "CafÃ©"),
        conv("Hi"),
        *(conv(f"Prompt {i}", CANNED) for i in range(REPEATED_MIN)),
    ]
    lint = lint_of(*rows)
    fs = lint.findings()
    assert [f.code for f in fs] == list(QUALITY_CODES)
    for f in fs:
        assert f.severity is CATALOGUE[f.code].severity and f.hint == name_options(CATALOGUE[f.code].hint)
        d = f.to_dict()
        assert d["count"] >= 1 and d["rows"] and len(d["example"]) <= 80
        json.dumps(d)
    json.dumps(lint.to_dict())


@pytest.mark.parametrize(
    "row",
    [
        None,
        "text",
        3,
        {},
        {"messages": None},
        {"messages": []},
        {"messages": ["x", 1, None]},
        conv(3, {"x": 1}),
    ],
)
def test_malformed_rows_never_raise(row):
    lint = QualityLint()
    lint.add(1, row)
    lint.findings()
    assert lint.to_dict()["rows"] == 1


def test_any_mapping_is_a_conversation():
    from types import MappingProxyType

    row = MappingProxyType({"messages": [MappingProxyType({"role": "user", "content": "Hi"})]})
    assert codes(lint_of(row)) == ["ends_with_user_turn"]


@pytest.mark.parametrize("kw", [{"max_rows_listed": -1}, {"repeated_min": 1}, {"max_answers": 1}])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError):
        QualityLint(**kw)


# -- properties -------------------------------------------------------------------------------------------------
# plain ASCII without braces, brackets or angle brackets: no placeholder and no mojibake can be spelled
plain = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters="{}[]<>"), max_size=60
)
answer = plain.filter(lambda s: len(s.strip()) >= 2)


@settings(max_examples=200)
@given(st.lists(st.lists(st.tuples(plain.filter(str.strip), answer), min_size=1, max_size=3), max_size=15))
def test_clean_conversations_never_produce_a_finding(rows):
    # at most 15 rows: fewer than REPEATED_MIN, so even one answer everywhere is not repeated
    lint = lint_of(*(conv(*(t for turn in turns for t in turn)) for turns in rows))
    assert lint.findings() == []


LATIN1_LETTERS = "".join(chr(c) for c in range(0xC0, 0x100) if chr(c).isalpha())  # À-ÿ without × and ÷
# û is Ã» double-decoded: a sign only before a letter (sÃ»r), since «AMANHÃ» is Portuguese
LOWER_ACCENTED = "".join(c for c in LATIN1_LETTERS if c.islower() and c != "û")


@settings(max_examples=300)
@given(
    st.text(
        alphabet=st.sampled_from(
            [chr(c) for c in range(32, 127)] + list(LATIN1_LETTERS) + list("ПриветΑβγ日本語😀")
        ),
        max_size=80,
    )
)
def test_text_of_letters_is_never_mojibake(text):
    # ASCII, Latin-1 letters (capitals before small letters included) and other scripts are never signs
    assert find_mojibake(text) is None


@settings(max_examples=300)
@given(
    st.text(alphabet=st.sampled_from(list("abc XYZ.,") + list(LOWER_ACCENTED)), max_size=40).filter(
        lambda t: not t.isascii()
    ),
    st.sampled_from(["cp1252", "latin-1"]),
)
def test_double_decoded_accented_small_letters_are_mojibake(text, encoding):
    assert find_mojibake(mojibaked(text, encoding)) is not None


DEFECTS = {
    "unfilled_placeholder": lambda i: conv(f"Who are you? {i}", "I am {{name}}."),
    "near_empty_answer": lambda i: conv(f"Q {i}", " "),
    "mojibake": lambda i: conv(f"Q {i}", "CafÃ© number " + str(i)),
    "ends_with_user_turn": lambda i: conv(f"Q {i}", f"Answer {i}.", "Anything else?"),
}


@settings(max_examples=100)
@given(st.lists(st.sets(st.sampled_from(sorted(DEFECTS))), max_size=40), st.integers(1, 10**6))
def test_counts_equal_the_rows_with_each_defect(plan, first):
    lint = QualityLint(max_rows_listed=5)
    expected: dict[str, list[int]] = {code: [] for code in DEFECTS}
    for i, defects in enumerate(plan):
        row = first + 2 * i
        msgs: list[dict] = []
        for code in sorted(defects):
            msgs += DEFECTS[code](i)["messages"]
            expected[code].append(row)
        if not msgs or msgs[-1]["role"] == "user" and "ends_with_user_turn" not in defects:
            msgs += conv(f"Fine question {i}", f"A fine answer {i}.")["messages"]
        elif "ends_with_user_turn" in defects and msgs[-1]["role"] != "user":
            msgs.append({"role": "user", "content": "Still there?"})
        lint.add(row, {"messages": msgs})
    d = lint.to_dict()
    for code, rows in expected.items():
        assert d["counts"][code] == len(rows), code
        assert d["checks"][code]["rows"] == rows[:5]
    assert d["counts"]["repeated_answer"] == 0
    assert {f.code for f in lint.findings()} == {code for code, rows in expected.items() if rows}
