"""The single source of built-in entity names.

The operator's admission webhook validates `SkillPolicy.spec.masking` against `BUILTIN_ENTITIES`;
detectors, operators, the CLI and the metrics all use these names.
"""

from __future__ import annotations

EMAIL_ADDRESS = "EMAIL_ADDRESS"
PHONE_NUMBER = "PHONE_NUMBER"
CREDIT_CARD = "CREDIT_CARD"
IBAN_CODE = "IBAN_CODE"
US_SSN = "US_SSN"
IP_ADDRESS = "IP_ADDRESS"
AWS_ACCESS_KEY = "AWS_ACCESS_KEY"
PRIVATE_KEY = "PRIVATE_KEY"
JWT = "JWT"
API_KEY = "API_KEY"  # Anthropic, OpenAI, GitHub and Slack tokens

BUILTIN_ENTITIES: frozenset[str] = frozenset(
    {
        EMAIL_ADDRESS,
        PHONE_NUMBER,
        CREDIT_CARD,
        IBAN_CODE,
        US_SSN,
        IP_ADDRESS,
        AWS_ACCESS_KEY,
        PRIVATE_KEY,
        JWT,
        API_KEY,
    }
)

# Secrets outrank PII when two candidates start at the same place (a JWT can contain digit runs).
PRIORITY: tuple[str, ...] = (
    PRIVATE_KEY,
    JWT,
    API_KEY,
    AWS_ACCESS_KEY,
    EMAIL_ADDRESS,
    IBAN_CODE,
    CREDIT_CARD,
    US_SSN,
    PHONE_NUMBER,
    IP_ADDRESS,
)

OPERATORS: frozenset[str] = frozenset({"redact", "partial", "hmac"})

# Bumped whenever a detector changes what it finds; session records carry it.
DETECTOR_VERSION = "2026.11.1"
