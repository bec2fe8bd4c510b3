"""A recorder in its own process for the kill -9 test: prints `ACK <exchange>` after each request
part is durable (the moment the sidecar would forward it upstream) and runs until killed."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from skillwarden_sidecar.recording import Recorder, RecorderConfig
from skillwarden_sidecar.recording.samples import request_record, response_record


async def main(settings: dict[str, object]) -> None:
    settings["spool_dir"] = Path(str(settings["spool_dir"]))
    recorder = Recorder(RecorderConfig(**settings))  # type: ignore[arg-type]
    await recorder.start()
    print(f"STREAM {recorder.stream_id}", flush=True)
    number = 0
    while True:
        batch = []
        for _ in range(5):
            number += 1
            batch.append(f"crash-{number:05d}")

        async def one(exchange: str) -> None:
            await recorder.append("request", request_record(exchange))
            print(f"ACK {exchange}", flush=True)
            await asyncio.sleep(0.002)
            await recorder.append("response", response_record(exchange))

        await asyncio.gather(*(one(e) for e in batch))


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
