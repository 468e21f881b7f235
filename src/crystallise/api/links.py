"""OpenAPI links between the API's operations, so a client (and schemathesis' stateful tests) can
follow what one answer names to the next request: the trace a POST recorded, the version a revert
made, the first row of a listing.

    add_links(schema) -> schema    every link whose two operations exist (others are skipped)

A link says which value of the first exchange fills which parameter of the second
(`$response.body#/id`, `$request.path.trace_id`: OpenAPI 3.1, "Link Object").
"""

from __future__ import annotations

from typing import Any

__all__ = ["LINKS", "add_links"]

# (source method, source path, status) -> [(link name, target method, target path, {param: expression})]
LINKS: dict[tuple[str, str, str], list[tuple[str, str, str, dict[str, str]]]] = {
    ("post", "/v1/traces", "201"): [
        ("GetRecordedTrace", "get", "/v1/traces/{trace_id}", {"trace_id": "$response.body#/id"}),
        ("GiveFeedback", "post", "/v1/traces/{trace_id}/feedback", {"trace_id": "$response.body#/id"}),
    ],
    ("post", "/v1/traces/{trace_id}/feedback", "201"): [
        ("GetTraceWithFeedback", "get", "/v1/traces/{trace_id}", {"trace_id": "$request.path.trace_id"}),
    ],
    ("get", "/v1/traces", "200"): [
        ("GetFirstTrace", "get", "/v1/traces/{trace_id}", {"trace_id": "$response.body#/traces/0/id"}),
        ("GiveFeedbackOnFirst", "post", "/v1/traces/{trace_id}/feedback",
         {"trace_id": "$response.body#/traces/0/id"}),
    ],
    ("get", "/v1/items", "200"): [
        ("GetFirstItem", "get", "/v1/items/{item_id}", {"item_id": "$response.body#/items/0/id"}),
    ],
    ("get", "/v1/versions", "200"): [
        ("GetFirstVersion", "get", "/v1/versions/{number}", {"number": "$response.body#/versions/0/number"}),
        ("RevertFirstVersion", "post", "/v1/versions/{number}/revert",
         {"number": "$response.body#/versions/0/number"}),
    ],
    ("post", "/v1/versions/{number}/revert", "201"): [
        ("GetRevertVersion", "get", "/v1/versions/{number}", {"number": "$response.body#/number"}),
        ("GetRevertedVersion", "get", "/v1/versions/{number}", {"number": "$request.path.number"}),
    ],
    ("get", "/v1/changesets", "200"): [
        ("GetFirstChangeSet", "get", "/v1/changesets/{changeset_id}",
         {"changeset_id": "$response.body#/changesets/0/id"}),
    ],
    ("get", "/v1/review", "200"): [
        ("ShowFirstProposal", "get", "/v1/review/{changeset_id}", {"changeset_id": "$response.body#/changesets/0/id"}),
        ("RejectFirstProposal", "post", "/v1/review/{changeset_id}/reject",
         {"changeset_id": "$response.body#/changesets/0/id"}),
    ],
    ("post", "/v1/review/{changeset_id}/approve", "201"): [
        ("GetApprovedVersion", "get", "/v1/versions/{number}", {"number": "$response.body#/number"}),
    ],
    ("get", "/v1/tasks", "200"): [
        ("GetFirstTask", "get", "/v1/tasks/{name}", {"name": "$response.body#/tasks/0/name"}),
    ],
}


def add_links(schema: dict[str, Any]) -> dict[str, Any]:
    paths = schema.get("paths", {})
    for (method, path, status), links in LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        for name, t_method, t_path, parameters in links:
            target = paths.get(t_path, {}).get(t_method)
            if target is None or "operationId" not in target:
                continue
            response.setdefault("links", {})[name] = {"operationId": target["operationId"], "parameters": parameters}
    return schema
