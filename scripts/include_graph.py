#!/usr/bin/python3
"""Fails on a cycle in the include graph of the C sources.

Usage: include_graph.py [--top DIR] [SUBDIR ...]   (default: gateway marketo soap config)

Two graphs over the .c and .h files under the SUBDIRs of DIR (the project's
top, which is also where `#include "dir/file.h"` is looked up):

  files    a file -> each file it #includes ("..." only: project files).
  sources  a .c -> another .c whose function it calls through a header it
           includes (directly or through other headers): a header stands
           for the sources that define what it declares, so redis.c calling
           gw_cache_redis_new (declared in redis.h, defined in
           redis_cache.c) while redis_cache.c calls gw_redis_script
           (redis.h, redis.c) is a cycle although no two files include
           each other. A call is a name followed by "(" in a function body,
           in a macro body, or in an inline function of an included header.
           Taking a function's address (a route table of handlers) is not a
           call: the router and its handlers may name each other.

Prints each cycle (the files, and for sources the calls that make each
edge), then one summary line. Exit status: 1 if there is a cycle, else 0.
Text-based (comments and literals removed, braces counted): no compiler or
build needed; code between #if and #endif counts whatever the condition.
"""
import argparse
import os
import re
import sys

DEFAULT_DIRS = ("gateway", "marketo", "soap", "config")

INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"', re.M)
CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
# Comments, string and character literals, in one pass so that each hides
# the others' delimiters.
LEXEMES = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
DIRECTIVE = re.compile(r"^[ \t]*#(?:[^\n]*\\\n)*[^\n]*", re.M)


def blank(m):
    """Keeps a removed lexeme's newlines (so line structure survives)."""
    text = m.group(0)
    if text.startswith("//") or text.startswith("/*"):
        return " " + "\n" * text.count("\n")
    return '""' if text.startswith('"') else "' '"


class CFile:
    """What one file says: includes, definitions, declarations, calls."""

    def __init__(self, path, text):
        self.path = path
        no_comments = LEXEMES.sub(lambda m: blank(m) if not m.group(0).startswith(('"', "'"))
                                  else m.group(0), text)
        self.includes = INCLUDE.findall(no_comments)
        code = LEXEMES.sub(blank, text)
        self.calls = set()        # names called in bodies and macros
        self.defines = set()      # functions with a body here, static or not
        self.exported = set()     # ... of which not static
        self.declares = set()     # names of file-scope prototypes
        for d in DIRECTIVE.findall(code):
            if re.match(r"\s*#\s*define\b", d):
                self.calls.update(CALL.findall(d))
        self._scan(DIRECTIVE.sub(lambda m: "\n" * m.group(0).count("\n"), code))

    def _scan(self, code):
        depth = 0
        start = 0      # where the current file-scope declaration began
        body = 0       # where the current file-scope body began
        for m in re.finditer(r"[{};]", code):
            c = m.group(0)
            if c == "{":
                if depth == 0:
                    name, static = function_head(code[start:m.start()])
                    if name:
                        self.defines.add(name)
                        if not static:
                            self.exported.add(name)
                    body = m.end()
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    self.calls.update(CALL.findall(code[body:m.start()]))
                    start = m.end()
            elif depth == 0:
                name, _ = function_head(code[start:m.start()])
                if name:
                    self.declares.add(name)
                start = m.end()


def function_head(head):
    """(name, is_static) when head (text before "{" or ";" at file scope) is
    a function's declarator, else (None, False)."""
    head = " ".join(head.split())
    head = re.sub(r"__attribute__\s*\(\(.*?\)\)", "", head)
    paren = head.find("(")
    if paren < 0 or "=" in head[:paren] or re.match(r"\s*(typedef|struct|union|enum)\b", head):
        return None, False
    m = re.search(r"([A-Za-z_]\w*)\s*$", head[:paren])
    if m is None:
        return None, False
    return m.group(1), re.search(r"\bstatic\b", head[:paren]) is not None


def load(top, dirs):
    """{relative path: CFile} of every .c and .h under the dirs."""
    files = {}
    for d in dirs:
        for root, _, names in os.walk(os.path.join(top, d)):
            for n in sorted(names):
                if n.endswith((".c", ".h")):
                    path = os.path.join(root, n)
                    rel = os.path.relpath(path, top)
                    with open(path, encoding="utf-8", errors="replace") as fh:
                        files[rel] = CFile(rel, fh.read())
    return files


def resolve(files, includer, name):
    """The project file an #include "name" in includer means, or None."""
    for cand in (os.path.normpath(os.path.join(os.path.dirname(includer), name)), name):
        if cand in files:
            return cand
    return None


def file_graph(files):
    return {p: sorted({r for r in (resolve(files, p, i) for i in f.includes) if r})
            for p, f in files.items()}


def closure(graph, start):
    seen, todo = set(), [start]
    while todo:
        for n in graph[todo.pop()]:
            if n not in seen:
                seen.add(n)
                todo.append(n)
    seen.discard(start)
    return seen


def source_graph(files, fgraph):
    """({source: [sources]}, {(a, b): [(function, header)]})."""
    definer = {}
    for p, f in files.items():
        if p.endswith(".c"):
            for name in f.exported:
                definer.setdefault(name, []).append(p)
    graph, why = {}, {}
    for p, f in files.items():
        if not p.endswith(".c"):
            continue
        headers = sorted(closure(fgraph, p))
        calls = set(f.calls)
        for h in headers:
            calls |= files[h].calls
        edges = set()
        for name in sorted(calls - f.defines):
            decl = next((h for h in [p] + headers if name in files[h].declares), None)
            if decl is None:
                continue
            for q in definer.get(name, []):
                if q != p:
                    edges.add(q)
                    why.setdefault((p, q), []).append((name, decl))
        graph[p] = sorted(edges)
    return graph, why


def cycles(graph):
    """Strongly connected components with more than one node, or a node
    that reaches itself (Tarjan, iterative)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(graph.get(nxt, []))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    n = stack.pop()
                    on.discard(n)
                    comp.append(n)
                    if n == node:
                        break
                if len(comp) > 1 or node in graph.get(node, []):
                    out.append(sorted(comp))
    return out


def report(kind, graph, edge, out):
    """Prints each cycle of graph (edge(a, b): how a reaches b); returns how many."""
    comps = cycles(graph)
    for comp in comps:
        print(f"{kind} cycle: " + " <-> ".join(comp), file=out)
        for a in comp:
            for b in graph[a]:
                if b in comp:
                    print(f"  {edge(a, b)}", file=out)
    return len(comps)


def check(top, dirs, out=sys.stdout):
    """Prints the cycles and a summary; returns the number of cycles."""
    files = load(top, dirs)
    fgraph = file_graph(files)
    sgraph, why = source_graph(files, fgraph)
    found = report("include", fgraph, lambda a, b: f"{a} includes {b}", out)
    found += report("source", sgraph, lambda a, b: f"{a} -> {b}: calls " +
                    ", ".join(f"{n} ({h})" for n, h in why[(a, b)]), out)
    nsrc = sum(1 for p in files if p.endswith(".c"))
    nedges = sum(len(v) for v in sgraph.values())
    print(f"{'/, '.join(dirs)}/: {len(files)} files, {nsrc} sources, {nedges} source "
          f"dependencies, {found} cycle(s)", file=out)
    return found


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    ap.add_argument("dirs", nargs="*", default=list(DEFAULT_DIRS))
    a = ap.parse_args(argv)
    return 1 if check(os.path.abspath(a.top), a.dirs) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
