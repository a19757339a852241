"""``chartkeeper hl7``: receive HL7 v2 feeds over MLLP into the record store."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated

import typer

from chartkeeper.ingest.mllp import DEFAULT_MAX_MESSAGE_BYTES, Exchange, serve
from chartkeeper.settings import Settings


class ListenError(Exception):
    """The listener could not bind its address (in use, not permitted, unknown host)."""


hl7_app = typer.Typer(help="Receive HL7 v2 messages (MLLP listener).", no_args_is_help=True,
                      add_completion=False)


def exchange_line(exchange: Exchange) -> str:
    """One progress line per message: identifiers and outcome only, never content (PHI)."""
    line = (f"{exchange.peer} {exchange.control_id or '-'} {exchange.message or '-'} "
            f"{exchange.ack_code} {exchange.status}")
    if exchange.detail:
        line += f" ({exchange.detail})"
    return line + f" {exchange.seconds * 1000:.0f}ms"


async def run_listener(host: str, port: int, settings: Settings,
                       max_message_bytes: int) -> None:
    """Listen until SIGINT or SIGTERM; then stop accepting and return. A message being
    stored when the signal comes finishes its transaction (the worker thread is waited for);
    its ACK may not be sent, and the sender's resend is then answered AA as a duplicate."""
    from chartkeeper.cli import open_store
    from chartkeeper.ingest.service import Hl7Ingestor, create_ingest_schema

    store = open_store(settings)
    create_ingest_schema(store.engine)
    ingestor = Hl7Ingestor(store, merge_mode=settings.mpi_merge_mode)
    try:
        server = await serve(host, port, ingestor.ingest, max_message_bytes=max_message_bytes,
                             on_exchange=lambda e: typer.echo(exchange_line(e), err=True))
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    bound = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in server.sockets)
    typer.echo(f"listening for MLLP on {bound}; storing into {settings.database_url}; "
               "Ctrl-C stops", err=True)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        server.close()
        await server.wait_closed()


@hl7_app.command()
def listen(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (2575 is HL7's registered port)",
                                      min=0, max=65535)] = 2575,
    max_message_bytes: Annotated[int, typer.Option(
        help="larger messages are answered AR and not stored", min=1)
    ] = DEFAULT_MAX_MESSAGE_BYTES,
) -> None:
    """Listen for HL7 v2 messages over MLLP, store them and answer each with an ACK.

    Prints one line per message to stderr: peer, control id, message type, ACK code and
    status (stored, duplicate, error, rejected)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    settings = Settings.from_env()
    try:
        asyncio.run(run_listener(host, port, settings, max_message_bytes))
    except ListenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo("stopped", err=True)
