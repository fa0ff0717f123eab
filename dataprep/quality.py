"""A cheap, streaming data-quality lint over conversations: defects a schema check cannot see.

``QualityLint`` takes conversations one at a time (``add(row, conversation)``, ``row`` the 1-based input row)
and counts five defects, each under its catalogued code (``dataprep.findings``):

- ``unfilled_placeholder``: assistant text holds an unfilled template placeholder (``PLACEHOLDER_PATTERNS``);
- ``near_empty_answer``: an assistant message without tool calls whose text is blank or one character that is
  not a letter or digit (``NEAR_EMPTY_CHARS``);
- ``repeated_answer``: one assistant answer follows at least ``repeated_min`` different user prompts;
- ``mojibake``: text of any role with U+FFFD or double-decoded UTF-8 (``MOJIBAKE_PATTERNS``);
- ``ends_with_user_turn``: the last message is a user message.

Each check counts rows (a row with the defect twice counts once), keeps the first ``max_rows_listed`` row
numbers and one short example. The lint never raises on a malformed row: what is not a conversation is skipped
(the schema check, ``dataprep.messages.validate_conversation``, reports it).

Cost per row: linear in its text, with precompiled regexes and no structure per row. ASCII text skips the
mojibake scan (``str.isascii`` is O(1)) and text without a Latin-1/cp1252 continuation character skips its full
regex; assistant text without ``{``, ``[`` or ``<`` skips the placeholder scan; only assistant answers of at
least ``REPEATED_MIN_CHARS`` characters are normalized and hashed. Memory is bounded: see ``MAX_ANSWERS``.
"""

from __future__ import annotations

import hashlib
import re
from array import array
from collections.abc import Mapping
from typing import Any

from .findings import Finding, finding

__all__ = [
    "MAX_ANSWERS",
    "MOJIBAKE_PATTERNS",
    "NEAR_EMPTY_CHARS",
    "PLACEHOLDER_PATTERNS",
    "QUALITY_CODES",
    "REPEATED_MIN",
    "REPEATED_MIN_CHARS",
    "QualityLint",
    "find_mojibake",
    "find_placeholder",
]

QUALITY_CODES: tuple[str, ...] = (
    "unfilled_placeholder",
    "near_empty_answer",
    "repeated_answer",
    "mojibake",
    "ends_with_user_turn",
)

EXAMPLE_CHARS = 80  # an example string is at most this long
TOP_ANSWERS = 5  # the most repeated answers listed in the repeated_answer finding

# -- near_empty_answer ----------------------------------------------------------------------------------------
# An assistant message without tool calls is near-empty when its text, stripped, is shorter than
# NEAR_EMPTY_CHARS (2) characters -- blank, or one character -- unless that one character is a letter or a digit:
# "A", "7" or "Y" are the whole answer of multiple-choice, rating and yes/no data, while "", " " or "." are not
# an answer.
NEAR_EMPTY_CHARS = 2

# -- repeated_answer ------------------------------------------------------------------------------------------
# An answer is *repeated* once it follows REPEATED_MIN different user prompts (the prompt of an answer is the
# nearest user message before it; whitespace-collapsed, case kept, like the answer). 20 is far above what chance
# produces for a real answer and far below what a canned answer (a refusal, an identity line, a template fill)
# reaches in any dataset big enough to teach it; a duplicated row (same prompt, same answer) never counts twice.
REPEATED_MIN = 20
# Answers shorter than this (whitespace-collapsed) are not tracked: labels such as "positive",
# "not_entailment", "NOT ENOUGH INFO" or "The answer is B." are repeated by design in classification data.
REPEATED_MIN_CHARS = 20
# Bound on the table of answers: at most MAX_ANSWERS entries. Each is keyed by a 64-bit blake2b digest of the
# answer and holds [rows, first row, last row, prompt digests]: one digest until a second distinct prompt comes,
# then an array('Q') of fewer than REPEATED_MIN digests, dropped (None) once the answer is repeated. Measured
# (tracemalloc): about 230 bytes an entry when answers are seen once, 15 MiB at 65,536 entries; about 520 bytes
# with 19 prompt digests each, 33 MiB at most. When the table is full it keeps the MAX_ANSWERS // 2 answers that
# are repeated, then seen in the most rows (ties at the cut go together: usually every answer seen once goes).
# So an answer met less often than about once per MAX_ANSWERS // 2 distinct answers may be dropped before it is
# repeated (a miss, never a false finding), and the row count of an answer dropped and met again restarts from
# that row (a lower bound). Repeated answers are dropped only when more than MAX_ANSWERS // 2 of them exist.
MAX_ANSWERS = 1 << 16

# -- unfilled_placeholder -------------------------------------------------------------------------------------
# The one place the placeholder patterns live. Each is searched in assistant text after code is masked (fenced
# ``` / ~~~ blocks, an unclosed fence to the end, and `inline` spans), so templates, f-strings and JSON inside
# code never count.
_UPPER = r"[A-Z][A-Z0-9]*"  # one all-caps word
_TITLE = r"[A-Z][a-z]+(?:['\u2019]s)?"  # one Title-case word, possessive allowed: Recipient's
_WORD = r"[A-Za-z][a-z]*(?:['\u2019]s)?"  # one word, capitalised or not
_TITLE_OR_LINK = rf"(?:{_TITLE}|of|the|your|for|and|or|to)"  # [Name of the Recipient]
_KEYWORDS = (
    "NAME USERNAME AUTHOR CREATOR DEVELOPER COMPANY ORGANIZATION ORGANISATION PLACEHOLDER PRODUCT BRAND "
    "EMAIL PHONE ADDRESS DATE"
).split()
_KW_UPPER = "(?:" + "|".join(_KEYWORDS) + ")"
_KW_TITLE = "(?:" + "|".join(k.title() for k in _KEYWORDS) + ")"
_CAPS_MARKER = (
    rf"(?:YOUR|INSERT|ENTER)(?:[ _]{_UPPER}){{1,4}}"  # <YOUR_NAME>, [INSERT DATE]
    rf"|(?:{_UPPER}[ _]){{0,3}}{_KW_UPPER}(?:[ _]{_UPPER}){{0,2}}"  # <NAME>, [COMPANY NAME], <MODEL_NAME>
    rf"|(?:{_UPPER}[ _]){{1,3}}HERE"  # [TEXT HERE]
)
_TITLE_MARKER = (
    rf"(?:Your|Insert|Enter)(?:[ _]{_WORD}){{1,4}}"  # [Your Name], [Insert date here]
    # [Name], [Company Name], [Recipient's Name], [Name of the Company]
    rf"|(?:{_TITLE_OR_LINK} ){{0,3}}{_KW_TITLE}(?: {_TITLE_OR_LINK}){{0,3}}"
)
PLACEHOLDER_PATTERNS: Mapping[str, str] = {
    # {{name}}, {{ name }}, {{author}}, {{ user.name }}: Jinja / Mustache, as public identity datasets ship them
    # (LLaMA-Factory's identity.json). Not after a word character or a backslash (LaTeX \mathbf{{x}}); skipped
    # in text that looks like JSON or like code (f"{{name}}" is an escaped brace).
    "double_brace": r"\{(?<![\w\\]\{)\{\s*[A-Za-z_][\w.]*\s*\}\}",
    # {name}, {user_name}: a bare lowercase identifier of two or more characters in single braces (str.format).
    # Not after a word character, \ / $ % # @ ^ _ { or } -- LaTeX (\frac{a}{b}, x^{n}, x_{ij}), shell and JS
    # ${x}, URL templates /users/{id}, nested braces -- and not before { or }. {x} (one letter, a set) and {0}
    # never match. Skipped in text that looks like JSON or like code (_JSON_LIKE, _CODE_LIKE).
    "single_brace": r"\{(?<![\w\\/$%#@^{}]\{)[a-z][a-z0-9_]+\}(?![{}])",
    # <PLACEHOLDER>, <NAME>, <YOUR_NAME>, [NAME], [COMPANY NAME], [INSERT DATE]: all-caps words that are a
    # placeholder keyword (_KEYWORDS) or start with YOUR/INSERT/ENTER or end with HERE. Special tokens
    # ([CLS], <EOS>, [INST]), notes ([TODO], [NOTE]) and choices ([A], [1]) are not keywords.
    "caps_marker": rf"[\[<](?<![\w\[\]<>].)(?:{_CAPS_MARKER})[\]>](?![(\[])",
    # [Your Name], [Name], [Company Name], [Recipient's Name], [Insert date here]: the letter-template form, in
    # square brackets only (<Name> is an XML or JSX tag). Not a Markdown link ([Name](url), [Name][1]) and not
    # an index (row[Name]).
    "title_marker": rf"\[(?<![\w\[\]]\[)(?:{_TITLE_MARKER})\](?![(\[])",
}
# One flat alternation whose branches all start with { [ or <, lookbehinds after that first character: so the
# regex engine skips to those characters at C speed (named groups or a leading lookbehind make it 3-5x slower).
# A match starting with "{" (double_brace, single_brace) does not count in text that looks like JSON or code.
_PLACEHOLDER = re.compile("|".join(PLACEHOLDER_PATTERNS.values()))
_CODE = re.compile(r"```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)|`[^`\n]+`", re.S)
# Text that is a JSON document: an object with a quoted key, or an array of objects, arrays or strings.
_JSON_LIKE = re.compile(r"\s*(?:\{\s*\"|\[\s*[\[{\"])")
# Braces that are code outside a fence: f-strings, str.format, Rust format!/println!, C# $"...".
_CODE_LIKE = re.compile(r"\b[rRbB]?[fF][rR]?[\"']|\.format(?:_map)?\(|\w!\(|\$@?\"")

# -- mojibake ---------------------------------------------------------------------------------------------------
# UTF-8 read as Latin-1 or cp1252 turns each continuation byte (0x80-0xBF) into one of _CONT: U+0080-U+00BF, or
# the cp1252 character of 0x80-0x9F. A lead byte turns into Â-ß (2-byte sequence), à-ï (3-byte) or ð-ô (4-byte).
# Legitimate text puts quotes, dashes, an ellipsis or NBSP (_RISKY) after an accented letter: IRMÃ…, “IRMÃ”,
# «ESPAÑA», CAFÉ\u00a0!, »Weiß«, „Spaß“, está…”, voilà\u00a0». So a continuation from _RISKY counts only when a
# letter follows it at once (NoÃ«l, Ã–sterreich, ESPAÃ‘A), and a 2-byte lead other than Â/Ã only when such a
# pair comes twice in one text.
_CP1252_HIGH = bytes(range(0x80, 0xA0)).decode("cp1252", errors="ignore")  # 27 characters: € ‚ ƒ „ … † ‡ ...
_CONT = "\u0080-\u00bf" + re.escape(_CP1252_HIGH)
_RISKY = "\u2026\u2013\u2014\u2018\u2019\u201c\u201d\u201e\u00ab\u00bb\u00a0"  # … – — ‘ ’ “ ” „ « » NBSP
_SAFE = re.escape("".join(c for c in "".join(map(chr, range(0x80, 0xC0))) + _CP1252_HIGH if c not in _RISKY))
_PUNCT_THEN_LETTER = "[" + re.escape(_RISKY.replace("\u00a0", "")) + r"](?=[^\W\d_])"
MOJIBAKE_PATTERNS: Mapping[str, str] = {
    # One is enough:
    "replacement": "\ufffd",  # U+FFFD: bytes the reader could not decode
    # Ã© Ã¨ Ã¼ Ã§ Ã\u00a0 (à) Ã« (ë) Ãƒ (twice encoded), Â° Â© Â\u00a0 -- Â/Ã (0xC2/0xC3) lead the Latin-1
    # letters and symbols, the bulk of mojibake; NÃO, São, MAÇÃ never put a continuation character after Ã,
    # and « opens a quote (after a space), while «AMANHÃ» closes one.
    "latin1": f"[\u00c2\u00c3](?:[{_SAFE}\u00a0\u00ab]|{_PUNCT_THEN_LETTER})",
    # â€™ â€œ â€” â„¢ â†’ (0xE2: punctuation, symbols, arrows, box drawing), also with the last byte lost.
    "punctuation": f"\u00e2(?:\u20ac|[{_CONT}][{_CONT}])",
    # ï»¿: a byte-order mark.
    "bom": "\u00ef\u00bb\u00bf",
    # æ–‡ ä¸­ (a 3-byte lead: CJK and the rest of the BMP); ðŸ˜€ (a 4-byte lead: emoji).
    "three_byte": f"[\u00e0-\u00ef][{_SAFE}][{_CONT}]",
    "four_byte": f"[\u00f0-\u00f4][{_CONT}]{{3}}",
    # Twice in one text: any other 2-byte lead and continuation (Ð¿Ñ€ Cyrillic, Å‚ Ä™ Polish, Î± Greek,
    # ×© Hebrew); one alone may be a capital or ß before a symbol.
    "pair": f"[\u00c4-\u00df](?:[{_SAFE}]|{_PUNCT_THEN_LETTER})",
}
# Flat, for speed (as _PLACEHOLDER): a match starting with Ä-ß is a "pair", any other a sure sign.
_MOJIBAKE = re.compile("|".join(MOJIBAKE_PATTERNS.values()))
# Every sign holds a continuation character (or is U+FFFD): text without one is clean after one quick scan.
_MOJIBAKE_HINT = re.compile(f"[{_CONT}\ufffd]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _prompt_list(prompts: Any) -> list[int]:
    return [prompts] if type(prompts) is int else list(prompts)


def _copy_prompts(prompts: Any) -> Any:
    return prompts if prompts is None or type(prompts) is int else array("Q", prompts)


def _text(content: Any) -> str:
    """Message content as one string, as ChatDataset reads it: None -> "", a list of parts -> text parts joined."""
    if type(content) is str or isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, Mapping):
        content = [content]
    if not isinstance(content, list):
        return ""
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
            parts.append(part["text"])
    return "\n".join(parts)


def _short(text: str, limit: int = EXAMPLE_CHARS) -> str:
    """An example for a report: whitespace collapsed, control characters escaped, at most ``limit`` chars."""
    s = " ".join(text.split())
    s = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", s)
    return s if len(s) <= limit else s[: limit - 1] + "\u2026"


def _around(text: str, start: int, end: int, margin: int = 30) -> str:
    lo, hi = max(0, start - margin), min(len(text), end + margin)
    return ("\u2026" if lo else "") + text[lo:hi] + ("\u2026" if hi < len(text) else "")


_ASCII_SPACES = bytes.maketrans(b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f", b" " * 9)  # str.split()'s ASCII whitespace


def _normalized(text: str) -> bytes:
    """The UTF-8 of ``" ".join(text.split())``: stripped, whitespace runs made one space, case kept.

    ASCII text (most of it) goes through bytes.translate and replace, 3x faster than split and join and without a
    string per word.
    """
    if text.isascii():
        b = text.encode("ascii").translate(_ASCII_SPACES)
        while b"  " in b:
            b = b.replace(b"  ", b" ")
        return b.strip(b" ")
    return " ".join(text.split()).encode("utf-8", "surrogatepass")


def _digest(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def find_placeholder(text: str) -> re.Match[str] | None:
    """The first unfilled placeholder in assistant ``text`` (code masked), or None. See PLACEHOLDER_PATTERNS."""
    if "`" in text or "~~~" in text:
        text = _CODE.sub(lambda m: " " * len(m.group()), text)  # same length: match offsets stay valid
    json_like = code_like = None
    for m in _PLACEHOLDER.finditer(text):
        if m.group()[0] == "{":
            if json_like is None:
                json_like = _JSON_LIKE.match(text) is not None
            if json_like:
                continue
            if code_like is None:
                code_like = _CODE_LIKE.search(text) is not None
            if code_like:
                continue
        return m
    return None


def find_mojibake(text: str) -> re.Match[str] | None:
    """The first sign of mojibake in ``text``, or None. See MOJIBAKE_PATTERNS."""
    if text.isascii():
        return None
    hint = _MOJIBAKE_HINT.search(text)
    if hint is None:
        return None
    first_pair = None
    for m in _MOJIBAKE.finditer(text, max(0, hint.start() - 1)):  # a sign starts at most one before its hint
        if not "\u00c4" <= m.group()[0] <= "\u00df":
            return m
        if first_pair is not None:
            return first_pair
        first_pair = m
    return None


class _Check:
    """One defect: rows with it, the first rows, one example and the row it came from."""

    __slots__ = ("count", "rows", "example", "example_row")

    def __init__(self) -> None:
        self.count = 0
        self.rows: list[int] = []
        self.example: str | None = None
        self.example_row: int | None = None

    def hit(self, row: int, example: str, limit: int) -> None:
        self.count += 1
        if len(self.rows) < limit:
            self.rows.append(row)
        if self.example is None:
            self.example = _short(example)
            self.example_row = row


class QualityLint:
    """Streaming data-quality lint: ``add`` every conversation, then read ``findings()`` or ``to_dict()``.

    ``max_rows_listed``: row numbers kept per check (counts are always complete). ``repeated_min``: different
    prompts an answer must follow to be a ``repeated_answer`` (at least 2). ``repeated_min_chars`` and
    ``max_answers``: see ``REPEATED_MIN_CHARS`` and ``MAX_ANSWERS``.
    """

    def __init__(
        self,
        *,
        max_rows_listed: int = 100,
        repeated_min: int = REPEATED_MIN,
        repeated_min_chars: int = REPEATED_MIN_CHARS,
        max_answers: int = MAX_ANSWERS,
        mergeable: bool = False,
    ) -> None:
        """``mergeable``: keep each answer's text (shortened) so that ``merge`` can name an answer that becomes
        repeated only across lints (the Ray engine lints each block apart; a block is small)."""
        if max_rows_listed < 0:
            raise ValueError("max_rows_listed must be >= 0")
        if repeated_min < 2:
            raise ValueError("repeated_min must be >= 2")
        if max_answers < 2:
            raise ValueError("max_answers must be >= 2")
        self.max_rows_listed = max_rows_listed
        self.repeated_min = repeated_min
        self.repeated_min_chars = repeated_min_chars
        self.max_answers = max_answers
        self.rows = 0  # conversations added
        # every check but repeated_answer, which is known only at the end (an answer becomes repeated late)
        self._checks: dict[str, _Check] = {c: _Check() for c in QUALITY_CODES if c != "repeated_answer"}
        # answer digest -> [rows, first row, last row, prompt digest (int) | array('Q') of them | None]
        self._answers: dict[int, list[Any]] = {}
        # answer digest -> its example text, once it is repeated (at most one per repeated answer)
        self._repeated: dict[int, str] = {}
        self.prunes = 0  # times the answer table was full and cut to half
        self._texts: dict[int, str] | None = {} if mergeable else None

    # -- per row ----------------------------------------------------------------------------------------------
    def add(self, row: int, conversation: Mapping[str, Any]) -> None:
        """Lint one conversation; ``row`` is its 1-based input row number, as findings list it."""
        self.rows += 1
        is_map = type(conversation) is dict or isinstance(conversation, Mapping)
        messages = conversation.get("messages") if is_map else None
        if not isinstance(messages, list) or not messages:
            return
        limit = self.max_rows_listed
        checks = self._checks
        placeholder = near_empty = mojibake = False
        prompt: str | None = None
        prompt_digest: list[int] = []  # the digest of prompt, once an answer needs it
        role: Any = None
        for m in messages:
            if type(m) is not dict and not isinstance(m, Mapping):
                role = None
                continue
            role = m.get("role")
            text = _text(m.get("content"))
            if not mojibake:
                if not text.isascii():
                    mojibake = self._mojibake(row, text)
                reasoning = m.get("reasoning_content")
                if not mojibake and reasoning and isinstance(reasoning, str) and not reasoning.isascii():
                    mojibake = self._mojibake(row, reasoning)
            if role == "user":
                prompt = text
                prompt_digest = []
            elif role == "assistant":
                if not placeholder and ("{" in text or "[" in text or "<" in text):
                    hit = find_placeholder(text)
                    if hit is not None:
                        placeholder = True
                        checks["unfilled_placeholder"].hit(row, _around(text, hit.start(), hit.end()), limit)
                # stripped shorter than NEAR_EMPTY_CHARS (2) needs a short text or whitespace at an end
                if not near_empty and (len(text) < 2 or text[0].isspace() or text[-1].isspace()):
                    stripped = text.strip()
                    if (
                        len(stripped) < NEAR_EMPTY_CHARS
                        and not (len(stripped) == 1 and stripped.isalnum())
                        and not m.get("tool_calls")
                    ):
                        near_empty = True
                        checks["near_empty_answer"].hit(row, stripped, limit)
                if len(text) >= self.repeated_min_chars:
                    self._track_answer(row, text, prompt, prompt_digest)
        if role == "user":
            last = messages[-1]
            checks["ends_with_user_turn"].hit(row, _text(last.get("content")), limit)

    def _mojibake(self, row: int, text: str) -> bool:
        hit = find_mojibake(text)
        if hit is None:
            return False
        self._checks["mojibake"].hit(row, _around(text, hit.start(), hit.end()), self.max_rows_listed)
        return True

    def _track_answer(self, row: int, text: str, prompt: str | None, prompt_digest: list[int]) -> None:
        answer = _normalized(text)
        if len(answer) < self.repeated_min_chars and (
            text.isascii() or len(answer.decode("utf-8", "surrogatepass")) < self.repeated_min_chars
        ):
            return
        key = _digest(answer)
        if not prompt_digest:  # computed once per user message, kept in the caller's list
            prompt_digest.append(0 if prompt is None else _digest(_normalized(prompt)))
        p = prompt_digest[0]
        entry = self._answers.get(key)
        if entry is None:
            if len(self._answers) >= self.max_answers:
                self._prune()
            self._answers[key] = [1, row, row, p]
            if self._texts is not None:
                self._texts[key] = answer[: EXAMPLE_CHARS * 8].decode("utf-8", "replace")
            return
        if entry[2] != row:
            entry[0] += 1
            entry[2] = row
        prompts = entry[3]
        if prompts is None:  # already repeated
            return
        if type(prompts) is int:
            if prompts == p:
                return
            prompts = entry[3] = array("Q", (prompts, p))
        elif p in prompts:
            return
        else:
            prompts.append(p)
        if len(prompts) >= self.repeated_min:
            entry[3] = None
            self._repeated[key] = answer[: EXAMPLE_CHARS * 8].decode("utf-8", "replace")

    def _prune(self) -> None:
        """Keep the ``max_answers // 2`` answers repeated, then seen in the most rows (ties at the cut go together)."""
        self.prunes += 1
        keep = self.max_answers // 2
        ranks = sorted((e[3] is None, e[0]) for e in self._answers.values())
        # drop every answer ranked at or below the cut: at least len - keep of them
        cut = ranks[len(ranks) - keep - 1]
        self._answers = {k: e for k, e in self._answers.items() if (e[3] is None, e[0]) > cut}
        self._repeated = {k: t for k, t in self._repeated.items() if k in self._answers}

    def merge(self, other: QualityLint) -> None:
        """Add ``other``, the lint of the rows that follow this one's (the Ray engine's next block), so that the
        result is the one lint over both would give: counts add, first rows and examples come in row order, and
        an answer's prompts are united (``other`` must be ``mergeable`` for an answer repeated only across)."""
        self.rows += other.rows
        for code, c in self._checks.items():
            o = other._checks[code]
            c.count += o.count
            c.rows.extend(o.rows[: max(0, self.max_rows_listed - len(c.rows))])
            if c.example is None and o.example is not None:
                c.example, c.example_row = o.example, o.example_row
        for key, (rows, first, last, prompts) in other._answers.items():
            mine = self._answers.get(key)
            if mine is None:
                if len(self._answers) >= self.max_answers:
                    self._prune()
                self._answers[key] = [rows, first, last, _copy_prompts(prompts)]
                if key in other._repeated:
                    self._repeated[key] = other._repeated[key]
                if self._texts is not None and other._texts is not None and key in other._texts:
                    self._texts[key] = other._texts[key]
                continue
            mine[0] += rows
            mine[2] = max(mine[2], last)
            if mine[3] is None:
                continue
            if prompts is None:
                mine[3] = None
            else:
                union = set(_prompt_list(mine[3])) | set(_prompt_list(prompts))
                mine[3] = None if len(union) >= self.repeated_min else array("Q", sorted(union))
            if mine[3] is None and key not in self._repeated:
                text = (
                    other._repeated.get(key) or (other._texts or {}).get(key) or (self._texts or {}).get(key)
                )
                self._repeated[key] = text or ""

    # -- results ------------------------------------------------------------------------------------------------
    def _repeated_answers(self) -> list[dict[str, Any]]:
        """Every repeated answer, most rows first: rows it is in, the first row, the answer (shortened)."""
        out = []
        for key, answer in self._repeated.items():
            rows, first, _last, _prompts = self._answers[key]
            out.append({"rows": rows, "first_row": first, "example": _short(answer)})
        out.sort(key=lambda a: (-a["rows"], a["first_row"]))
        return out

    def findings(self) -> list[Finding]:
        """One finding per defect found, in ``QUALITY_CODES`` order; none for a clean dataset."""
        out: list[Finding] = []
        for code in QUALITY_CODES:
            if code == "repeated_answer":
                f = self._repeated_finding()
                if f is not None:
                    out.append(f)
                continue
            c = self._checks[code]
            if not c.count:
                continue
            what = {
                "unfilled_placeholder": "assistant text holds an unfilled placeholder",
                "near_empty_answer": "an assistant answer is blank or one character",
                "mojibake": "text with replacement characters or double-decoded UTF-8",
                "ends_with_user_turn": "the conversation ends with a user turn",
            }[code]
            message = (
                f"{c.count} row{'s' if c.count != 1 else ''}: {what} (row {c.example_row}: {c.example!r})"
            )
            out.append(finding(code, message, rows=c.rows, count=c.count, example=c.example))
        return out

    def _repeated_finding(self) -> Finding | None:
        answers = self._repeated_answers()
        if not answers:
            return None
        n_rows = sum(a["rows"] for a in answers)
        top = answers[0]
        who = "1 answer follows" if len(answers) == 1 else f"{len(answers)} answers each follow"
        message = (
            f"{who} {self.repeated_min}+ different prompts, in {n_rows} rows; most: {top['example']!r} in "
            f"{top['rows']} rows (first row {top['first_row']})"
        )
        rows = sorted(a["first_row"] for a in answers)[: self.max_rows_listed]
        return finding(
            "repeated_answer",
            message,
            rows=rows,
            count=n_rows,
            example=top["example"],
            answers=answers[:TOP_ANSWERS],
            repeated_min=self.repeated_min,
        )

    def to_dict(self) -> dict[str, Any]:
        """Counts per code, the first rows and an example of each, the most repeated answers, the table bound.

        ``checks[code]`` is ``{"count", "rows", "example", "example_row"}``; ``repeated_answer`` adds ``answers``
        (the most repeated, ``{"rows", "first_row", "example"}``) and ``repeated`` (how many answers); its
        ``count`` is the rows holding a repeated answer and its ``rows`` the first row of each.
        """
        answers = self._repeated_answers()
        checks: dict[str, Any] = {}
        for code in QUALITY_CODES:
            if code == "repeated_answer":
                checks[code] = {
                    "count": sum(a["rows"] for a in answers),
                    "rows": sorted(a["first_row"] for a in answers)[: self.max_rows_listed],
                    "example": answers[0]["example"] if answers else None,
                    "example_row": answers[0]["first_row"] if answers else None,
                    "answers": answers[:TOP_ANSWERS],
                    "repeated": len(answers),
                }
            else:
                c = self._checks[code]
                checks[code] = {
                    "count": c.count,
                    "rows": list(c.rows),
                    "example": c.example,
                    "example_row": c.example_row,
                }
        return {
            "rows": self.rows,
            "counts": {code: checks[code]["count"] for code in QUALITY_CODES},
            "checks": checks,
            "repeated_min": self.repeated_min,
            "repeated_min_chars": self.repeated_min_chars,
            "answer_table": {"size": len(self._answers), "cap": self.max_answers, "prunes": self.prunes},
        }
