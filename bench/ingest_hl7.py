"""HL7 v2 over MLLP: messages per second from one pipelining client into a SQLite store.

A listener process (``chartkeeper.ingest.mllp.serve`` in front of ``Hl7Ingestor``, the same
pair ``chartkeeper hl7 listen`` runs) stores into a fresh SQLite file; this process is the
sender: one connection, every message written without waiting (the listener reads, stores and
answers them one at a time, in order), ACKs read as they come. Messages cycle through sample
ADT and ORU messages, each with a fresh MSH-10 so none is a duplicate. The rate is wall-clock
from the first byte sent to the last ACK read.

    .venv/bin/python bench/ingest_hl7.py --messages 2000
    .venv/bin/python bench/ingest_hl7.py --messages 20000 --database-url sqlite:///var/hl7.sqlite
    .venv/bin/python bench/ingest_hl7.py --messages 20000 --transport-only
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import shlex
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "data" / "hl7v2" / "ms_fhir_converter_samples"
DEFAULT_SAMPLES = ["ADT-A01-01", "ADT-A04-01", "ADT-A08-01", "ADT04-251", "ADT01-23",
                   "ORU-R01-01", "LAB-ORU-1"]
sys.path.insert(0, str(REPO / "src"))

from chartkeeper.ingest.mllp import Frame, FrameDecoder, frame, read_header  # noqa: E402


def wire_template(name: str) -> list[str]:
    """A sample as CR-separated segments, MSH split into fields (MSH-10 is index 9)."""
    text = (SAMPLES / f"{name}.hl7").read_text(encoding="utf-8-sig")
    return [line for line in text.splitlines() if line.strip()]


def message(template: list[str], control_id: str) -> bytes:
    msh = template[0].split("|")
    msh[9] = control_id
    return ("\r".join(["|".join(msh), *template[1:]]) + "\r").encode()


@dataclass(frozen=True)
class NotStored:
    status: str = "stored"


def discard(text: str) -> NotStored:
    """The ``--transport-only`` handler: reads MSH and stores nothing."""
    read_header(text)
    return NotStored()


def run_listener(database_url: str, transport_only: bool, ready: Queue[int],
                 stop: Event) -> None:
    """The listener process: store, ingestor, MLLP server on an ephemeral port."""
    from chartkeeper.ingest.mllp import Handler, serve
    from chartkeeper.ingest.service import Hl7Ingestor, create_ingest_schema
    from chartkeeper.store import Store

    handler: Handler = discard
    if not transport_only:
        store = Store(database_url)
        store.create_schema()
        create_ingest_schema(store.engine)
        handler = Hl7Ingestor(store).ingest

    async def main() -> None:
        server = await serve("127.0.0.1", 0, handler)
        ready.put(server.sockets[0].getsockname()[1])
        async with server:
            await asyncio.to_thread(stop.wait)

    asyncio.run(main())


async def send_all(port: int, messages: list[bytes]) -> tuple[float, Counter[str]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def write() -> None:
        for wire in messages:
            writer.write(frame(wire))
            await writer.drain()

    codes: Counter[str] = Counter()
    started = time.perf_counter()
    sender = asyncio.create_task(write())
    decoder = FrameDecoder()
    while sum(codes.values()) < len(messages):
        data = await reader.read(65536)
        if not data:
            raise SystemExit(f"listener closed the connection after {sum(codes.values())} ACKs")
        for event in decoder.feed(data):
            if isinstance(event, Frame):
                msa = next(s for s in event.payload.split(b"\r") if s.startswith(b"MSA"))
                codes[msa.split(b"|")[1].decode()] += 1
    elapsed = time.perf_counter() - started
    await sender
    writer.close()
    await writer.wait_closed()
    return elapsed, codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages to send")
    parser.add_argument("--database-url", default="",
                        help="store to fill (default: a new SQLite file in a temp dir)")
    parser.add_argument("--samples", default=",".join(DEFAULT_SAMPLES),
                        help="sample files (names without .hl7) to cycle through")
    parser.add_argument("--transport-only", action="store_true",
                        help="answer AA without parsing or storing: the MLLP overhead alone")
    args = parser.parse_args()
    names = [n for n in args.samples.split(",") if n]
    templates = [wire_template(n) for n in names]
    run_id = uuid.uuid4().hex[:8]
    messages = [message(templates[i % len(templates)], f"B{run_id}{i:09d}")
                for i in range(args.messages)]

    with tempfile.TemporaryDirectory(prefix="chartkeeper-hl7-bench-") as scratch:
        url = args.database_url or f"sqlite:///{scratch}/bench.sqlite"
        context = multiprocessing.get_context("spawn")
        ready: Queue[int] = context.Queue()
        stop = context.Event()
        listener = context.Process(target=run_listener,
                                   args=(url, args.transport_only, ready, stop))
        listener.start()
        try:
            port = ready.get(timeout=120)
            elapsed, codes = asyncio.run(send_all(port, messages))
        finally:
            stop.set()
            listener.join(timeout=60)
            if listener.is_alive():
                listener.terminate()

    total = sum(codes.values())
    print("command: .venv/bin/python bench/ingest_hl7.py "
          + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    if args.transport_only:
        print("store: none (--transport-only: answered AA unparsed, nothing stored)")
    else:
        print(f"store: {'SQLite (temp file)' if not args.database_url else url}")
    print(f"samples cycled: {', '.join(names)}")
    print(f"messages: {total}  AA={codes['AA']} AE={codes['AE']} AR={codes['AR']}")
    print(f"wall: {elapsed:.2f} s  rate: {total / elapsed:,.0f} messages/s "
          f"({elapsed / total * 1000:.2f} ms per message)")
    if codes["AA"] != total:
        raise SystemExit("not every message was accepted (AA): the rate is not comparable")


if __name__ == "__main__":
    main()
