"""The route table: what is forwarded, what is refused, and how the path is checked."""

from __future__ import annotations

import pytest

from skillwarden_sidecar.errors import Rejection
from skillwarden_sidecar.routes import resolve


@pytest.mark.parametrize(("method", "path", "operation", "params"), [
    ("POST", "/v1/messages", "messages.create", {}),
    ("POST", "/v1/messages?beta=true", "messages.create", {}),
    ("POST", "/v1/messages/count_tokens", "messages.count_tokens", {}),
    ("GET", "/v1/models", "models.list", {}),
    ("GET", "/v1/models/claude-sonnet-4-6", "models.get", {"model_id": "claude-sonnet-4-6"}),
    ("POST", "/v1/skills", "skills.create", {}),
    ("GET", "/v1/skills", "skills.list", {}),
    ("GET", "/v1/skills/skill_01AbC", "skills.get", {"skill_id": "skill_01AbC"}),
    ("DELETE", "/v1/skills/skill_01AbC", "skills.delete", {"skill_id": "skill_01AbC"}),
    ("POST", "/v1/skills/skill_01AbC/versions", "skills.versions.create", {"skill_id": "skill_01AbC"}),
    ("DELETE", "/v1/skills/s1/versions/1759178010641129", "skills.versions.delete",
     {"skill_id": "s1", "version": "1759178010641129"}),
])
def test_allowed_routes(method: str, path: str, operation: str, params: dict[str, str]) -> None:
    route = resolve(method, path)
    assert route.operation == operation
    assert dict(route.params) == params


@pytest.mark.parametrize(("method", "path", "status"), [
    ("POST", "/v1/messages/batches", 404),
    ("GET", "/v1/files", 404),
    ("POST", "/v1/complete", 404),
    ("GET", "/", 404),
    ("GET", "/v1/skills/..%2Fadmin", 400),
    ("GET", "/v1/skills/%2e%2e", 400),
    ("GET", "/v1/skills/../models", 400),
    ("GET", "/v1/skills/./x", 400),
    ("GET", "/v1//skills", 400),
    ("GET", "/v1/skills/a%00b", 400),
    ("GET", "/v1/skills/caf\u00e9", 400),
    ("GET", "v1/messages", 400),
    ("GET", "/v1/" + "a" * 600, 400),
    ("GET", "/v1/messages", 405),
    ("PATCH", "/v1/skills/s1", 405),
])
def test_refused_routes(method: str, path: str, status: int) -> None:
    with pytest.raises(Rejection) as refused:
        resolve(method, path)
    assert refused.value.status == status
    assert refused.value.error_type in {"not_found_error", "invalid_request_error"}
