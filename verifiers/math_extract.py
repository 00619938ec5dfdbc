"""The number an answer sentence states, and the result of a numeric equation (verifiers/math.py uses both).

Models answer "The answer is 2 x 4 = 8 bolts." where the gold is `8`. `stated_number` reads such a
statement the way a grader reads it: an optional label or lead-in ("Total cost =", "she earns"),
a chain of numeric sides joined by `=`, and a final side holding one number, with currency,
thousands separators, units and trailing words dropped. It is deliberately conservative: whatever
is not clearly one stated number (lists "1, 2, 3", compounds "5 hours and 30 minutes", ranges,
times "3:30", algebra "3x + y = 4", an unevaluated "16 - 3 - 4 eggs") gives None, and the answer
is then compared as written.

`constant_chain_result` is the LaTeX counterpart for equivalence: `2 \\times 4 = 8` or
`\\frac{1}{2} + \\frac{1}{2} = 1` is compared by its last side, never by its truth value (two
false equations both "evaluate" to False, and Booleans compare equal).
"""

from __future__ import annotations

import re

# A number as models write it: optional sign and currency, thousands groups, decimals, "a/b", percent.
_NUM = re.compile(
    r"(?P<sign>[-+]?)[ \t]*(?:[$€£¥][ \t]*)?(?P<sign2>[-+]?)"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)?(?P<frac>\.\d+)?"
    r"(?:/(?P<den>\d+)(?![\d.]))?"
)
_WORD = re.compile(r"[A-Za-z](?:[A-Za-z'’]|-(?=[A-Za-z]))*")
_EQ = re.compile(r"(?<![<>!:=])=(?!=)|\bequals\b|\bis equal to\b")
_OP_SYMBOL = re.compile(r"[-+*/^]")
_OP_WORDS = re.compile(r"[xX](?=\s*[-+]?[$€£¥]?\s*(?:[\d(]|\.\d))|(?:times|plus|minus|divided by|multiplied by)\b")
_OF = re.compile(r"of\b")
# Letters written right after a digit that are units, not variables ("5kg" but not "3x").
_GLUED_UNITS = {"kg", "km", "cm", "mm", "ml", "mph", "kph", "lb", "lbs", "oz", "ft", "hr", "hrs",
                "min", "mins", "sec", "secs", "st", "nd", "rd", "th"}
_PERCENT_WORDS = re.compile(r"(?:percent|per cent)\b", re.IGNORECASE)
# Words that end the units and start the rest of the sentence ("45 and the final step is ...").
_CLAUSE = re.compile(r"(?:and|or|but|because|since|which|so|that|as|to|if|when|where|while|then|though)\b",
                     re.IGNORECASE)
# A trail that starts with one of these and then a number is a list or compound, not commentary:
# "5 hours and 30 minutes", "2 or 3", "5 to 6", "5 and a half".
_JOINERS = re.compile(r"(?:and|or|to|plus|minus|through|&)\b", re.IGNORECASE)
_MORE_NUMBER = re.compile(r"\s*(?:(?:a|an|one)\s+)?(?:half|halves|quarters?|thirds?|[-+]?[$€£¥]?\s*\.?\d)",
                          re.IGNORECASE)
_UNICODE = str.maketrans({"−": "-", "×": "*", "·": "*", "⋅": "*", "÷": "/", "\u00a0": " ", "’": "'"})

# The LaTeX an answer in words may carry: converted, or else the answer is not plain text.
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|textit|mbox|mathrm)\s*\{([^{}]*)\}")
_LATEX_SIMPLE = [
    (re.compile(r",\\[!,;: ]\s*(?=\d)"), ","),  # "11,\! 111" is one number
    (re.compile(r"\{,\}"), ","),
    (re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\degree\b"), " "),
    (re.compile(r"\\times(?![a-zA-Z])|\\cdot(?![a-zA-Z])"), "*"),
    (re.compile(r"\\div(?![a-zA-Z])"), "/"),
    (re.compile(r"\\\$"), "$"),
    (re.compile(r"\\%"), "%"),
    (re.compile(r"\\[!,;: ]"), " "),
]


def _plain(text: str) -> str | None:
    """`text` with the little LaTeX a worded answer carries rewritten as text; None if other LaTeX remains."""
    text = _LATEX_TEXT.sub(lambda m: f" {m.group(1)} ", text)
    for pattern, repl in _LATEX_SIMPLE:
        text = pattern.sub(repl, text)
    if "\\" in text or "{" in text or "}" in text:
        return None
    return text.translate(_UNICODE).replace("**", "")


class _Scanner:
    """A cursor over a plain-text statement; each method consumes one piece or returns None."""

    def __init__(self, text: str) -> None:
        self.t = text
        self.i = 0
        self.number_end = 0

    def space(self) -> None:
        while self.i < len(self.t) and self.t[self.i] in " \t\n":
            self.i += 1

    def peek(self, pattern: re.Pattern) -> re.Match | None:
        self.space()
        return pattern.match(self.t, self.i)

    def take(self, pattern: re.Pattern) -> re.Match | None:
        m = self.peek(pattern)
        if m:
            self.i = m.end()
        return m

    def number(self) -> str | None:
        """One number (as a canonical string), with any % or glued unit after it."""
        self.space()
        m = _NUM.match(self.t, self.i)
        if not m or not (m.group("int") or m.group("frac")):
            return None
        if m.group("sign") and m.group("sign2"):
            return None
        end = m.end()
        if end < len(self.t) and self.t[end] == ".":  # "5." ends a sentence; "5.x" is not a number
            if end + 1 < len(self.t) and not self.t[end + 1].isspace():
                return None
        glued = _WORD.match(self.t, end)
        if glued and _OP_WORDS.match(self.t, end):  # "2x4": the x is a product
            glued = None
        if glued:  # "3x" is algebra; "5kg" and "5th" are a number with a unit
            if glued.group().lower() not in _GLUED_UNITS:
                return None
            end = glued.end()
        self.i = self.number_end = end
        sign = "-" if "-" in (m.group("sign") + m.group("sign2")) else ""
        value = sign + (m.group("int") or "").replace(",", "") + (m.group("frac") or "")
        if m.group("den"):
            value += "/" + m.group("den")
        self.space()
        if self.t.startswith("%", self.i):
            self.i += 1
            value += "%"
        elif self.t.startswith("°", self.i):
            self.i += 1
        elif pm := _PERCENT_WORDS.match(self.t, self.i):
            self.i = pm.end()
            value += "%"
        return value

    def op(self) -> bool:
        """A binary operator (symbol or word) between operands."""
        start = self.i
        percent_of = self.t[: self.i].rstrip().endswith("%") and self.take(_OF)  # "25% of 20"
        if percent_of or self.take(_OP_SYMBOL) or self.take(_OP_WORDS):
            if self.starts_operand():
                return True
        self.i = start
        return False

    def starts_operand(self) -> bool:
        self.space()
        save = self.i
        ok = self.t.startswith("(", self.i) or self.number() is not None
        self.i = save
        return ok

    def units(self) -> None:
        """Words after a number ("bolts of blue fiber", "dollars per day"), up to an operator or punctuation."""
        while True:
            save = self.i
            if self.peek(_EQ) or self.peek(_CLAUSE) or self.op():  # "equals", "and", "x 4": not a unit
                self.i = save
                return
            if self.take(_WORD):
                continue
            self.space()
            if self.t.startswith("/", self.i) and _WORD.match(self.t, self.i + 1):  # "$18/hour", "km/h"
                self.i += 1
                continue
            self.i = save
            return

    def operand(self) -> str | None:
        """A number with its units, or a parenthesised expression; "(...)" yields the marker "()"."""
        self.space()
        if self.t.startswith("(", self.i):
            self.i += 1
            if self.expression() is None:
                return None
            self.space()
            if not self.t.startswith(")", self.i):
                return None
            self.i += 1
            self.units()
            return "()"
        value = self.number()
        if value is None:
            return None
        if self.t.startswith("(", self.number_end):  # "2(3 + 4)": implicit product
            self.i = self.number_end
            inner = self.operand()
            return None if inner is None else "()"
        self.units()
        return value

    def expression(self) -> list[str] | None:
        """Operands of `a op b op c ...` (at least one)."""
        first = self.operand()
        if first is None:
            return None
        terms = [first]
        while True:
            save = self.i
            if not self.op():
                self.i = save
                return terms
            nxt = self.operand()
            if nxt is None:
                self.i = save
                return terms
            terms.append(nxt)


# A lead-in ending like this names a year, time or bound, not the answer: "after 2020", "more than 5".
_PLACE_OR_TIME = re.compile(r"\b(?:after|before|in|since|until|by|from|between|than|at|on|under|over)$", re.IGNORECASE)
_WHICH_IS = re.compile(r",?\s*(?:which|that) is\b")
_LABEL = re.compile(r"[A-Za-z][A-Za-z'’]*(?:[ \t]+[A-Za-z][A-Za-z'’]*)*")


def _label_ok(words: str, lead_in: bool) -> bool:
    """A label before "=" is words ("Total cost"); a variable ("N", "x") only in an answer sentence.

    In equivalence a variable is left to Math-Verify, which tells `x = 5` from `y = 5`.
    """
    if lead_in and re.fullmatch(r"[A-Za-z]", words):
        return True
    return len(re.sub(r"[^A-Za-z]", "", words)) >= 3 and any(w.islower() and len(w) > 1 for w in words.split())


def _trail_ok(s: _Scanner) -> bool:
    """What follows the stated number is commentary, not more of the answer."""
    s.space()
    rest = s.t[s.i :].strip().rstrip(".!?").strip()
    if not rest:
        return True
    if _CLAUSE.match(rest):  # the units ended at a clause word: "and 30 minutes" no, "because ..." yes
        body = rest
    elif rest[0] in ",;:([—":  # not "5-6" or "5–6" (ranges), "5 - x" (algebra), "5 x" ...
        body = rest[1:].lstrip()
        if rest[0] != "(" and re.match(r"[-+]?[$€£¥]?\s*\.?\d", body):  # "1, 2, 3", "3:30", "5; 6"
            return False
    else:
        return False
    joiner = _JOINERS.match(body)
    return not (joiner and _MORE_NUMBER.match(body, joiner.end()))  # ", and 3", "(or 4)", "and a half"


def stated_number(text: str, lead_in: bool = False) -> str | None:
    """The one number `text` states (see the module docstring), as a plain string, else None.

    `lead_in` allows words before the statement ("she makes $18 a day"); extraction from an
    answer sentence uses it, equivalence does not (a gold "June 20" is not the number 20).
    """
    plain = _plain(text.strip())
    if plain is None:
        return None
    s = _Scanner(plain.strip().rstrip("."))
    label = s.take(_LABEL)
    if label:
        if lead_in and len(label.group()) == 1 and s.take(_WHICH_IS):  # "N, which is 20 minutes"
            pass
        elif s.peek(_EQ):
            if not _label_ok(label.group(), lead_in):
                return None
            s.take(_EQ)
        elif not lead_in or _PLACE_OR_TIME.search(label.group()):
            return None
    sides = []
    while True:
        terms = s.expression()
        if terms is None:
            return None
        sides.append(terms)
        if not s.take(_EQ):
            break
    last = sides[-1]
    if len(last) != 1 or last[0] == "()":  # "16 - 3 - 4 eggs": an expression, not a stated number
        return None
    if not _trail_ok(s):
        return None
    return last[0]


# --------------------------------------------------------------------------- LaTeX equations

_EQ_SPLIT = re.compile(r"(?<![<>!:=\\])=(?!=)")
_NUMERIC_LATEX = re.compile(
    r"\\(?:text|textbf|mbox|mathrm)\s*\{[^{}]*\}"  # units
    r"|\\(?:[dt]?frac|sqrt|times|cdot|div|left|right|pi|circ|degree|[$%!,;: ])(?![a-zA-Z])"
)


def _is_constant(side: str) -> bool:
    """A side with digits and no variables (units in \\text{} and numeric commands allowed)."""
    stripped = _NUMERIC_LATEX.sub(" ", side)
    return bool(re.search(r"\d", stripped)) and not re.search(r"[A-Za-z\\]", stripped)


def constant_chain_result(text: str) -> str | None:
    """The last side of `a = b = c` when every side is a variable-free expression, else None."""
    if "=" not in text:
        return None
    sides = _EQ_SPLIT.split(text)
    if len(sides) < 2 or not all(_is_constant(side) for side in sides):
        return None
    return sides[-1].strip()
