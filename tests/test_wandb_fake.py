"""The fake W&B API is W&B-shaped: proven against the `wandb` package itself.

- W&B's own query documents (shipped in the `wandb` package) run through the fake, and W&B's
  generated response types accept the answers.
- Every query the W&B source sends asks only for fields, with arguments of the types, that W&B's
  own documents use at the same place.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    parse,
    print_ast,
)

from prefect_ml_automations.sources import wandb as source

from .wandb_fake import MODELS, FakeRun, FakeWandb

pytest.importorskip("wandb", reason="the W&B SDK (a test-only dependency) proves the fake")

from wandb.apis._generated import LightweightRunFragment
from wandb.sdk.artifacts import _generated as artifacts
from wandb.sdk.artifacts._generated import operations


@pytest.fixture
def world() -> FakeWandb:
    fake = FakeWandb(page_size=50)
    fake.runs["acme/vision"] = [
        FakeRun(
            "r1",
            "sweep-1",
            "alice",
            "2026-01-01T10:00:00",
            history=[{"_step": 0, "_timestamp": 1767261600, "_runtime": 1, "acc": 0.5}],
            events=[{"_wandb": True, "_timestamp": 1767261600.5, "system.cpu": 12.0}],
        )
    ]
    artifact = fake.log_artifact("acme/vision", "churn", aliases=["candidate"], tags=["eu"])
    fake.log_artifact("acme/vision", "churn", state="PENDING")
    fake.link(artifact, MODELS, "churn-classifier", aliases=["production"])
    return fake


def test_projects_artifact_collections_as_w_and_b_types_them(world: FakeWandb) -> None:
    answer = world.execute(
        operations.PROJECT_ARTIFACT_COLLECTIONS_GQL,
        {"entity": "acme", "project": "vision", "perPage": 10},
    )
    parsed = artifacts.ProjectArtifactCollections.model_validate(answer)
    assert parsed.project is not None
    assert parsed.project.artifact_collections is not None
    [edge] = parsed.project.artifact_collections.edges
    assert (edge.node.typename__, edge.node.name) == ("ArtifactSequence", "churn")


@pytest.mark.parametrize(
    ("project", "collection", "versions"),
    [
        pytest.param("acme/vision", "churn", ["v1", "v0"], id="sequence"),
        pytest.param(MODELS, "churn-classifier", ["v0"], id="registry portfolio"),
    ],
)
def test_project_artifacts_as_w_and_b_types_them(
    world: FakeWandb, project: str, collection: str, versions: list[str]
) -> None:
    entity, _, name = project.partition("/")
    answer = world.execute(
        operations.PROJECT_ARTIFACTS_GQL,
        {"entity": entity, "project": name, "type": "model", "collection": collection},
    )
    parsed = artifacts.ProjectArtifacts.model_validate(answer)
    assert parsed.project is not None
    assert parsed.project.artifact_type is not None
    found = parsed.project.artifact_type.artifact_collection
    assert found is not None
    assert found.artifacts is not None
    assert [e.version for e in found.artifacts.edges] == versions
    aliases = {
        (a.artifact_collection.name if a.artifact_collection else None, a.alias)
        for e in found.artifacts.edges
        for a in e.node.aliases or []
    }
    # An artifact's aliases span every collection it is in, `vN` and `latest` included.
    assert {("churn", "candidate"), ("churn", "v0"), ("churn-classifier", "production")} <= aliases


def test_the_organization_of_an_entity_as_w_and_b_types_it(world: FakeWandb) -> None:
    answer = world.execute(operations.FETCH_ORG_INFO_FROM_ENTITY_GQL, {"entity": "acme"})
    parsed = artifacts.FetchOrgInfoFromEntity.model_validate(answer)
    assert parsed.entity is not None
    assert parsed.entity.organization is not None
    assert parsed.entity.organization.org_entity is not None
    assert parsed.entity.organization.org_entity.name == "acme-org"


def test_a_missing_project_is_null_as_w_and_b_answers_it(world: FakeWandb) -> None:
    answer = world.execute(
        operations.PROJECT_ARTIFACT_COLLECTIONS_GQL, {"entity": "acme", "project": "nope"}
    )
    assert artifacts.ProjectArtifactCollections.model_validate(answer).project is None


def test_runs_as_w_and_b_sends_and_reads_them(world: FakeWandb) -> None:
    from wandb.apis.public.runs import _create_runs_query

    answer = world.execute(
        _create_runs_query(lazy=False), {"entity": "acme", "project": "vision", "perPage": 50}
    )
    [edge] = answer["project"]["runs"]["edges"]
    run = LightweightRunFragment.model_validate(edge["node"])
    assert (run.name, run.display_name, run.state) == ("r1", "sweep-1", "running")
    # `wandb/apis/public/runs.py` reads `historyKeys` as an object and the metrics as JSON text.
    assert edge["node"]["historyKeys"]["lastStep"] == 0
    assert isinstance(edge["node"]["summaryMetrics"], str)


def test_a_field_w_and_b_does_not_have_is_a_graphql_error(world: FakeWandb) -> None:
    import httpx

    request = httpx.Request(
        "POST",
        "https://api.wandb.ai/graphql",
        json={"query": 'query X { project(name: "vision", entityName: "acme") { nope } }'},
    )
    body = world.handle(request).json()
    assert body["errors"][0]["message"] == 'Cannot query field "nope" on type "Project".'


# -- our documents against W&B's -----------------------------------------------------------------


@cache
def wandb_documents() -> dict[str, str]:
    """W&B's own query documents, from the installed `wandb` package."""
    import wandb
    from wandb.apis._generated import operations as api_operations
    from wandb.apis.public import runs
    from wandb.sdk.artifacts._generated import operations as artifact_operations

    found = {
        name: text
        for module in (artifact_operations, api_operations)
        for name, text in vars(module).items()
        if name.endswith("_GQL")
    }
    found["Runs"] = runs._create_runs_query(lazy=False)
    # `Run._full_history`: the query is built from a template with the stream's field.
    template = re.search(r'query = """(.*?)"""', inspect.getsource(runs.Run._full_history), re.S)
    assert template is not None
    for stream in ("history", "events"):
        found[f"RunFullHistory/{stream}"] = template[1].format(stream)
    # W&B's history scan lives in wandb-core (Go); its GraphQL document ships inside the binary.
    core = Path(wandb.__file__).parent / "bin" / "wandb-core"
    binary = core.read_bytes()
    start = binary.index(b"query HistoryPage")
    depth, end = 0, binary.index(b"{", start)
    while True:
        depth += {ord("{"): 1, ord("}"): -1}.get(binary[end], 0)
        if depth == 0:
            break
        end += 1
    found["HistoryPage"] = binary[start : end + 1].decode()
    return found


Uses = dict[tuple[str, ...], dict[str, str]]


def uses(document: DocumentNode) -> Uses:
    """Each field path an operation selects, with its arguments' types (a variable's declared
    type, or `literal`)."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    out: Uses = {}
    for operation in document.definitions:
        if not isinstance(operation, OperationDefinitionNode):
            continue
        types = {v.variable.name.value: print_ast(v.type) for v in operation.variable_definitions}

        def walk(
            selections: SelectionSetNode, path: tuple[str, ...], types: dict[str, str] = types
        ) -> Iterator[None]:
            for node in selections.selections:
                if isinstance(node, FieldNode):
                    here = (*path, node.name.value)
                    arguments = out.setdefault(here, {})
                    for argument in node.arguments:
                        value = argument.value
                        arguments[argument.name.value] = (
                            types[value.name.value]
                            if isinstance(value, VariableNode)
                            else "literal"
                        )
                    if node.selection_set is not None:
                        yield from walk(node.selection_set, here)
                elif isinstance(node, FragmentSpreadNode):
                    yield from walk(fragments[node.name.value].selection_set, path)
                elif isinstance(node, InlineFragmentNode):
                    yield from walk(node.selection_set, path)
            yield None

        list(walk(operation.selection_set, ()))
    return out


def _bare(kind: str) -> str:
    return kind.rstrip("!")


@pytest.mark.parametrize(
    "ours",
    [
        source.RUNS,
        source.HISTORY,
        source.SYSTEM,
        source.COLLECTIONS,
        source.VERSIONS,
        source.ORGANIZATION,
    ],
    ids=["Runs", "HistoryPage", "RunFullHistory", "Collections", "Versions", "Organization"],
)
def test_each_query_uses_fields_and_argument_types_w_and_b_uses(ours: str) -> None:
    assert problems(ours) == []


@cache
def w_and_b_uses() -> Uses:
    """What W&B's documents, together, select at each field path, with each argument's type."""
    theirs: Uses = {}
    for text in wandb_documents().values():
        for path, arguments in uses(parse(text)).items():
            theirs.setdefault(path, {}).update(arguments)
    return theirs


def problems(ours: str) -> list[str]:
    """Where a document asks W&B for a field, or passes an argument, W&B's own never do."""
    theirs = w_and_b_uses()
    found = []
    for path, arguments in uses(parse(ours)).items():
        if path not in theirs:
            found.append(f"{'.'.join(path)}: no W&B document selects it")
            continue
        for name, kind in arguments.items():
            their_kind = theirs[path].get(name)
            if their_kind is None:
                found.append(f"{'.'.join(path)}({name}): W&B never passes it")
            elif "literal" not in (kind, their_kind) and _bare(kind) != _bare(their_kind):
                found.append(f"{'.'.join(path)}({name}): {kind} where W&B sends {their_kind}")
    return found


def test_the_check_above_can_fail() -> None:
    """A field W&B never selects, and an argument of another type, are caught."""
    wrong = 'query X($s: String) { project(name: "p", entityName: "e") { run(name: $s) { nope } } }'
    theirs = w_and_b_uses()
    mine = uses(parse(wrong))
    assert ("project", "run", "nope") in mine
    assert ("project", "run", "nope") not in theirs
    assert mine[("project", "run")]["name"] == "String"
    assert _bare(theirs[("project", "run")]["name"]) == "String"  # the same: not caught
    assert mine[("project",)]["name"] == "literal"
    worse = (
        'query X($s: String, $m: Int) { project(name: "p", entityName: "e") '
        "{ run(name: $s) { nope history(minStep: $m, when: 3) } } }"
    )
    assert problems(worse) == [
        "project.run.nope: no W&B document selects it",
        "project.run.history(minStep): Int where W&B sends Int64!",
        "project.run.history(when): W&B never passes it",
    ]


def test_our_answers_parse_where_our_source_reads_them(world: FakeWandb) -> None:
    """The source's own documents, answered by the fake, read back without a surprise."""
    from datetime import UTC, datetime

    from prefect_ml_automations.config import WandbSourceSettings

    settings = WandbSourceSettings(name="w", type="wandb", entity="acme", api_key="k")
    poller = source.WandbSource(settings, projects={"acme/vision"}, registries={"models"})
    answers: dict[str, Any] = {}

    def query(document: str, **variables: Any) -> dict[str, Any]:
        answers[parse(document).definitions[0].name.value] = answer = world.execute(  # type: ignore[attr-defined]
            document, variables
        )
        return answer

    poller.query = query  # type: ignore[method-assign]
    poll = poller.poll(None, datetime.now(UTC))
    assert set(answers) == {
        "Runs",
        "HistoryPage",
        "RunFullHistory",
        "ProjectArtifactCollections",
        "ProjectArtifacts",
        "FetchOrgInfoFromEntity",
    }
    assert poll.cursor["collections"]["wandb-registry-models/churn-classifier"] == {
        "0": {"aliases": ["production"], "tags": ["eu"]}
    }
    assert poll.cursor["collections"]["acme/vision/churn"] == {
        "0": {"aliases": ["candidate"], "tags": ["eu"]}  # v1 is still uploading
    }
