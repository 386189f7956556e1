"""Second validation pass: the step graph (missing targets, reachability, loops that never wait).

Problems come back without line numbers; the loader places them through their `path`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import networkx as nx
from marshmallow import fields

from engine.spec import model
from engine.spec.nodes import NODE_TYPES
from engine.spec.problems import Problem, did_you_mean

Path = tuple[str | int, ...]
# Problem.extra marker: place the problem on the key, not the value
KEY: dict[str, object] = {"at": "key"}


def exit_path(step: model.Step, exit_name: str) -> Path:
    """Document path of one exit: ``next`` → (next,), ``cases.0`` → (cases, 0, next)."""
    if "." not in exit_name:
        return (exit_name,)
    collection, key = exit_name.split(".", 1)
    if key.isdigit():
        return (collection, int(key), "next")
    # exits keyed by a name (split branches) are written as a list in the document
    items = getattr(step, collection, ())
    index = next((i for i, item in enumerate(items) if getattr(item, "name", None) == key), 0)
    return (collection, index, "next")


def _missing(step_id: str, path: Path, target: str, known: list[str]) -> Problem:
    return Problem(
        "graph.missing_step",
        f"'{target}' is not a step of this scenario.",
        path=("steps", step_id, *path),
        step=step_id,
        hint=did_you_mean(target, known) or f"steps are: {', '.join(known)}",
    )


def _missing_start(start: str, known: list[str]) -> Problem:
    hint = did_you_mean(start, known) or f"steps are: {', '.join(known)}"
    message = f"Start step '{start}' is not a step of this scenario."
    return Problem("graph.missing_step", message, path=("start",), hint=hint)


def build_graph(scenario: model.Scenario) -> nx.DiGraph:
    """Directed graph of step ids; an edge per exit that names an existing step."""
    graph = nx.DiGraph()
    graph.add_nodes_from(scenario.steps)
    for step in scenario.steps.values():
        for target in step.targets():
            if target in scenario.steps:
                graph.add_edge(step.id, target)
    return graph


def check_graph(scenario: model.Scenario) -> list[Problem]:
    """Every graph problem of a scenario that passed the schema."""
    steps = scenario.steps
    known = list(steps)
    problems: list[Problem] = []
    for step in steps.values():
        for exit_name, target in step.exits().items():
            if target and target not in steps:
                problems.append(_missing(step.id, exit_path(step, exit_name), target, known))
    if scenario.start not in steps:
        return [*problems, _missing_start(scenario.start, known)]
    graph = build_graph(scenario)
    problems.extend(_unreachable(graph, scenario.start))
    problems.extend(_loops_without_wait(graph, steps))
    problems.extend(_dead_ends(steps, scenario.id))
    return problems


def check_partial_graph(data: Any, steps: Mapping[str, model.Step]) -> list[Problem]:
    """`check_graph` for a document that failed the schema, from the steps that loaded.

    A step that did not load keeps its raw exits (or, when even its type is unknown, every step
    id its mapping mentions), so the steps it leads to are not reported unreachable; its own
    pausing is unknown, so loops are looked for among loaded steps only. Missing targets are
    `check_raw_edges`'s job.
    """
    raw_steps = data.get("steps") if isinstance(data, Mapping) else None
    if not isinstance(raw_steps, Mapping) or not raw_steps:
        return []
    ids = [str(k) for k in raw_steps]
    start = data.get("start")
    start = ids[0] if start is None else start
    if not isinstance(start, str):
        return []  # the schema names the problem with `start`
    if start not in ids:
        return [_missing_start(start, ids)]
    graph = nx.DiGraph()
    graph.add_nodes_from(ids)
    for step_id, raw in raw_steps.items():
        step = steps.get(str(step_id))
        targets = step.targets() if step else _raw_targets(raw, set(ids))
        graph.add_edges_from((str(step_id), t) for t in targets if t in ids)
    loaded = {s: steps[s] for s in ids if s in steps}
    scenario_id = data.get("id")
    problems = list(_unreachable(graph, start))
    problems += _loops_without_wait(graph.subgraph(loaded), loaded)
    problems += _dead_ends(loaded, scenario_id if isinstance(scenario_id, str) else None)
    return problems


def _raw_targets(raw: Any, ids: set[str]) -> list[str]:
    kind = raw.get("type") if isinstance(raw, Mapping) else None
    if isinstance(kind, str) and kind in NODE_TYPES:
        found = _raw_edges(NODE_TYPES[kind].loader.fields, raw)
        return [t for _, t in found if isinstance(t, str)]
    return sorted(_mentioned(raw) & ids)


def _mentioned(raw: Any) -> set[str]:
    if isinstance(raw, str):
        return {raw}
    items = raw.values() if isinstance(raw, Mapping) else raw if isinstance(raw, list) else ()
    return set().union(*(_mentioned(item) for item in items))


def _unreachable(graph: nx.DiGraph, start: str) -> Iterator[Problem]:
    reached = nx.descendants(graph, start) | {start}
    for step_id in graph.nodes:
        if step_id not in reached:
            yield Problem(
                "graph.unreachable",
                f"No path from the start step '{start}' leads to this step.",
                path=("steps", step_id),
                step=step_id,
                hint="link it from another step's next, or delete it",
                extra=dict(KEY),
            )


def _loops_without_wait(graph: nx.DiGraph, steps: Mapping[str, model.Step]) -> Iterator[Problem]:
    # a cycle without a pausing step exists exactly when the graph of the steps that never
    # pause has one; looking at its strongly connected components avoids listing every cycle
    order = {step_id: i for i, step_id in enumerate(steps)}
    instant = graph.subgraph([s for s in steps if not type(steps[s]).pauses])
    components = [
        c
        for c in nx.strongly_connected_components(instant)
        if len(c) > 1 or instant.has_edge(next(iter(c)), next(iter(c)))
    ]
    for component in sorted(components, key=lambda c: min(order[s] for s in c)):
        first = min(component, key=order.__getitem__)
        cycle = [edge[0] for edge in nx.find_cycle(instant.subgraph(component), source=first)]
        shown = " → ".join([*cycle, cycle[0]])
        yield Problem(
            "graph.loop_without_wait",
            f"Steps {shown} form a loop with no wait: a contact would go round it forever.",
            path=("steps", first),
            step=first,
            hint="add a wait step inside the loop",
            extra={**KEY, "cycle": cycle},
        )


def _warning(step: model.Step, code: str, message: str, field: str | None, hint: str) -> Problem:
    # on the step's key when no field is to blame
    path = ("steps", step.id, field) if field else ("steps", step.id)
    extra = {} if field else dict(KEY)
    return Problem(code, message, path, step=step.id, hint=hint, severity="warning", extra=extra)


def _dead_ends(steps: Mapping[str, model.Step], scenario_id: str | None) -> Iterator[Problem]:
    for step in steps.values():
        if isinstance(step, model.ConditionStep) and step.then and step.then == step.else_:
            # the journey runs, but the test decides nothing: a placeholder left behind
            yield _warning(
                step,
                "graph.same_branches",
                f"Both branches of this condition go to '{step.then}': the test changes nothing.",
                "else",
                "point 'else' at another step, or replace the condition with its next step",
            )
        if isinstance(step, model.WaitEventStep) and not step.targets():
            yield _warning(
                step,
                "graph.wait_without_exit",
                "This wait_event has neither on_event nor on_timeout: the journey ends either way.",
                None,
                "set on_event and/or on_timeout",
            )
        if isinstance(step, model.SplitStep) and not step.targets():
            yield _warning(
                step,
                "graph.split_without_exit",
                "No branch of this split leads anywhere: every contact ends here.",
                "branches",
                "give the branches a next step",
            )
        if isinstance(step, model.StartScenarioStep) and step.scenario == scenario_id:
            yield Problem(
                "graph.self_start",
                f"This step starts its own scenario '{scenario_id}'.",
                path=("steps", step.id, "scenario"),
                step=step.id,
                hint="use a loop with a wait inside the scenario instead",
            )


def check_raw_edges(data: Any) -> list[Problem]:
    """Missing-step checks on a document that failed the schema (so there is no Scenario)."""
    # exits are the node-type schema fields marked ``edge``: a typo in a `next` is then reported
    # together with the structure problems instead of only after they are fixed
    raw_steps = data.get("steps") if isinstance(data, Mapping) else None
    if not isinstance(raw_steps, Mapping):
        return []
    known = [str(k) for k in raw_steps]
    problems = []
    for step_id, raw in raw_steps.items():
        kind = raw.get("type") if isinstance(raw, Mapping) else None
        if not isinstance(kind, str) or kind not in NODE_TYPES:
            continue
        schema = NODE_TYPES[kind].loader
        for path, target in _raw_edges(schema.fields, raw):
            if isinstance(target, str) and target and target not in known:
                problems.append(_missing(str(step_id), path, target, known))
    return problems


def _raw_edges(
    declared: Mapping[str, fields.Field[Any]], raw: Mapping[str, Any]
) -> Iterator[tuple[Path, Any]]:
    for name, fld in declared.items():
        key = fld.data_key or name
        if fld.metadata.get("edge"):
            yield (key,), raw.get(key)
        elif isinstance(fld, fields.List) and isinstance(fld.inner, fields.Nested):
            items = raw.get(key)
            nested = fld.inner.schema
            if isinstance(items, list):
                for i, item in enumerate(items):
                    if isinstance(item, Mapping):
                        for sub, target in _raw_edges(nested.fields, item):
                            yield (key, i, *sub), target
