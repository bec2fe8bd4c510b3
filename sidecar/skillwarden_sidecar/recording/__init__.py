"""Session records as audit evidence: durable spool, Object Lock shipping, hash chain, signed
digests (see docs/records.md)."""

from skillwarden_sidecar.recording.config import RecorderConfig, RecorderConfigError, RecordingUnavailable
from skillwarden_sidecar.recording.recorder import Recorder

__all__ = ["Recorder", "RecorderConfig", "RecorderConfigError", "RecordingUnavailable"]
