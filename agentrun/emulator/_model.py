"""The emulator's deterministic scripted "model".

Given the run's instructions, the thread's messages, the run's tools and any submitted tool
outputs, `respond` decides what the run does: call tools, reply with text, or end early
because of a magic directive. The same input always gives the same output, and token counts
come from a simple regex tokenizer over the real text.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ._settings import SCRIPTS

__all__ = ["Directives", "ModelInput", "Reply", "ToolCallPlan", "count_tokens", "respond"]

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_DIRECTIVE_RE = re.compile(r"\[emulator:([a-z_]+)(?:=([^\]]*))?\]")


def count_tokens(text: str) -> int:
    """Count tokens the emulator's way: words and single punctuation marks."""
    return len(_TOKEN_RE.findall(text))


def split_words(text: str) -> list[str]:
    """Split a reply into words, whitespace kept with the word after it (they join back)."""
    parts = re.findall(r"\s*\S+", text)
    if not parts:
        return [text] if text else []
    rest = text[len("".join(parts)) :]
    if rest:
        parts[-1] += rest
    return parts


def split_deltas(text: str) -> list[str]:
    """Split a reply into streamed text deltas of sub-word size, deterministically.

    Like the service's tokens (real-service.md L3), a word of more than four characters is cut
    into pieces of three and four characters in turn; whitespace stays with the piece after
    it. The pieces join back into `text`.
    """
    out: list[str] = []
    for word in split_words(text):
        stripped = word.lstrip()
        lead = word[: len(word) - len(stripped)]
        if len(stripped) <= 4:
            out.append(word)
            continue
        pieces: list[str] = []
        i = size = 0
        while i < len(stripped):
            size = 3 if size != 3 else 4
            pieces.append(stripped[i : i + size])
            i += size
        pieces[0] = lead + pieces[0]
        out.extend(pieces)
    return out


def split_fragments(text: str, size: int = 5) -> list[str]:
    """Split tool-call arguments (or code) into small fragments of `size` characters.

    Fragments are cut at fixed offsets, so escape sequences such as ``\\n`` or ``\\"`` are
    split across fragments, as the service does (real-service.md section 3, item 13).
    """
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


_CODE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def failure_message(code: str, model: str) -> str:
    """The `last_error.message` the service gives for a run `last_error.code`."""
    return {
        "server_error": "Sorry, something went wrong.",
        "rate_limit_exceeded": "Rate limit is exceeded. Try again in 60 seconds.",
        "invalid_engine_error": f"Failed to resolve model info for: {model}",
        "invalid_prompt": "Invalid prompt: your prompt was flagged as potentially violating "
        "our usage policy.",
    }.get(code, f"The run failed with error code '{code}'.")


def failure_code(value: str | None) -> str:
    """A `last_error.code` from a directive or fault value (any code; empty → server_error)."""
    if value and _CODE_RE.match(value):
        return value
    return "server_error"


@attrs.frozen
class Directives:
    """The `[emulator:...]` directives found in the user's messages for this run."""

    fail: str | None = None
    expire: bool = False
    incomplete: bool = False
    content_filter: bool = False
    sleep: float | None = None
    script: str | None = None
    #: `last_error.code` for `[emulator:fail_midway=CODE]` (or the fail_midway script)
    fail_midway: str | None = None


def parse_directives(text: str) -> Directives:
    fail = script = fail_midway = None
    expire = incomplete = content_filter = False
    sleep = None
    for name, value in _DIRECTIVE_RE.findall(text):
        if name == "fail":
            fail = failure_code(value)
        elif name == "expire":
            expire = True
        elif name == "incomplete":
            incomplete = True
        elif name == "content_filter":
            content_filter = True
        elif name == "script":
            script = value if value in SCRIPTS else None
        elif name == "fail_midway":
            script = "fail_midway"
            fail_midway = failure_code(value)
        elif name == "sleep":
            try:
                sleep = max(0.0, float(value))
            except ValueError:
                sleep = None
    return Directives(fail, expire, incomplete, content_filter, sleep, script, fail_midway)


def strip_directives(text: str) -> str:
    return _DIRECTIVE_RE.sub("", text).strip()


@attrs.frozen
class ModelInput:
    """What the model sees: instructions, the thread's (role, text) pairs, tools, outputs."""

    instructions: str
    messages: tuple[tuple[str, str], ...]
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    # (function name, arguments JSON, output) of the tool calls answered in this run
    tool_outputs: tuple[tuple[str, str, str], ...] = ()
    agent_name: str | None = None


@attrs.frozen
class ToolCallPlan:
    name: str
    arguments: str


@attrs.frozen
class Reply:
    """The model's decision: tool calls to make, or a text reply."""

    text: str = ""
    tool_calls: tuple[ToolCallPlan, ...] = ()

    @property
    def completion_tokens(self) -> int:
        if self.tool_calls:
            return sum(count_tokens(c.name) + count_tokens(c.arguments) for c in self.tool_calls)
        return count_tokens(self.text)


def prompt_tokens(inp: ModelInput) -> int:
    """Tokens in everything the model read: instructions, messages and tool results."""
    total = count_tokens(inp.instructions)
    total += sum(count_tokens(text) for _role, text in inp.messages)
    total += sum(count_tokens(out) for _name, _args, out in inp.tool_outputs)
    return total


def respond(inp: ModelInput) -> Reply:
    """Decide the reply for one model turn."""
    last_user = next((t for r, t in reversed(inp.messages) if r == "user"), "")
    prompt = strip_directives(last_user)
    concise = _wants_concise(inp.instructions)
    if inp.tool_outputs:
        return Reply(text=_reply_from_tools(inp.tool_outputs, concise))
    calls = _plan_tool_calls(inp, prompt)
    if calls:
        return Reply(tool_calls=calls)
    return Reply(text=_text_reply(inp, prompt, concise))


# -- tools ---------------------------------------------------------------------------------


def _function_tools(tools: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    out = []
    for tool in tools:
        fn = tool.get("function") if tool.get("type") == "function" else None
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            out.append(fn)
    return out


def _plan_tool_calls(inp: ModelInput, prompt: str) -> tuple[ToolCallPlan, ...]:
    if inp.tool_choice == "none":
        return ()
    functions = _function_tools(inp.tools)
    forced = None
    if isinstance(inp.tool_choice, Mapping) and inp.tool_choice.get("type") == "function":
        fn = inp.tool_choice.get("function")
        if isinstance(fn, Mapping):
            forced = fn.get("name")
    lowered = prompt.lower()
    chosen = []
    for fn in functions:
        name = str(fn["name"])
        if name == forced or (
            forced is None
            and (name.lower() in lowered or name.lower().replace("_", " ") in lowered)
        ):
            chosen.append(fn)
    if not inp.parallel_tool_calls:
        chosen = chosen[:1]
    return tuple(
        ToolCallPlan(str(fn["name"]), json.dumps(_arguments(fn.get("parameters"), prompt)))
        for fn in chosen
    )


_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
_PLACE_RE = re.compile(r"\b(?:in|at|for|from|to)\s+([A-Z][\w'-]*(?:[ ,]+[A-Z][\w'-]*)*)")
_QUOTED_RE = re.compile(r"[\"']([^\"']+)[\"']")


def _arguments(schema: Any, prompt: str) -> dict[str, Any]:
    """Fill a JSON-schema object's properties from the prompt, deterministically."""
    if not isinstance(schema, Mapping):
        return {}
    props = schema.get("properties")
    if not isinstance(props, Mapping):
        return {}
    required = schema.get("required")
    required_set = set(required) if isinstance(required, list) else set(props)
    numbers = _NUMBER_RE.findall(prompt)
    place = _PLACE_RE.search(prompt)
    quoted = _QUOTED_RE.search(prompt)
    args: dict[str, Any] = {}
    for name, prop in props.items():
        if not isinstance(prop, Mapping):
            prop = {}
        value = _value_for(str(name), prop, numbers, place, quoted, prompt)
        if value is not None or name in required_set:
            args[str(name)] = value if value is not None else _default_for(prop)
    return args


def _value_for(
    name: str,
    prop: Mapping[str, Any],
    numbers: list[str],
    place: re.Match[str] | None,
    quoted: re.Match[str] | None,
    prompt: str,
) -> Any:
    kind = prop.get("type")
    enum = prop.get("enum")
    if isinstance(enum, list) and enum:
        lowered = prompt.lower()
        for option in enum:
            if str(option).lower() in lowered:
                return option
        return enum[0]
    if kind in ("number", "integer"):
        if not numbers:
            return None
        value = float(numbers.pop(0))
        return int(value) if kind == "integer" or value.is_integer() else value
    if kind == "boolean":
        return None
    if kind in ("string", None):
        lname = name.lower()
        if place and any(w in lname for w in ("location", "city", "place", "country", "where")):
            return place.group(1).strip(" ,")
        if quoted:
            return quoted.group(1)
        if place:
            return place.group(1).strip(" ,")
        return None
    return None


def _default_for(prop: Mapping[str, Any]) -> Any:
    kind = prop.get("type")
    return {
        "number": 0,
        "integer": 0,
        "boolean": True,
        "array": [],
        "object": {},
        "null": None,
    }.get(kind if isinstance(kind, str) else "string", "")


def _reply_from_tools(outputs: Sequence[tuple[str, str, str]], concise: bool) -> str:
    parts = [f"{name} returned {output.strip()}" for name, _args, output in outputs]
    if concise:
        return "; ".join(parts) + "."
    return "Here is what I found: " + "; ".join(parts) + "."


# -- text replies --------------------------------------------------------------------------

_CONCISE_RE = re.compile(r"\b(concise|brief|briefly|short|succinct|terse|one sentence)\b", re.I)
_LONG_RE = re.compile(r"\b(long|lengthy|detailed essay|in detail)\b", re.I)
_NAME_IS_RE = re.compile(r"\bmy name is\s+([A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)?)", re.I)
_ASK_NAME_RE = re.compile(r"\b(what(?:'s| is) my name|who am i|do you (?:know|remember) my name)")
_GREETING_RE = re.compile(r"^\s*(hi|hello|hey|good (?:morning|afternoon|evening))\b", re.I)
_ARITH_CHARS = re.compile(r"[\d\s.+\-*/x×÷^()%]+")

_WORDS = tuple(
    " ".join(
        (
            "agents threads runs messages stream tokens emulator azure foundry deterministic",
            "local service steps tools answer question context model careful simple clear",
            "detail summary result value reason step idea point thought story river mountain",
            "morning evening journey light quiet bright forest road window garden ocean friend",
        )
    ).split(" ")
)


def _wants_concise(instructions: str) -> bool:
    return bool(_CONCISE_RE.search(instructions))


def _text_reply(inp: ModelInput, prompt: str, concise: bool) -> str:
    lowered = prompt.lower()
    if _ASK_NAME_RE.search(lowered):
        name = None
        for role, text in inp.messages:
            if role == "user":
                for match in _NAME_IS_RE.finditer(text):
                    name = match.group(1)
        if name:
            return f"{name}." if concise else f"Your name is {name}."
        return "I don't know." if concise else "I don't know your name yet. What is it?"
    introduced = _NAME_IS_RE.search(prompt)
    if introduced:
        name = introduced.group(1)
        if concise:
            return f"Nice to meet you, {name}."
        return f"Nice to meet you, {name}! How can I help you today?"
    math = _arithmetic(prompt)
    if math is not None:
        expr, result = math
        if concise:
            return result
        if inp.agent_name and "math" in inp.agent_name.lower():
            return f"Let's work it out step by step: {expr} = {result}. The answer is {result}."
        return f"{expr} = {result}. The answer is {result}."
    if _LONG_RE.search(prompt):
        return _long_text(prompt, 450 if not concise else 420)
    if _GREETING_RE.search(prompt):
        return "Hello!" if concise else "Hello! How can I help you today?"
    topic = " ".join(prompt.split()[:8]).rstrip("?.!,;:") or "nothing"
    if concise:
        return f"Noted: {topic}."
    digest = hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest()
    extra = " ".join(_WORDS[b % len(_WORDS)] for b in digest[:6])
    return (
        f'You asked: "{topic}". This is a deterministic reply from the agentrun emulator. '
        f"Key words: {extra}."
    )


def _long_text(prompt: str, words: int) -> str:
    seed = hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest()
    out: list[str] = []
    i = 0
    while len(out) < words:
        block = hashlib.sha256(seed + i.to_bytes(4, "big")).digest()
        for b in block:
            out.append(_WORDS[b % len(_WORDS)])
        i += 1
    sentences = [" ".join(out[j : j + 12]).capitalize() + "." for j in range(0, words, 12)]
    return "Once upon a time, " + " ".join(sentences)


_WORD_OPS = (
    (re.compile(r"\bmultiplied by\b|\btimes\b", re.I), "*"),
    (re.compile(r"\bdivided by\b|\bover\b", re.I), "/"),
    (re.compile(r"\bplus\b|\badded to\b", re.I), "+"),
    (re.compile(r"\bminus\b", re.I), "-"),
    (re.compile(r"\bto the power of\b", re.I), "^"),
)


def _arithmetic(prompt: str) -> tuple[str, str] | None:
    """Find and evaluate an arithmetic expression in the prompt: (expression, result)."""
    text = prompt
    for pattern, op in _WORD_OPS:
        text = pattern.sub(op, text)
    best = None
    for match in _ARITH_CHARS.finditer(text):
        candidate = match.group(0).strip()
        is_expr = re.search(r"\d\s*[+\-*/x×÷^%]\s*[\d(]", candidate)
        if is_expr and (best is None or len(candidate) > len(best)):
            best = candidate
    if best is None:
        return None
    expr = best.strip(" .")
    try:
        value = _Parser(expr.replace("x", "*").replace("×", "*").replace("÷", "/")).parse()
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return expr, _format_number(value)


def _format_number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


class _Parser:
    """A tiny recursive-descent parser for + - * / % ^ and parentheses."""

    def __init__(self, text: str) -> None:
        self.tokens = re.findall(r"\d+(?:\.\d+)?|[-+*/%^()]", text)
        if "".join(self.tokens) != re.sub(r"\s+", "", text):
            raise ValueError("unexpected characters")
        self.pos = 0

    def parse(self) -> float:
        value = self._expr()
        if self.pos != len(self.tokens):
            raise ValueError("trailing tokens")
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> str:
        tok = self._peek()
        if tok is None:
            raise ValueError("unexpected end")
        self.pos += 1
        return tok

    def _expr(self) -> float:
        value = self._term()
        while self._peek() in ("+", "-"):
            op = self._take()
            rhs = self._term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def _term(self) -> float:
        value = self._power()
        while self._peek() in ("*", "/", "%"):
            op = self._take()
            rhs = self._power()
            if op == "*":
                value *= rhs
            elif op == "/":
                value /= rhs
            else:
                value %= rhs
        return value

    def _power(self) -> float:
        base = self._unary()
        if self._peek() == "^":
            self._take()
            exponent = self._power()
            if abs(exponent) > 64:
                raise ValueError("exponent too large")
            result: float = base**exponent
            return result
        return base

    def _unary(self) -> float:
        if self._peek() == "-":
            self._take()
            return -self._unary()
        if self._peek() == "+":
            self._take()
            return self._unary()
        tok = self._take()
        if tok == "(":
            value = self._expr()
            if self._take() != ")":
                raise ValueError("missing )")
            return value
        try:
            return float(tok)
        except ValueError:
            raise ValueError(f"unexpected {tok!r}") from None


def tool_arguments_for(schema: Any, prompt: str) -> dict[str, Any]:
    """Public for tests: the arguments the model builds for a tool's parameter schema."""
    return _arguments(schema, prompt)
