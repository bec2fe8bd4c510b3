"""The operator's own Kubernetes calls (kopf does the watching): list a namespace's policies,
read a namespace, patch a policy's status. Synchronous client, called from worker threads."""

from __future__ import annotations

from typing import Any

from kubernetes import client, config

from skillwarden_operator.policy_model import GROUP, PLURAL, VERSION


class Kube:
    def __init__(self, api_client: Any) -> None:
        self._objects = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster service account, else $KUBECONFIG / ~/.kube/config (as kubectl)."""
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            return cls(client.ApiClient())
        except config.ConfigException:
            return cls(config.new_client_from_config())  # type: ignore[no-untyped-call]

    def list_policies(self, namespace: str) -> list[dict[str, Any]]:
        listed: Any = self._objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        items: list[dict[str, Any]] = listed.get("items", [])
        return items

    def namespaces_with_policies(self) -> set[str]:
        listed: Any = self._objects.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        return {item["metadata"]["namespace"] for item in listed.get("items", [])}

    def namespace_state(self, namespace: str) -> str:
        """"active", "terminating" or "gone"."""
        try:
            found = self._core.read_namespace(namespace)
        except client.ApiException as error:
            if error.status == 404:
                return "gone"
            raise
        metadata: Any = found.metadata
        return "terminating" if metadata.deletion_timestamp else "active"

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """False when the policy is gone (deleted while we compiled)."""
        try:
            self._objects.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name,
                                                               {"status": status})
        except client.ApiException as error:
            if error.status == 404:
                return False
            raise
        return True
