"""atheris (libFuzzer) harness for one fuzz target: `python fuzz/harness.py TARGET [libFuzzer args]`.

Bytes from libFuzzer are turned into the target's inputs with `FuzzedDataProvider`; the target may
raise only its documented errors (fuzz_targets.*_ALLOWED), anything else is a crash that libFuzzer
saves under `-artifact_prefix`. Use `fuzz/run.py` to run every target for a time budget.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import atheris

with atheris.instrument_imports(include=["skillwarden_sidecar", "skillwarden_operator", "fuzz_targets"]):
    import fuzz_targets as ft


def _json(fdp: Any) -> Any:
    """Arbitrary text that is JSON about half the time (so parsers get past the first byte)."""
    text = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 4096))
    try:
        return json.loads(text)
    except ValueError:
        return text


def sse(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    cuts = [fdp.ConsumeIntInRange(0, 8192) for _ in range(fdp.ConsumeIntInRange(0, 8))]
    ft.run(ft.sse_relay, ft.SSE_ALLOWED, fdp.ConsumeBytes(fdp.remaining_bytes()), cuts)


def request(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    method = fdp.PickValueInList(["POST", "GET", "DELETE", "PUT"])
    path = (
        fdp.PickValueInList(["/v1/messages", "/v1/messages/count_tokens", "/v1/skills/x", "/v1/models"])
        if fdp.ConsumeBool()
        else fdp.ConsumeUnicodeNoSurrogates(96)
    )
    ft.run(ft.request_parse, ft.REQUEST_ALLOWED, method, path, fdp.ConsumeBytes(fdp.remaining_bytes()))


def mask(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    body = _json(fdp)
    if isinstance(body, dict):
        ft.run(ft.request_mask, ft.MASK_ALLOWED, body)


def jwt_token(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        claims, headers = _json(fdp), _json(fdp)
        token = ft.signed(
            claims if isinstance(claims, dict) else {"iss": ft.ISSUER, "x": claims},
            headers if isinstance(headers, dict) else {},
        )
    else:
        token = fdp.ConsumeUnicodeNoSurrogates(512)
    name = fdp.PickValueInList(["Authorization", "x-api-key"])
    value = ("Bearer " + token) if name == "Authorization" and fdp.ConsumeBool() else token
    try:
        headers = {name: value.encode("latin-1").decode("latin-1")}
    except UnicodeEncodeError:
        return  # not representable in an HTTP header
    ft.run(ft.jwt_path, ft.JWT_ALLOWED, headers)


def admission(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    namespace = fdp.PickValueInList(["finance", "kube-system", "", None])
    pod = _json(fdp)
    ft.run(ft.admission, ft.ADMISSION_ALLOWED, pod, namespace)


def policy(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    spec = _json(fdp)
    document = {
        "apiVersion": "skillwarden.io/v1alpha1",
        "kind": "SkillPolicy",
        "metadata": {"name": "fuzz", "namespace": "finance"},
        "spec": spec,
    }
    ft.run(ft.policy_compile, ft.POLICY_ALLOWED, document)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "sse": sse,
    "request": request,
    "mask": mask,
    "jwt": jwt_token,
    "admission": admission,
    "policy": policy,
}


def main() -> None:
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
