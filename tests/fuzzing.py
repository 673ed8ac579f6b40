"""The machinery of tests/test_fuzz.py: the CLI run in-process with its output, exit and any
escaping exception captured, byte digests of folders, the verdict on an outcome, and seeded
mutators of JSON documents, binary files and PNG images.

Every mutation carries a class, which decides the outcomes the fuzz test accepts:
a one-line refusal (exit 2, ``e2t: error: ...``, nothing changed on disk) always passes; exit 0
passes for SAME and INERT mutations only when the numbers equal the unmutated input's, for ANY
mutations (a valid input that means something else, or one that cannot be told) always, and
for INVALID mutations never. A traceback, or any other exit, never passes."""
from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import resource
import struct
import traceback
import zlib
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass

SAME = "same"  # the meaning is kept: refuse, or give the unmutated input's numbers
INERT = "inert"  # only fields nothing computes with changed: the same as SAME
INVALID = "invalid"  # nothing can run it as written: refuse
ANY = "any"  # may be valid with another meaning: refuse or run, never a traceback
PIPE = "pipe"  # stdout is a pipe closed by its reader (``| head``): any exit, never a traceback

SAME_OPS = ("reorder", "numstr", "intfloat")  # JSON mutations that keep every value
JSON_OPS = ("delete", "retype", "bool", "special", "deep", "dup", "swap", "string", "unknown")
DEEP = 100_000  # nesting far past Python's recursion limit
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIALS = (math.nan, math.inf, -math.inf, -1, 10 ** 30, 1e308)


@dataclass
class Outcome:
    rc: int | None
    out: str
    err: str
    error: str | None  # an exception that escaped main: its type, message and the project's frame that raised


@contextmanager
def memory_cap(extra: int):
    """Cap the process's address space at its current size plus ``extra`` bytes, so that an
    input that makes the code allocate without bound ends in a MemoryError, not a dead machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    cap = vm + extra if hard == resource.RLIM_INFINITY else min(vm + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def run_cli(argv: list[str], cwd: str, stdout=None, memory: int = 3 << 30) -> Outcome:
    """``e2t.cli.main(argv)`` in ``cwd`` (where a relative output would land), with at most
    ``memory`` more bytes of address space; ``stdout``: a file to print to (else captured)."""
    from e2t.cli import main
    out, err = stdout or io.StringIO(), io.StringIO()
    rc = error = None
    old = os.getcwd()
    with memory_cap(memory):
        os.chdir(cwd)
        try:
            with redirect_stdout(out), redirect_stderr(err):
                rc = main(list(argv))
        except SystemExit as e:  # argparse's own errors
            rc = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        except Exception as e:  # what the user would see as a traceback
            frames = traceback.extract_tb(e.__traceback__)
            ours = [f for f in frames if f.filename.startswith(ROOT) and ".venv" not in f.filename] or frames
            error = (f"{traceback.format_exception_only(type(e), e)[-1].strip()[:300]} "
                     f"(at {os.path.relpath(ours[-1].filename, ROOT)}:{ours[-1].lineno} in {ours[-1].name})")
        finally:
            os.chdir(old)
    return Outcome(rc, out.getvalue() if stdout is None else "", err.getvalue(), error)


def closed_pipe():
    """A line-buffered text file on a pipe whose reader has gone: writing raises BrokenPipeError."""
    r, w = os.pipe()
    os.close(r)
    return os.fdopen(w, "w", buffering=1)


def digest(root: str) -> dict[str, str]:
    """Relative path -> SHA-256 of every file (and a mark for every folder and link) under root."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                found[rel] = "link:" + os.readlink(path)
            elif os.path.isdir(path):
                found[rel] = "dir"
            else:
                with open(path, "rb") as f:
                    found[rel] = hashlib.sha256(f.read()).hexdigest()
    return found


def changes(before: dict, after: dict) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def verdict(o: Outcome, cls: str, changed: list[str], same=None, lost=()) -> str | None:
    """None if the fuzz test accepts the outcome; else what is wrong with it. ``changed``: the
    paths the run changed on disk; ``lost``: those of them it was only to read; ``same(o)`` says
    how the numbers of an exit-0 run differ from the unmutated input's (None: they do not)."""
    if o.error:
        return f"traceback: {o.error}"
    if cls == PIPE:
        return None
    lines = o.err.strip().splitlines()
    if o.rc == 2:
        if len(lines) != 1 or not lines[0].startswith("e2t: error: "):
            return f"exit 2 with {len(lines)} stderr lines, not one 'e2t: error:' line: {lines[:3]}"
        return f"refused, but changed on disk: {changed[:5]}" if changed else None
    if o.rc != 0:
        return f"exit {o.rc}: {lines[-1:]}"
    if lost:
        return f"exit 0, but it changed what it was only to read: {lost[:5]}"
    if cls == INVALID:
        return "exit 0 on an input that cannot run as written (a refusal was due)"
    if cls in (SAME, INERT) and same is not None:
        diff = same(o)
        if diff:
            return f"exit 0, but the numbers differ from the unmutated input's: {diff}"
    return None


# -- JSON ------------------------------------------------------------------------------------------

def _walk(node, path=()):
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, path + (i,))


def _parent(doc, path):
    for p in path[:-1]:
        doc = doc[p]
    return doc


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _retyped(rng, v):
    if _number(v):
        return rng.choice([None, [v], {"value": v}, "x"])
    if isinstance(v, str):
        return rng.choice([None, 0, [v], {}])
    if isinstance(v, bool):
        return rng.choice([int(not v) + 7, "true", None])
    if isinstance(v, list):
        return rng.choice([{}, "x", None, 3])
    if isinstance(v, dict):
        return rng.choice([[], "x", None, 3])
    return rng.choice([0, "", [], {}])


def _reordered(node, rng):
    if isinstance(node, dict):
        keys = list(node)
        rng.shuffle(keys)
        return {k: _reordered(node[k], rng) for k in keys}
    if isinstance(node, list):
        return [_reordered(v, rng) for v in node]
    return node


def _eligible(op: str, path, value) -> bool:
    if not path:
        return op == "unknown" and isinstance(value, dict)
    return {"delete": isinstance(path[-1], str), "bool": _number(value), "special": _number(value),
            "numstr": _number(value), "intfloat": isinstance(value, int) and not isinstance(value, bool),
            "string": isinstance(value, str), "dup": isinstance(value, list) and bool(value),
            "swap": isinstance(value, list) and sum(isinstance(e, dict) and "name" in e for e in value) > 1,
            "unknown": isinstance(value, dict)}.get(op, True)


def mutate_json(rng, doc, op: str, classify, where=None) -> tuple[str, str, str]:
    """Apply JSON mutation ``op`` at a random eligible place of ``doc`` (a copy): returns the new
    text, a description and the mutation's class. ``classify(path, op, old, new, doc)`` gives the
    class of a value-changing mutation; ``where(path)`` limits the places."""
    d = copy.deepcopy(doc)
    places = [(p, v) for p, v in _walk(d) if _eligible(op, p, v) and (where is None or where(p))]
    if op == "reorder":
        text = json.dumps(_reordered(d, rng), indent=rng.choice([None, 0, 3, "\t"]),
                          separators=rng.choice([None, (",", ":"), (" ,", " : ")]))
        return "\n" + text + "\n\n", "every object's keys reordered, other whitespace", SAME
    if not places:
        raise ValueError(f"no place for JSON mutation {op}")
    path, old = rng.choice(places)
    name = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path) or "the document"
    if op == "swap":
        entries = [i for i, e in enumerate(old) if isinstance(e, dict) and "name" in e]
        i, j = rng.sample(entries, 2)
        a, b = old[i], old[j]
        a["name"], b["name"] = b["name"], a["name"]
        return json.dumps(d, indent=1), f"{name}: swapped the names of [{i}] and [{j}]", \
            classify(path + (i, "name"), op, (a, b), None, doc)
    if op == "dup":
        k = rng.randrange(len(old))
        old.insert(k + 1, copy.deepcopy(old[k]))
        return json.dumps(d, indent=1), f"{name}: entry [{k}] twice", classify(path + (k,), op, old[k], None, doc)
    if op == "unknown":
        new = rng.choice([1, "x", None, [1], {"a": 1}])
        old["zz_fuzz"] = new
        return json.dumps(d, indent=1), f"{name}: an unknown key zz_fuzz = {new!r}", \
            classify(path + ("zz_fuzz",), op, None, new, doc)
    parent = _parent(d, path)
    if op == "delete":
        del parent[path[-1]]
        return json.dumps(d, indent=1), f"{name} deleted", classify(path, op, old, None, doc)
    new = {"retype": lambda: _retyped(rng, old), "bool": lambda: rng.choice([True, False]),
           "special": lambda: rng.choice(SPECIALS), "deep": lambda: "__deep__",
           "numstr": lambda: repr(old), "intfloat": lambda: float(old),
           "string": lambda: rng.choice(["", old + "_x", " " + old])}[op]()
    parent[path[-1]] = new
    text = json.dumps(d, indent=1)
    if op == "deep":
        text = text.replace('"__deep__"', "[" * DEEP + "]" * DEEP)
    shown = f"[ x {DEEP} deep" if op == "deep" else repr(new)[:40]
    cls = SAME if op in SAME_OPS else classify(path, op, old, new, doc)
    return text, f"{name}: {old!r:.40} -> {shown}", cls


# -- bytes and images ------------------------------------------------------------------------------

def truncated(rng, data: bytes, lo: float = 0.0, hi: float = 0.99) -> tuple[bytes, str]:
    n = rng.randrange(int(len(data) * lo), max(int(len(data) * hi), 1))
    return data[:n], f"truncated to {n} of {len(data)} bytes"


def flipped(rng, data: bytes, start: int = 0, end: int | None = None) -> tuple[bytes, str]:
    i = rng.randrange(start, end if end is not None else len(data))
    bit = rng.randrange(8)
    out = bytearray(data)
    out[i] ^= 1 << bit
    return bytes(out), f"bit {bit} of byte {i} flipped"


def png_declaring(data: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR saying ``width`` x ``height`` (CRC made right again)."""
    ihdr = bytearray(data[12:29])  # type + 13 bytes of data
    ihdr[4:12] = struct.pack(">II", width, height)
    return data[:12] + bytes(ihdr) + struct.pack(">I", zlib.crc32(bytes(ihdr))) + data[33:]
