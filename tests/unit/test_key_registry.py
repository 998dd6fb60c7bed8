"""Every Redis key is built in ``core/keys.py``; nothing else spells one out.

A key written in two places drifts (a prefix forgotten, a segment renamed) and the fleet
then reads what nobody writes. So the project's modules are parsed and these count as
building a key outside :class:`core.keys.KeySpace`:

- an f-string, ``+`` concatenation, ``%``, ``str.format`` or ``str.join`` that uses an
  attribute named ``prefix`` or ``key_prefix`` (``keys.prefix``, ``config.redis.key_prefix``);
- a string literal that starts with a documented key family (``run:``, ``fleet:``,
  ``{rl:``, ...: the first segment of every key in the ``core/keys.py`` table);
- a ``+`` concatenation (or an f-string piece starting with ``:``) whose literal is a
  documented key segment, such as ``base + ":members"``: a key grown from a KeySpace one.

A second test checks the other half: every key KeySpace builds is in its table.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import core.keys
from core.keys import KeySpace

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "core",
    "agents",
    "llm",
    "exchanges",
    "ratelimit",
    "resilience",
    "monitoring",
    "tasks",
    "workers",
)
# sandbox/ is a fake exchange (HTTP, in-process state): it has no fleet Redis. bench/ and
# tests/ build keys of their own namespaces on purpose.
REGISTRY = "core/keys.py"

# being moved by the request-path rewrite
PENDING: frozenset[str] = frozenset()

PREFIX_NAMES = {"prefix", "key_prefix"}
# the families of the table, listed so that a family dropped from the table stays policed
FAMILIES = {
    "run:",
    "runs:",
    "fleet:",
    "alerts:",
    "schedule:",
    "orders:",
    "logs:",
    "coalesce:",
    "{cache}",
    "{rl:",
    "{cb:",
    "{order:",
    "{batch:",
}
_TABLE_KEY = re.compile(r"^\s+<p>(\S+)", re.MULTILINE)


def table_keys() -> list[str]:
    """Return the keys of the ``core/keys.py`` table, without their ``<p>``."""
    return _TABLE_KEY.findall(core.keys.__doc__ or "")


def families() -> set[str]:
    """Return every key family: the listed ones and the first segment of each table key."""
    found = set(FAMILIES)
    for key in table_keys():
        head = re.match(r"^(\{[^:}]+[:}]|[a-z_]+:)", key)
        if head:
            found.add(head.group(1))
    return found


def segments() -> set[str]:
    """Return the literal segments of the table's keys (``members``, ``lead``, ...)."""
    found: set[str] = set()
    for key in table_keys():
        for part in re.split(r"[:{}]", key):
            if part and "<" not in part:
                found.add(part)
    return found


def project_files() -> Iterator[Path]:
    """Yield the project's own modules: its packages and the top-level scripts."""
    yield from sorted(ROOT.glob("*.py"))
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def _uses_prefix(node: ast.AST) -> bool:
    # attributes only: a local ``prefix`` is as often a URL path (exchanges/limited.py)
    return any(isinstance(n, ast.Attribute) and n.attr in PREFIX_NAMES for n in ast.walk(node))


def _is_segment(text: str, known: set[str], *, colon: bool) -> bool:
    match = re.fullmatch(r"(:?)([A-Za-z_]+):?", text)
    return match is not None and match[2] in known and (bool(match[1]) or not colon)


def _bare_strings(tree: ast.AST) -> set[int]:
    """Return the ids of strings that are statements of their own: docstrings, not keys."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }


def _key_builders(node: ast.AST, fams: tuple[str, ...], known: set[str]) -> str | None:
    """Return why ``node`` builds a Redis key, or None."""
    if isinstance(node, ast.JoinedStr):
        if _uses_prefix(node):
            return "f-string with the key prefix"
        pieces = [v.value for v in node.values if isinstance(v, ast.Constant)]
        if any(_is_segment(str(p), known, colon=True) for p in pieces):
            return "f-string adding a key segment"
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        if _uses_prefix(node):
            return "concatenation with the key prefix"
        if isinstance(node.op, ast.Add) and any(
            _is_segment(s, known, colon=False)
            for side in (node.left, node.right)
            if isinstance(side, ast.Constant) and isinstance(side.value, str)
            for s in [side.value]
        ):
            return "concatenation adding a key segment"
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in {"format", "join"}
        and _uses_prefix(node)
    ):
        return f"str.{node.func.attr} with the key prefix"
    elif (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith(fams)
    ):
        return f"literal of a key family: {node.value!r}"
    return None


def offenders(path: Path, rel: str | None = None) -> list[str]:
    """Return ``file:line: why`` for every place in ``path`` that builds a Redis key."""
    rel = rel or path.relative_to(ROOT).as_posix()
    tree = ast.parse(path.read_text(), filename=rel)
    skip = _bare_strings(tree)
    fams, known = tuple(sorted(families())), segments()
    found: dict[int, str] = {}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        why = _key_builders(node, fams, known)
        if why is not None and isinstance(node, ast.expr):
            found.setdefault(node.lineno, why)  # an f-string's literal pieces: one report
    return [f"{rel}:{line}: {why}" for line, why in sorted(found.items())]


def test_only_core_keys_builds_redis_keys() -> None:
    """Fail with ``file:line`` of every key built outside ``core/keys.py``."""
    failing: list[str] = []
    pending: list[str] = []
    for path in project_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel == REGISTRY:
            continue
        (pending if rel in PENDING else failing).extend(offenders(path))
    if pending:
        print("pending (being moved by the request-path rewrite):", *pending, sep="\n  ")
    assert not failing, "Redis keys built outside core/keys.py (add a KeySpace method):\n" + (
        "\n".join(failing)
    )


def test_the_pending_list_names_only_files_that_still_build_keys() -> None:
    """Empty PENDING as the files move: an entry whose file is clean must go."""
    clean = sorted(rel for rel in PENDING if not offenders(ROOT / rel))
    assert not clean, f"remove from PENDING, they build no key any more: {clean}"


def test_the_policy_sees_a_key_built_by_hand(tmp_path: Path) -> None:
    """Each rule flags what it is meant to (so a clean run means something)."""
    sample = tmp_path / "sample.py"
    source = (
        "def f(keys, base, prefix, x):\n"
        '    a = f"{keys.prefix}fleet:stats:{x}"\n'
        "    b = keys.prefix + x\n"
        '    c = "alerts:state"\n'
        '    d = base + ":members"\n'
        '    e = f"{prefix}schedule:{x}"\n'
        '    g = "{}:{}".format(keys.prefix, x)\n'
        '    h = f"{base}:lock"\n'
        '    i = f"{x}:{x}" + "..." + f"{prefix}/{x}" + f"failed in {x}: {x}"\n'
        '    """run: not a key, a docstring"""\n'
        "    return a, b, c, d, e, g, h, i\n"
    )
    sample.write_text(source)
    lines = [int(o.split(":")[1]) for o in offenders(sample, "sample.py")]
    assert lines == [2, 3, 4, 5, 6, 7, 8]


def _placeholder(name: str) -> str:
    short = {
        "exchange": "x",
        "run_id": "r",
        "symbol": "s",
        "client_order_id": "c",
        "endpoint_class": "class",
    }
    return f"<{short.get(name, name)}>"


def test_every_keyspace_key_is_in_the_table() -> None:
    """Each KeySpace method's key (with the table's placeholders) is documented."""
    documented = table_keys()
    missing = []
    for name, method in inspect.getmembers(KeySpace, inspect.isfunction):
        if name.startswith("_"):
            continue
        params = list(inspect.signature(method).parameters.values())[1:]
        args = [_placeholder(p.name) for p in params if p.default is inspect.Parameter.empty]
        key = getattr(KeySpace(), name)(*args)
        if not any(entry.startswith(key) for entry in documented):
            missing.append(f"{name}: {key}")
    assert not missing, "KeySpace keys missing from the core/keys.py table:\n" + "\n".join(missing)
