"""The graphs the service serves: every entry of langgraph.json's `graphs`, read as LangGraph's CLI reads them.

An entry is "./path/file.py:attr" (relative to langgraph.json's directory) or "package.module:attr", or an
object with that string as its `path` and an optional `description`. The attribute is a compiled graph (bound
to the service's checkpointer and store), a StateGraph (compiled with them), or a factory, sync or async, that
takes nothing or one `config` and returns either. A factory is called once, at start-up: langgraph-api calls it
for every run and every state read, which lets a graph change with each run's config; here one compiled graph
serves every run, so that building it (and any model client it opens) costs nothing per run.

The shipped entry (platform/entry.py, what `langgraph dev` runs) is built from create_app's graph_builder, so
that a test serving a graph of its own serves it under that entry; without a langgraph.json the service serves
that one graph under settings.assistant_id.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel
from langgraph.store.base import BaseStore

from ..errors import NotFound

Graph: TypeAlias = Pregel[Any, Any, Any, Any]
# The shipped entry, found by name: importing it would build the graph (and its model) a second time. By its
# file's last parts, not its whole path: the container image runs the installed package, not src/.
ENTRY_MODULE = f"{__package__}.entry"
ENTRY_PARTS = (*ENTRY_MODULE.split(".")[:-1], "entry.py")
# The name LangGraph gives a graph compiled without one; the reference then names it after its graph ID.
DEFAULT_NAME = "LangGraph"


class GraphConfigError(RuntimeError):
    """A langgraph.json entry the service cannot serve; the message names the entry and what to fix."""


@dataclass(frozen=True, slots=True)
class GraphSpec:
    graph_id: str
    source: str  # as langgraph.json writes it
    path: Path | None  # a file's, resolved against langgraph.json's directory
    module: str | None
    attr: str
    description: str | None

    @property
    def is_service_graph(self) -> bool:
        """The shipped entry: the service's own graph, from graph.py."""
        if self.path is not None:
            return self.path.parts[-len(ENTRY_PARTS) :] == ENTRY_PARTS and self.attr == "graph"
        return self.module == ENTRY_MODULE and self.attr == "graph"


def read_specs(config_path: Path) -> list[GraphSpec]:
    """langgraph.json's `graphs`, checked; [] without the file or the section (the service graph alone)."""
    if not config_path.is_file():
        return []
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise GraphConfigError(f"{config_path}: cannot read it as JSON: {exc}") from exc
    graphs = config.get("graphs") if isinstance(config, dict) else None
    if graphs is None:
        return []
    if not isinstance(graphs, dict):
        raise GraphConfigError(f'{config_path}: "graphs" must map graph IDs to "./file.py:attr" or "module:attr"')
    return [_spec(config_path, graph_id, value) for graph_id, value in graphs.items()]


def _spec(config_path: Path, graph_id: str, value: Any) -> GraphSpec:
    where = f'{config_path}: graph "{graph_id}"'
    description = None
    if isinstance(value, dict) and isinstance(value.get("path"), str):
        source, description = value["path"], value.get("description")
    elif isinstance(value, str):
        source = value
    else:
        raise GraphConfigError(f'{where}: expected "./file.py:attr", "module:attr" or {{"path": "...", ...}}')
    location, sep, attr = source.rpartition(":")
    if not sep or not location or not attr:
        raise GraphConfigError(f'{where}: "{source}" names no variable; write "./file.py:attr" or "module:attr"')
    # As the CLI tells them apart: a path has a slash, a module path has dots.
    if "/" in location:
        if not location.endswith(".py"):
            raise GraphConfigError(f'{where}: "{location}" is not a Python file; this service serves Python graphs')
        path = (config_path.parent / location).resolve()
        return GraphSpec(graph_id, source, path, None, attr, description)
    return GraphSpec(graph_id, source, None, location, attr, description)


def _import(spec: GraphSpec) -> Any:
    where = f'graph "{spec.graph_id}" ({spec.source})'
    try:
        if spec.module is not None:
            module = importlib.import_module(spec.module)
        else:
            assert spec.path is not None
            if not spec.path.is_file():
                raise GraphConfigError(f"{where}: no file {spec.path}")
            # A name of its own per file, as the reference gives it, so two files named graph.py do not collide.
            name = "__".join(("langgraph_graphs", *spec.path.with_suffix("").parts[1:]))
            name = "".join(c if c.isalnum() else "_" for c in name)
            module_spec = importlib.util.spec_from_file_location(name, spec.path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
    except GraphConfigError:
        raise
    except Exception as exc:
        raise GraphConfigError(f"{where}: importing it failed: {exc!r}; is the project installed?") from exc
    if not hasattr(module, spec.attr):
        exports = [k for k, v in vars(module).items() if isinstance(v, StateGraph | Pregel)]
        hint = f"; its graphs: {', '.join(exports)}" if exports else ""
        raise GraphConfigError(f"{where}: the module has no attribute '{spec.attr}'{hint}")
    return getattr(module, spec.attr)


async def _call_factory(spec: GraphSpec, factory: Callable[..., Any]) -> Any:
    where = f'graph "{spec.graph_id}" ({spec.source})'
    parameters = [p for p in inspect.signature(factory).parameters.values() if p.default is inspect.Parameter.empty]
    if len(parameters) > 1:
        raise GraphConfigError(f"{where}: a graph factory takes nothing or one `config`; it takes {len(parameters)}")
    config: RunnableConfig = {"configurable": {"graph_id": spec.graph_id}}
    try:
        built = factory(config) if parameters else factory()
        if inspect.isawaitable(built):
            built = await built
    except Exception as exc:
        raise GraphConfigError(f"{where}: the factory failed: {exc!r}") from exc
    return built


async def _compile(spec: GraphSpec, value: Any, checkpointer: BaseCheckpointSaver[str], store: BaseStore) -> Graph:
    # A class is no factory: a state schema named by mistake gets the error below, not a call.
    if callable(value) and not isinstance(value, type | StateGraph | Pregel):
        value = await _call_factory(spec, value)
    if isinstance(value, StateGraph):
        graph: Graph = value.compile(checkpointer=checkpointer, store=store)
    elif isinstance(value, Pregel):
        # The module's graph may have been compiled with a checkpointer of its own: this service's is durable.
        graph = value.copy(update={"checkpointer": checkpointer, "store": store})
    else:
        raise GraphConfigError(
            f'graph "{spec.graph_id}" ({spec.source}): expected a compiled graph, a StateGraph or a factory '
            f"returning one; found {f'the class {value.__name__}' if isinstance(value, type) else type(value).__name__}"
        )
    return graph.copy(update={"name": spec.graph_id}) if graph.name == DEFAULT_NAME else graph


@dataclass(frozen=True, slots=True)
class Graphs(Mapping[str, Graph]):
    """Graph ID → compiled graph, and the graph of threads no run has stamped (the service's own)."""

    graphs: dict[str, Graph]
    default_id: str
    descriptions: dict[str, str | None]

    def __getitem__(self, graph_id: str) -> Graph:
        return self.graphs[graph_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.graphs)

    def __len__(self) -> int:
        return len(self.graphs)

    @property
    def default(self) -> Graph:
        return self.graphs[self.default_id]

    def check(self, graph_id: str) -> None:
        if graph_id not in self.graphs:
            # langgraph-api's assert_graph_exists, word for word: clients match on it.
            raise NotFound(f"Graph '{graph_id}' not found. Expected one of: {sorted(self.graphs)}")

    def get_graph(self, graph_id: str) -> Graph:
        self.check(graph_id)
        return self.graphs[graph_id]

    def for_thread(self, metadata: Mapping[str, Any]) -> Graph:
        """The graph a thread's runs ran (stamped in its metadata), else the default one."""
        graph_id = metadata.get("graph_id")
        return self.graphs.get(graph_id, self.default) if isinstance(graph_id, str) else self.default


async def load_graphs(
    config_path: Path,
    default_id: str,
    service_graph: Callable[[], Graph],
    service_description: str | None,
    checkpointer: BaseCheckpointSaver[str],
    store: BaseStore,
) -> Graphs:
    """Every graph of `config_path` (the service graph alone without one), each bound to the checkpointer and
    store; `default_id` (settings.assistant_id) must be one of them. `service_graph` builds the shipped entry's."""
    specs = read_specs(config_path)
    if not specs:
        return Graphs({default_id: service_graph()}, default_id, {default_id: service_description})
    graphs: dict[str, Graph] = {}
    descriptions: dict[str, str | None] = {}
    for spec in specs:
        if spec.is_service_graph:
            graphs[spec.graph_id] = service_graph()
            descriptions[spec.graph_id] = spec.description or service_description
        else:
            graphs[spec.graph_id] = await _compile(spec, _import(spec), checkpointer, store)
            descriptions[spec.graph_id] = spec.description
    if default_id not in graphs:
        raise GraphConfigError(
            f"{config_path}: ASSISTANT_ID '{default_id}' is none of its graphs {sorted(graphs)}; set ASSISTANT_ID "
            "to the graph that threads without a run read"
        )
    return Graphs(graphs, default_id, descriptions)
