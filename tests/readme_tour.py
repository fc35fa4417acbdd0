"""The README's and docs' examples as data: fenced blocks, the commands in them, the output they show.

No processes here (``tests/tourkit.py`` runs them; ``tests/e2e/test_readme_tour.py`` is the tour).
What a block shows becomes a regular expression in which times, ids, seqs,
pids, durations, placeholders and ``...`` are wildcards, so a session of
today matches an example written weeks ago.
"""
from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Every block in these languages needs a tour step; an unlabeled block only when it is a session.
LANGS = ("sh", "bash", "python", "js", "yaml")
SESSION_LINE = re.compile(r"^(\$ |make |\.venv/bin/|python -m |curl )")
# Where a "# NAME: ..." header sends the shown lines below it: a terminal the tour started.
TERMINALS = re.compile(r"^(terminal \d+|on the master bus):\s*(.*)$")
# Three spaces, then "(...)" or "and ...": a remark beside the shown output, not part of it.
REMARK = re.compile(r"\s{3,}(\(.*\)|and .*)$")


@dataclass(frozen=True)
class Block:
    doc: str        # "README.md", "docs/api.md"
    line: int       # the opening fence's line
    lang: str       # "sh", "python", ..., or "session" (an unlabeled block that is one)
    text: str

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass
class Shown:
    """A line of output the document shows; ``terminal`` is "" for the command's own output."""

    terminal: str
    text: str
    remark: str = ""


@dataclass
class Command:
    line: int               # in the document
    text: str               # as written (continuation lines and here-documents included)
    note: str = ""          # its trailing comment
    shown: list[Shown] = field(default_factory=list)


def doc_blocks(repo: Path = REPO) -> list[Block]:
    """Every block the tour must account for, README.md first, then docs/*.md, in document order."""
    blocks = []
    for path in [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]:
        lines = path.read_text().splitlines()
        opened, lang, body = 0, "", []
        for number, line in enumerate(lines, 1):
            if not line.startswith("```"):
                body.append(line)
                continue
            if not opened:
                opened, lang, body = number, line[3:].strip(), []
                continue
            text = "\n".join(body)
            if lang == "" and any(SESSION_LINE.match(each) for each in body):
                lang = "session"
            if lang in (*LANGS, "session"):
                blocks.append(Block(str(path.relative_to(repo)), opened, lang, text))
            opened = 0
    return blocks


def split_comment(line: str) -> tuple[str, str]:
    """``(code, comment)`` of a shell line: a ``#`` after a blank and outside quotes starts the comment."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def session(block: Block) -> list[Command]:
    """The commands of a shell block, each with the lines it shows below it.

    ``$ CMD`` blocks show plain output lines; others show ``# ...`` lines. A
    ``# terminal 2:`` or ``# on the master bus:`` header sends the lines after
    it to that terminal; a shown line indented further continues the one above.
    """
    lines = block.text.splitlines()
    prompt = any(line.startswith("$ ") for line in lines)
    commands: list[Command] = []
    terminal, heredoc, continued = "", "", False
    for number, raw in enumerate(lines, block.line + 1):
        if heredoc:
            commands[-1].text += "\n" + raw
            heredoc = "" if raw.strip() == heredoc else heredoc
            continue
        if continued:
            code, note = split_comment(raw)
            commands[-1].text += "\n" + code
            commands[-1].note = note or commands[-1].note
            continued = code.endswith("\\")
            continue
        if prompt and not raw.startswith("$ "):
            if commands:
                commands[-1].shown.append(Shown("", raw.rstrip()))
            continue
        if not prompt and raw.lstrip().startswith("#"):
            if commands:
                terminal = _shown(commands[-1], raw.lstrip()[1:], terminal)
            continue
        if not raw.strip():
            continue
        code, note = split_comment(raw[2:] if prompt else raw)
        commands.append(Command(number, code, note))
        terminal = ""
        marker = re.search(r"<<-?\s*'?\"?(\w+)", code)
        heredoc = marker.group(1) if marker else ""
        continued = code.endswith("\\")
    for command in commands:
        while command.shown and not command.shown[-1].text and not command.shown[-1].terminal:
            command.shown.pop()  # blank lines before the closing fence
    return commands


def _shown(command: Command, text: str, terminal: str) -> str:
    text = text[1:] if text.startswith(" ") else text
    header = TERMINALS.match(text)
    if header:
        terminal, text = header.group(1), header.group(2)
        if not text:
            return terminal
    elif text.startswith("  ") and command.shown and command.shown[-1].terminal == terminal:
        last = command.shown[-1]
        last.text = f"{last.text} {text.strip()}"
        remark = REMARK.search(last.text)
        if remark:
            last.text, last.remark = last.text[:remark.start()], remark.group(1)
        return terminal
    text = text.strip()
    remark = REMARK.search(text)
    command.shown.append(Shown(terminal, text[:remark.start()] if remark else text,
                               remark.group(1) if remark else ""))
    return terminal


WILDCARDS = re.compile(r"""
    (?P<ellipsis>\S*?\.\.\.)                                   # "..." or an abbreviated value: "6s0Jx..."
  | (?P<time>\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:\d\d)?)      # ISO times (_stamp)
  | (?P<placeholder><[a-z ]+>)                                  # <token>, <password>
  | (?P<duration>\b\d+(?:\.\d+)?(?:ms|s|m|h|d)\b)               # uptimes: "up 5m"
  | (?P<number>\b\d{4,}\b)                                      # seqs, ids, pids
  | (?P<small>\b\d+\b)                                          # counts: literal unless any_number
  | (?P<space>\s+)
""", re.X)


def shown_pattern(text: str, any_number: bool = False) -> str:
    """A regular expression for ``text`` as shown: its variable parts become wildcards."""
    wild = {"ellipsis": ".*?", "time": r"[\dT:.+Z-]+", "placeholder": r"\S+", "duration": r"[\d.]+[a-z]+",
            "number": r"\d+", "space": r"\s+"}
    parts, pos = [], 0
    for match in WILDCARDS.finditer(text):
        parts.append(re.escape(text[pos:match.start()]))
        kind = match.lastgroup
        if kind == "small":
            parts.append(r"\d+" if any_number else re.escape(match.group()))
        else:
            parts.append(wild[kind])
        pos = match.end()
    parts.append(re.escape(text[pos:]))
    return "".join(parts)


ANY = "\0any"  # where a shown JSON value has a bare ``...``: any other keys or elements there


def loose_json(text: str) -> object:
    """``text`` read as JSON, a bare ``...`` in it read as ``ANY``; ``None`` when it is not JSON."""
    out, stack, pos, in_string = [], [], 0, False
    while pos < len(text):
        char = text[pos]
        if in_string:
            out.append(text[pos:pos + 2] if char == "\\" else char)
            in_string = char != '"'
            pos += 2 if char == "\\" else 1
            continue
        if text.startswith("...", pos):
            opens_entry = stack[-1:] == ["{"] and "".join(out).rstrip()[-1:] in ",{"
            out.append(json.dumps(ANY) + (": null" if opens_entry else ""))
            pos += 3
            continue
        in_string = char == '"'
        stack += [char] if char in "{[" else []
        stack = stack[:-1] if char in "}]" and stack else stack
        out.append(char)
        pos += 1
    try:
        return json.loads("".join(out))
    except ValueError:
        return None


def json_like(shown: object, value: object, any_number: bool = False) -> bool:
    """Whether ``value`` is what ``shown`` shows: keys as shown (more where ``...``), strings as patterns,
    numbers of four digits or more (seqs, ids) as any number."""
    if shown == ANY:
        return True
    if isinstance(shown, dict):
        keys = [key for key in shown if key != ANY]
        return (isinstance(value, dict) and (ANY in shown or set(keys) == set(value))
                and all(key in value and json_like(shown[key], value[key], any_number) for key in keys))
    if isinstance(shown, list):
        items = [item for item in shown if item != ANY]
        if not isinstance(value, list):
            return False
        if ANY not in shown:
            return len(items) == len(value) and all(json_like(a, b, any_number) for a, b in zip(items, value))
        rest = iter(value)  # the shown items in order, others between them
        return all(any(json_like(item, each, any_number) for each in rest) for item in items)
    if isinstance(shown, bool) or shown is None:
        return shown is value
    if isinstance(shown, (int, float)):
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and (any_number or isinstance(shown, float) or abs(shown) >= 1000 or shown == value))
    return isinstance(value, str) and bool(re.fullmatch(shown_pattern(str(shown), any_number), value, re.S))


class Expect:
    """One line a document shows, and whether a line of output is it; a JSON object in it is compared as data."""

    def __init__(self, text: str, any_number: bool = False) -> None:
        self.text, self.any_number = text, any_number
        brace = text.find("{")
        self.data = loose_json(text[brace:]) if brace >= 0 else None
        self.head = shown_pattern(text[:brace].rstrip(), any_number) + r"\s*"
        self.pattern = shown_pattern(text, any_number)

    def matches(self, line: str) -> bool:
        line = line.rstrip()
        brace = line.find("{")
        if self.data is not None and brace >= 0 and re.fullmatch(self.head, line[:brace]):
            try:
                return json_like(self.data, json.loads(line[brace:]), self.any_number)
            except ValueError:
                pass
        return bool(re.fullmatch(self.pattern, line, re.S))

    def __str__(self) -> str:
        return self.text


def on_a_bus(text: str) -> list[Expect]:
    """What a bus terminal shows: ``TAG DATA`` events, several joined by ``, then`` or ``and``.

    Each is one ``watch`` line (``TAG<TAB>JSON``); a tag alone matches that tag with any data.
    """
    events, depth, start, pos = [], 0, 0, 0
    joint = re.compile(r",?\s+(?:then|and)\s+")
    while pos < len(text):
        depth += (text[pos] in "{[") - (text[pos] in "}]")
        found = joint.match(text, pos) if depth == 0 else None
        if found:
            events.append(text[start:pos])
            start = pos = found.end()
        else:
            pos += 1
    events.append(text[start:])
    return [Expect(event if " " in event else f"{event} ...") for event in filter(None, map(str.strip, events))]


def first_match(expected: list[Expect], lines: list[str], start: int = 0) -> tuple[int, int]:
    """How many of ``expected`` match ``lines[start:]`` in order, and where the next would start."""
    done, pos = 0, start
    while done < len(expected) and pos < len(lines):
        if expected[done].matches(lines[pos]):
            done += 1
        pos += 1
    return done, pos


# --- Python blocks: what a trailing comment says a value is, checked when the block runs.

CHECKER = '''
import json as _json, re as _re, sys as _sys
def __shown__(value, kind, expected, or_none, where, comment):
    """The tour's check of a value a README comment shows (tests/readme_tour.py)."""
    if value is None and or_none:
        return value
    if kind == "keys":
        ok = isinstance(value, dict) and sorted(value) == sorted(expected)
    else:
        texts = [repr(value), _json.dumps(value, default=str)]
        ok = any(_re.fullmatch(expected, text, _re.S) for text in texts)
    if not ok:
        _sys.exit(f"{where}: the document shows  # {comment}\\n  got: {value!r}")
    return value
'''


def value_claim(comment: str) -> tuple[str, object, bool] | None:
    """``(kind, expected, or_none)`` when a Python comment shows a value (``-> True``, ``{"a", "b"}``, JSON)."""
    text = comment[3:].strip() if comment.startswith("-> ") else comment
    if re.match(r"(True|False|None)\b", text):
        value, rest = re.match(r"\w+", text).group(), text[len(re.match(r"\w+", text).group()):]
    elif text[:1] in "{[":
        depth = 0
        for end, char in enumerate(text):
            depth += (char in "{[") - (char in "}]")
            if depth == 0:
                break
        value, rest = text[:end + 1], text[end + 1:]
    else:
        return None
    or_none = rest.strip().startswith("or None")
    if re.fullmatch(r'\{\s*"[^"]*"(\s*,\s*"[^"]*")*\s*\}', value):
        return "keys", re.findall(r'"([^"]*)"', value), or_none
    return "pattern", shown_pattern(value), or_none


def checked_python(code: str, where: Block) -> str:
    """``code`` with each value its comments show checked at run time (``__shown__``, see ``CHECKER``).

    A comment after an expression checks its value, after ``x = ...`` the
    value of ``x``, after ``for x in ...:`` each ``x``; other comments are prose.
    """
    lines = code.splitlines()
    comments = [(tok.start[0] - 1, tok.start[1], tok.string[1:].strip())
                for tok in tokenize.generate_tokens(io.StringIO(code + "\n").readline)
                if tok.type == tokenize.COMMENT]
    inserts: dict[int, str] = {}
    for row, col, comment in comments:
        claim = value_claim(comment)
        statement = lines[row][:col].rstrip()
        if claim is None or not statement.strip():
            continue
        indent = statement[:len(statement) - len(statement.lstrip())]
        args = ", ".join(repr(x) for x in (*claim, f"{where.doc}:{where.line + 1 + row}", comment))
        loop = re.match(r"\s*(?:async\s+)?for\s+(.+?)\s+in\s+.+:$", statement)
        assign = re.match(r"\s*([A-Za-z_]\w*)\s*=(?!=)", statement)
        if loop:
            body = next((line for line in lines[row + 1:] if line.strip()), indent + "    ")
            inserts[row] = f"{body[:len(body) - len(body.lstrip())]}__shown__(({loop.group(1)}), {args})"
        elif assign:
            inserts[row] = f"{indent}__shown__({assign.group(1)}, {args})"
        elif _is_expression(statement.strip()):
            lines[row] = f"{indent}__shown__({statement.strip()}, {args})  # {comment}"
    out = []
    for row, line in enumerate(lines):
        out.append(line)
        if row in inserts:
            out.append(inserts[row])
    return "\n".join(out)


def _is_expression(text: str) -> bool:
    try:
        ast.parse(text.replace("await ", "", 1), mode="eval")
    except SyntaxError:
        return False
    return True


def fields_named(note: str) -> list[str]:
    """The names a comment lists as a command's output (``first_seq, last_seq, ..., bytes``)."""
    return [name.strip() for name in re.split(r"[,/]", note) if name.strip() and name.strip() != "..."]


def tags_named(note: str) -> list[str]:
    """The tags a comment says a command fires (``salt/key, salt/auth`` or ``fires salt/netapi/...``)."""
    return [tag for tag in re.findall(r"[\w.-]+(?:/[\w.*-]+)+", note)]

