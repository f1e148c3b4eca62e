#!/usr/bin/env python3
"""The crate's module graph: which top-level module of src/ uses which (`crate::x` paths,
grouped `use crate::{...}` included, test code included), printed as layers from the bottom up.
Exits 1, naming the modules, when the graph has a cycle, so CI keeps it a DAG.

Usage: tests/module-graph.py [SRC_DIR]    (default: src/ beside this script's parent)
"""
import os
import re
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")
ROOTS = {"lib.rs", "main.rs"}


def module_of(rel):
    """The top-level module a file belongs to: `syncer/mod.rs` and `syncer/chain.rs` -> syncer."""
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def strip_strings(text):
    # Char literals first: '"' would otherwise open a string (lifetimes like 'a never close).
    text = re.sub(r"'(?:\\.|[^'\\])'", "' '", text)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def group_heads(body):
    """First path segment of each item of a `{a::b, c, d::{e, f}}` group."""
    heads, depth, cur = [], 0, ""
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            heads.append(cur)
            cur = ""
        else:
            cur += ch
    heads.append(cur)
    out = []
    for h in heads:
        m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", h)
        if m:
            out.append(m.group(1))
    return out


def edges():
    found = {}
    modules = set()
    for dirpath, _, files in os.walk(SRC):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, SRC)
            if rel in ROOTS:
                continue
            mod = module_of(rel)
            modules.add(mod)
            with open(path, encoding="utf-8") as fh:
                text = strip_strings(strip_comments(fh.read()))
            uses = set()
            for m in re.finditer(r"crate::\{", text):
                depth, i = 1, m.end()
                while i < len(text) and depth:
                    depth += {"{": 1, "}": -1}.get(text[i], 0)
                    i += 1
                uses.update(group_heads(text[m.end() : i - 1]))
            uses.update(re.findall(r"crate::([a-z_][a-z0-9_]*)", text))
            for u in uses:
                if u != mod:
                    found.setdefault(mod, set()).add(u)
    return modules, found


def find_cycle(nodes, graph):
    state = {}
    stack = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if m not in nodes:
                continue
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(nodes):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


def layers(nodes, graph):
    level = {}

    def depth(n, seen=()):
        if n in level:
            return level[n]
        deps = [m for m in graph.get(n, ()) if m in nodes and m not in seen]
        level[n] = 1 + max((depth(m, seen + (n,)) for m in deps), default=-1)
        return level[n]

    for n in nodes:
        depth(n)
    out = {}
    for n, lv in level.items():
        out.setdefault(lv, []).append(n)
    return [sorted(out[k]) for k in sorted(out)]


def main():
    nodes, graph = edges()
    unknown = {u for deps in graph.values() for u in deps} - nodes
    if unknown:
        print("module-graph: references to unknown modules:", ", ".join(sorted(unknown)))
    cycle = find_cycle(nodes, graph)
    if cycle:
        print("module-graph: cycle: " + " -> ".join(cycle))
        for a, b in zip(cycle, cycle[1:]):
            print(f"  {a} uses {b}")
        return 1
    for i, layer in enumerate(layers(nodes, graph)):
        parts = []
        for n in layer:
            deps = sorted(m for m in graph.get(n, ()) if m in nodes)
            parts.append(f"{n} ({', '.join(deps)})" if deps else n)
        print(f"layer {i}: " + "; ".join(parts))
    print(f"module-graph: {len(nodes)} modules, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
