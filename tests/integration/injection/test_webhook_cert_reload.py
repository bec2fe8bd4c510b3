"""A rotated certificate reaches the serving socket: the guarded kopf server restarts on the new
files (kopf's file check) and presents the new certificate, and its client config carries the
new caBundle; reviews keep being answered across the switch."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import ssl
from pathlib import Path
from typing import Any

import kopf
from cryptography import x509

from skillwarden_devstack.processes import free_port
from skillwarden_operator import webhook_certs as wc

NOW = dt.datetime.now(dt.UTC)


def write(directory: Path, material: wc.ServingMaterial) -> None:
    (directory / "tls.crt").write_bytes(material.cert)
    (directory / "tls.key").write_bytes(material.key)
    (directory / "ca.crt").write_bytes(material.ca_bundle)


async def served_certificate(port: int, ca: bytes) -> x509.Certificate:
    context = ssl.create_default_context(cadata=ca.decode())
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return x509.load_der_x509_certificate(der)


async def test_rotated_files_are_served_without_a_restart(tmp_path: Path) -> None:
    # 30-day certificates rotated 30 days before expiry: due at once, and valid now (the served
    # certificate must verify against the clock of this machine).
    first, _ = wc.plan_material(None, ("127.0.0.1",), NOW, validity_days=30, rotate_before_days=30)
    write(tmp_path, first)
    port = free_port()
    inner = kopf.WebhookServer(addr="127.0.0.1", host="127.0.0.1", port=port,
                               certfile=str(tmp_path / "tls.crt"), pkeyfile=str(tmp_path / "tls.key"),
                               cafile=str(tmp_path / "ca.crt"), file_check_interval=0.2)
    seen: list[Any] = []

    async def fn(review: Any, **_: Any) -> dict[str, Any]:
        seen.append(review["request"]["uid"])
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": review["request"]["uid"], "allowed": True}}

    configs: asyncio.Queue[Any] = asyncio.Queue()

    async def serve() -> None:
        async with wc.GuardedServer(inner, deadline=2.0) as server:
            async for config in server(fn):
                await configs.put(config)

    task = asyncio.create_task(serve())
    try:
        config = await asyncio.wait_for(configs.get(), 10)
        assert base64.b64decode(config["caBundle"]) == first.ca_bundle
        assert (await served_certificate(port, first.ca_bundle)).serial_number == \
            x509.load_pem_x509_certificate(first.cert).serial_number

        rotated, reason = wc.plan_material(first, ("127.0.0.1",), dt.datetime.now(dt.UTC), validity_days=30,
                                           rotate_before_days=30)
        assert reason == "serving certificate expiring"
        write(tmp_path, rotated)
        config = await asyncio.wait_for(configs.get(), 10)  # kopf restarted on the new files
        assert base64.b64decode(config["caBundle"]) == rotated.ca_bundle
        assert (await served_certificate(port, rotated.ca_bundle)).serial_number == \
            x509.load_pem_x509_certificate(rotated.cert).serial_number

        # Still answering reviews through the guard.
        context = ssl.create_default_context(cadata=rotated.ca_bundle.decode())
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "after-rotation", "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE", "userInfo": {}, "object": {}}}).encode()
        head = (b"POST /skillwarden-inject HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n")
        writer.write(head + body)
        response = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert b" 200 " in response.split(b"\r\n", 1)[0]
        assert seen == ["after-rotation"]
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
