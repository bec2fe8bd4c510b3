"""The SkillPolicy OpenAPI schema, read from the CRD YAML (the one source), and a small validator
for the subset of OpenAPI v3 the CRD uses. `skillwarden policy compile` runs without an API
server, so it must reject (and default) exactly what the API server would.

Errors name the field the way the API server does: `spec.rules[1].action: Unsupported value ...`.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import re2
import yaml

CRD_FILE_NAME = "skillpolicy.yaml"


def crd_path() -> Path:
    configured = os.environ.get("SKILLWARDEN_CRD_DIR")
    candidates = [Path(configured)] if configured else []
    here = Path(__file__).resolve()
    candidates += [here.parents[2] / "crds"]
    for directory in candidates:
        if (directory / CRD_FILE_NAME).is_file():
            return directory / CRD_FILE_NAME
    # Installed from a wheel: the symlink to crds/skillpolicy.yaml is packaged as a file.
    packaged = Path(__file__).with_name("skillpolicy.crd.yaml")
    if packaged.is_file():
        return packaged
    raise FileNotFoundError(f"{CRD_FILE_NAME} not found in {[str(c) for c in candidates]}")


@functools.cache
def load_crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(crd_path().read_text())
    return loaded


def policy_schema() -> dict[str, Any]:
    schema: dict[str, Any] = load_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@functools.cache
def _pattern(expression: str) -> Any:
    return re2.compile(expression)


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "integer": (int,), "boolean": (bool,),
    "number": (int, float),
}


def _type_ok(value: Any, expected: str) -> bool:
    if expected in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES.get(expected, (object,)))


def validate(value: Any, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    """Append one error per violation, each prefixed with the field path."""
    expected = schema.get("type")
    if expected and not _type_ok(value, expected):
        errors.append(f"{path}: Invalid value: must be of type {expected}")
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(f'"{v}"' for v in schema["enum"])
        errors.append(f'{path}: Unsupported value: "{value}": supported values: {allowed}')
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: Invalid value: must be at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: Too long: may not be more than {schema['maxLength']} bytes")
        if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
            errors.append(f'{path}: Invalid value: "{value}": should match \'{schema["pattern"]}\'')
    if isinstance(value, int) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: Invalid value: {value}: should be greater than or equal to "
                          f"{schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: Invalid value: {value}: should be less than or equal to "
                          f"{schema['maximum']}")
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: Too many: {len(value)}: must have at most {schema['maxItems']} items")
        for index, item in enumerate(value):
            if "items" in schema:
                validate(item, schema["items"], f"{path}[{index}]", errors)
    if isinstance(value, dict):
        _validate_object(value, schema, path, errors)


def _validate_object(value: dict[str, Any], schema: dict[str, Any], path: str, errors: list[str]) -> None:
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errors.append(f"{path}: Invalid value: should have at least {schema['minProperties']} properties")
    for name in schema.get("required", []):
        if name not in value:
            errors.append(f"{_join(path, name)}: Required value")
    properties: dict[str, Any] = schema.get("properties", {})
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        if key in properties:
            validate(item, properties[key], _join(path, key), errors)
        elif isinstance(additional, dict):
            validate(item, additional, _join(path, key), errors)
        elif properties and path != "":
            # The API server prunes unknown fields silently; a policy author who misspells a
            # field would then get a weaker policy than intended, so we say so.
            errors.append(f'{_join(path, key)}: Unknown field "{key}"')


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Structural defaulting as the API server does it (defaults of present objects only)."""
    result = copy.deepcopy(value)
    _default(result, schema)
    return result


def _default(value: Any, schema: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                _default(value[key], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key in value:
                _default(value[key], additional)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _default(item, schema["items"])
