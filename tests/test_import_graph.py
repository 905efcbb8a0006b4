"""No two of our modules import each other, directly or round a circle, measured on the import graph
that import-linter checks (grimp). Annotation-only imports (under `if TYPE_CHECKING:`) load nothing
and are left out. The layers between packages are import-linter's contracts (test_layering.py)."""

from __future__ import annotations

import grimp

PACKAGES = ("harness", "tasks", "models", "leaderboard", "finedefics_train")


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Each circle once, as the modules round it (first = last), found from the imports that close one."""
    cycles, seen = [], set()
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back and frozenset(back) not in seen:
                seen.add(frozenset(back))
                cycles.append([importer, *back])
    return cycles


def test_our_modules_import_in_one_direction():
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)
    cycles = import_cycles(graph)
    assert not cycles, "import cycles (move the shared piece down):\n" + "\n".join(
        " -> ".join(cycle) for cycle in cycles
    )


def test_a_cycle_is_found():
    graph = grimp.ImportGraph()
    for module in ("p", "p.a", "p.b", "p.c", "p.d"):
        graph.add_module(module)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.c")
    graph.add_import(importer="p.c", imported="p.a")
    graph.add_import(importer="p.d", imported="p.a")  # into the circle, not part of it
    assert import_cycles(graph) == [["p.a", "p.b", "p.c", "p.a"]]
