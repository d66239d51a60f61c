"""The layering holds: no module-level import cycles, inference never reaches into training.

import-linter enforces the layers and the forbidden imports in CI (``pyproject.toml``); this
checks what its contracts cannot express: that no two modules import each other, directly or
through others, counting imports inside functions too.
"""

from __future__ import annotations

import grimp


def _strongly_connected(graph: grimp.ImportGraph, modules: set[str]) -> list[set[str]]:
    """Tarjan's strongly connected components of the module import graph (iterative)."""
    edges = {m: graph.find_modules_directly_imported_by(m) & modules for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    counter = 0
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return [c for c in components if len(c) > 1]


def _graph() -> tuple[grimp.ImportGraph, set[str]]:
    graph = grimp.build_graph("napari_histo", "src_models")
    return graph, set(graph.modules)


def test_no_import_cycles_between_modules():
    graph, modules = _graph()
    assert _strongly_connected(graph, modules) == []


def test_cycle_detector_finds_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(name)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.x")
    graph.add_import(importer="a.y", imported="a.z")
    assert _strongly_connected(graph, {"a.x", "a.y", "a.z"}) == [{"a.x", "a.y"}]


def test_plugin_never_imports_training_code():
    graph, modules = _graph()
    importers = {
        m for m in modules if m.startswith("napari_histo")
        and any(d.startswith("src_models") for d in graph.find_modules_directly_imported_by(m))
    }
    assert importers == set()


def test_training_command_is_contributed_through_an_entry_point():
    from napari_histo.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert "train" in commands
