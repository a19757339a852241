"""MLLP transport for HL7 v2 feeds: block framing, an asyncio listener and the ACK it answers.

A sender opens a TCP connection and sends messages, each wrapped as ``0x0B message 0x1C 0x0D``
(HL7 MLLP release 2). The listener answers every message with one framed ACK, in order:
``AA`` when the handler stored the message (or had already stored it), ``AE`` with an ERR
segment when the handler raised :class:`HL7Error`, ``AR`` when anything else went wrong or the
message could not be read at all. Messages carry PHI: nothing here logs their content, only
control ids, message types, sizes and exception types.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from chartkeeper.ingest.hl7v2 import HL7Error

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "END_BLOCK",
    "START_BLOCK",
    "Exchange",
    "Frame",
    "FrameDecoder",
    "Garbage",
    "MessageHeader",
    "Oversize",
    "build_ack",
    "decode_message",
    "frame",
    "read_header",
    "serve",
]

logger = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
READ_CHUNK_BYTES = 64 * 1024
# Enough of an oversize message to read its MSH and name it in the AR.
OVERSIZE_HEAD_BYTES = 4096
ACK_FALLBACK_VERSION = "2.5"
ACK_SENDING_APPLICATION = "CHARTKEEPER"

# HL7 table 0357 (message error condition codes), for ERR-3's text component.
ERROR_CONDITIONS = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "104": "Value too long",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}

# HL7 table 0211 (alternate character sets, MSH-18) to Python codecs. UTF-16 and UTF-32 are
# left out on purpose: their bytes collide with MLLP's block characters.
CHARSETS = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "latin-1",
    "ISO IR100": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "ISO IR192": "utf-8",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
    "ISO IR14": "shift_jis",
    "ISO IR87": "iso2022_jp",
}

_SEGMENT_BREAK = re.compile(r"\r\n|\r|\n")
_LOCATION = re.compile(r"([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?(?:-(\d+)(?:\.(\d+)(?:\.(\d+))?)?)?")


# --- framing ---------------------------------------------------------------------------------


def frame(message: str | bytes, encoding: str = "utf-8") -> bytes:
    """Wrap one message in MLLP start and end blocks."""
    payload = message.encode(encoding) if isinstance(message, str) else message
    return START_BLOCK + payload + END_BLOCK


@dataclass(frozen=True)
class Frame:
    """One complete message, without its block characters."""

    payload: bytes


@dataclass(frozen=True)
class Garbage:
    """Bytes outside any frame (or a frame cut off by a new start block), skipped."""

    size: int
    whitespace: bool


@dataclass(frozen=True)
class Oversize:
    """A frame longer than the limit: dropped up to its end block; ``head`` is its start."""

    size: int
    head: bytes


FrameEvent = Frame | Garbage | Oversize


class FrameDecoder:
    """Incremental MLLP decoder: feed it bytes as they arrive, get complete frames back.

    Frames may be split across reads and several may arrive in one read. Bytes before a start
    block are reported as :class:`Garbage`; a start block inside an unfinished frame means the
    sender gave up on that frame, so the partial frame is garbage too. A frame past
    ``max_message_bytes`` is not buffered: its bytes are dropped until its end block and it is
    reported once as :class:`Oversize`.
    """

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        if max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
        self.max_message_bytes = max_message_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self._oversize: int | None = None  # bytes dropped so far while skipping an oversize frame
        self._head = b""
        self._last_byte_was_end = False  # oversize skipping: a 0x1C ended the previous read

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame (lost if the connection closes now)."""
        if self._oversize is not None:
            return self._oversize
        return len(self._buffer) if self._in_frame else 0

    def feed(self, data: bytes) -> list[FrameEvent]:
        events: list[FrameEvent] = []
        view = memoryview(data)
        while view:
            if self._oversize is not None:
                view = self._skip_oversize(view, events)
            elif not self._in_frame:
                view = self._find_start(view, events)
            else:
                view = self._fill_frame(view, events)
        return events

    def _find_start(self, view: memoryview, events: list[FrameEvent]) -> memoryview:
        chunk = view.tobytes()
        start = chunk.find(START_BLOCK)
        skipped = chunk if start < 0 else chunk[:start]
        if skipped:
            events.append(Garbage(len(skipped), not skipped.strip()))
        if start < 0:
            return view[len(view):]
        self._in_frame = True
        self._buffer.clear()
        return view[start + 1:]

    def _fill_frame(self, view: memoryview, events: list[FrameEvent]) -> memoryview:
        # The end block may straddle two reads: look back one byte into what is buffered.
        scan_from = max(0, len(self._buffer) - 1)
        self._buffer += view
        end = self._buffer.find(END_BLOCK, scan_from)
        restart = self._buffer.find(START_BLOCK, scan_from)
        if restart >= 0 and (end < 0 or restart < end):
            # A new frame began before this one ended: drop the unfinished one.
            events.append(Garbage(restart + 1, False))
            rest = bytes(self._buffer[restart + 1:])
            self._buffer.clear()
            return memoryview(rest)
        if end < 0:
            if len(self._buffer) > self.max_message_bytes:
                self._start_skipping(events)
            return view[len(view):]
        payload = bytes(self._buffer[:end])
        rest = bytes(self._buffer[end + len(END_BLOCK):])
        self._buffer.clear()
        self._in_frame = False
        if len(payload) > self.max_message_bytes:
            events.append(Oversize(len(payload), payload[:OVERSIZE_HEAD_BYTES]))
        else:
            events.append(Frame(payload))
        return memoryview(rest)

    def _start_skipping(self, events: list[FrameEvent]) -> None:
        self._head = bytes(self._buffer[:OVERSIZE_HEAD_BYTES])
        # Keep the last byte: it may be the 0x1C of an end block split across reads.
        self._last_byte_was_end = self._buffer.endswith(END_BLOCK[:1])
        self._oversize = len(self._buffer)
        self._buffer.clear()
        self._in_frame = False

    def _skip_oversize(self, view: memoryview, events: list[FrameEvent]) -> memoryview:
        assert self._oversize is not None
        chunk = view.tobytes()
        if self._last_byte_was_end and chunk[:1] == END_BLOCK[1:]:
            tail, size = 1, self._oversize - 1
        else:
            found = chunk.find(END_BLOCK)
            restart = chunk.find(START_BLOCK)
            if restart >= 0 and (found < 0 or restart < found):
                # The sender gave up on the oversize frame and began another.
                events.append(Garbage(self._oversize + restart + 1, False))
                self._oversize = None
                self._head = b""
                self._last_byte_was_end = False
                self._in_frame = True
                self._buffer.clear()
                return view[restart + 1:]
            if found < 0:
                self._oversize += len(chunk)
                self._last_byte_was_end = chunk.endswith(END_BLOCK[:1])
                return view[len(view):]
            tail, size = found + len(END_BLOCK), self._oversize + found
        events.append(Oversize(size, self._head))
        self._oversize = None
        self._head = b""
        self._last_byte_was_end = False
        return view[tail:]


# --- reading the MSH -------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageHeader:
    """What the ACK needs from the incoming MSH; every field may be empty."""

    readable: bool = False
    field_separator: str = "|"
    encoding_characters: str = "^~\\&"
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    message_type: str = ""
    control_id: str = ""
    processing_id: str = ""
    version: str = ""
    charset: str = ""

    @property
    def component_separator(self) -> str:
        return self.encoding_characters[:1] or "^"

    @property
    def event(self) -> str:
        """MSH-9.2, the trigger event (``A01``)."""
        parts = self.message_type.split(self.component_separator)
        return parts[1] if len(parts) > 1 else ""

    @property
    def message_code(self) -> str:
        """``ADT^A01`` style label (first two components of MSH-9), safe to log."""
        return self.component_separator.join(
            self.message_type.split(self.component_separator)[:2])


def _first_segment(text: str) -> str:
    text = text.lstrip("\ufeff \t\r\n")
    return _SEGMENT_BREAK.split(text, maxsplit=1)[0]


def read_header(text: str) -> MessageHeader:
    """Read the MSH as far as it goes; ``readable`` is False when the first segment is not a
    usable MSH (no MSH first, or no delimiters), and then every other field is empty."""
    segment = _first_segment(text)
    if not segment.startswith("MSH") or len(segment) < 8 or segment[3].isalnum():
        return MessageHeader()
    separator = segment[3]
    fields = segment.split(separator)
    # fields[0] is "MSH", fields[1] is MSH-2: fields[n - 1] is MSH-n.

    def field(n: int) -> str:
        return fields[n - 1] if len(fields) >= n else ""

    encoding = field(2)
    if len(encoding) < 2 or separator in encoding:
        return MessageHeader()
    return MessageHeader(
        readable=True,
        field_separator=separator,
        encoding_characters=encoding,
        sending_application=field(3),
        sending_facility=field(4),
        receiving_application=field(5),
        receiving_facility=field(6),
        message_type=field(9),
        control_id=field(10),
        processing_id=field(11),
        version=field(12),
        charset=field(18).split(encoding[1:2] or "~")[0] if field(18) else "",
    )


def decode_message(payload: bytes) -> str:
    """Decode a frame as the charset its MSH-18 names, else UTF-8, else latin-1.

    MSH is ASCII, so it is read first as latin-1 (which cannot fail) to learn MSH-18."""
    declared = read_header(payload[:OVERSIZE_HEAD_BYTES].decode("latin-1")).charset
    attempts = [CHARSETS.get(declared.strip().upper(), "utf-8"), "utf-8"]
    for encoding in attempts:
        try:
            text = payload.decode(encoding)
        except UnicodeDecodeError:
            continue
        return text.removeprefix("\ufeff")
    return payload.decode("latin-1")


def encode_ack(ack: str, header: MessageHeader) -> bytes:
    """The ACK in the incoming message's charset, so echoed fields round-trip; UTF-8 when that
    charset cannot hold them (a message that declared ASCII but was not)."""
    try:
        return ack.encode(CHARSETS.get(header.charset.strip().upper(), "utf-8"))
    except UnicodeEncodeError:
        return ack.encode("utf-8")


# --- building the ACK ------------------------------------------------------------------------


def escape(text: str, header: MessageHeader) -> str:
    """HL7-escape ``text`` for use as one field value under the message's delimiters."""
    enc = header.encoding_characters
    component = enc[0:1] or "^"
    repetition = enc[1:2] or "~"
    escape_char = enc[2:3] or "\\"
    subcomponent = enc[3:4] or "&"
    replacements = {
        escape_char: f"{escape_char}E{escape_char}",
        header.field_separator: f"{escape_char}F{escape_char}",
        component: f"{escape_char}S{escape_char}",
        repetition: f"{escape_char}R{escape_char}",
        subcomponent: f"{escape_char}T{escape_char}",
    }
    flat = " ".join(_SEGMENT_BREAK.split(text))
    return "".join(replacements.get(char, char) for char in flat)


def error_location(field: str | None, component_separator: str = "^") -> str:
    """ERR-2 (ERL) from a location like ``PID-3``, ``PID-3.1`` or ``OBX[2]-5``:
    segment ^ sequence ^ field ^ repetition ^ component ^ sub-component."""
    if not field:
        return ""
    match = _LOCATION.fullmatch(field.strip())
    if match is None:
        return ""
    segment, sequence, position, component, subcomponent = match.groups()
    parts = [segment, sequence or "1"]
    if position:
        parts.append(position)
        if component:
            parts += ["1", component]
            if subcomponent:
                parts.append(subcomponent)
    return component_separator.join(parts)


def _version_before_2_5(header: MessageHeader) -> bool:
    numbers = re.findall(r"\d+", header.version.split(header.component_separator)[0])
    if not numbers:
        return False
    return tuple(int(n) for n in numbers[:2]) < (2, 5)


def _err_segment(error: HL7Error, header: MessageHeader) -> str:
    sep = header.field_separator
    comp = header.component_separator
    sub = header.encoding_characters[3:4] or "&"
    code = error.code
    condition = comp.join([code, escape(ERROR_CONDITIONS.get(code, ""), header), "HL70357"])
    location = error_location(error.field, comp)
    fields = ["ERR"] + [""] * 8
    if _version_before_2_5(header):
        # Before v2.5 ERR had one field, ERR-1 (ELD): segment^sequence^field^code (CE).
        eld_code = sub.join([code, ERROR_CONDITIONS.get(code, ""), "HL70357"])
        eld = location.split(comp)[:3] if location else ["", "", ""]
        fields[1] = comp.join([*eld, eld_code])
    fields[2] = location
    fields[3] = condition
    fields[4] = "E"
    fields[8] = escape(error.message, header)
    return sep.join(fields).rstrip(sep)


def new_control_id() -> str:
    """A fresh MSH-10 for an ACK: 20 characters, MSH-10's length before v2.7."""
    return uuid.uuid4().hex[:20]


def build_ack(message_text: str, code: str, error: HL7Error | None = None,
              text: str = "") -> str:
    """The HL7 v2 ACK to ``message_text`` with acknowledgment code ``code`` (AA, AE, AR).

    The ACK's MSH swaps the sending and receiving application and facility, carries
    ``ACK^<event>^ACK``, a new control id and the original MSH-11 and MSH-12; MSA-2 echoes the
    original MSH-10. ``error`` adds an ERR segment (v2.5: location, 0357 code, severity E, user
    message; plus ERR-1 for older versions). An unreadable MSH still gets an ACK, built from
    defaults. Segments end with carriage returns.
    """
    if code not in ("AA", "AE", "AR"):
        raise ValueError(f"acknowledgment code must be AA, AE or AR, got {code!r}")
    header = read_header(message_text)
    sep = header.field_separator
    comp = header.component_separator
    event = header.event
    message_type = comp.join(["ACK", event, "ACK"]) if event else "ACK"
    msh = [
        "MSH",
        header.encoding_characters,
        header.receiving_application or ACK_SENDING_APPLICATION,
        header.receiving_facility,
        header.sending_application,
        header.sending_facility,
        datetime.now().astimezone().strftime("%Y%m%d%H%M%S%z"),
        "",
        message_type,
        new_control_id(),
        header.processing_id or "P",
        header.version or ACK_FALLBACK_VERSION,
    ]
    if header.charset:
        msh += [""] * 5 + [header.charset]
    msa = ["MSA", code, header.control_id]
    if text:
        msa.append(escape(text, header))
    segments = [
        # MSH-1 is the separator itself: joining "MSH" and MSH-2 with it writes it once.
        sep.join(msh),
        sep.join(msa),
    ]
    if error is not None:
        segments.append(_err_segment(error, header))
    return "\r".join(segments) + "\r"


# --- the listener ----------------------------------------------------------------------------


class Accepted(Protocol):
    """What a handler returns for a message it accepted: ``status`` is ``stored`` or
    ``duplicate`` (chartkeeper.ingest.service.IngestResult fits)."""

    @property
    def status(self) -> str: ...


Handler = Callable[[str], Accepted]


@dataclass(frozen=True)
class Exchange:
    """One message and its answer, for progress lines and logs: no PHI, only identifiers."""

    peer: str
    control_id: str
    message: str  # MSH-9 as ``ADT^A01``
    ack_code: str  # AA, AE or AR
    status: str  # stored, duplicate, error, rejected
    detail: str  # for AE the 0357 code and location; for AR the reason
    seconds: float


ExchangeCallback = Callable[[Exchange], None]


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class _Listener:
    def __init__(self, handler: Handler, max_message_bytes: int,
                 on_exchange: ExchangeCallback | None) -> None:
        self.handler = handler
        self.max_message_bytes = max_message_bytes
        self.on_exchange = on_exchange

    async def connection(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        peer = _peer_name(writer)
        logger.info("MLLP connection from %s", peer)
        decoder = FrameDecoder(self.max_message_bytes)
        try:
            while data := await reader.read(READ_CHUNK_BYTES):
                for event in decoder.feed(data):
                    reply = await self.answer(event, peer)
                    if reply is not None:
                        writer.write(reply)
                        await writer.drain()
            if decoder.pending:
                logger.warning("MLLP %s closed the connection inside a message; "
                               "%d bytes discarded", peer, decoder.pending)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            logger.warning("MLLP connection from %s lost: %s", peer, type(exc).__name__)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            logger.info("MLLP connection from %s closed", peer)

    async def answer(self, event: FrameEvent, peer: str) -> bytes | None:
        if isinstance(event, Garbage):
            log = logger.debug if event.whitespace else logger.warning
            log("MLLP %s: skipped %d bytes outside a frame", peer, event.size)
            return None
        started = time.perf_counter()
        if isinstance(event, Oversize):
            text = decode_message(event.head)
            header = read_header(text)
            logger.warning("MLLP %s: message %s of %d bytes exceeds the %d byte limit",
                           peer, header.control_id, event.size, self.max_message_bytes)
            error = HL7Error(None, "207",
                             f"message of {event.size} bytes exceeds the limit of "
                             f"{self.max_message_bytes} bytes; not stored")
            ack = build_ack(text, "AR", error, "message too large")
            self.report(peer, header, "AR", "rejected", "oversize", started)
            return frame(encode_ack(ack, header))
        text = decode_message(event.payload)
        header = read_header(text)
        ack = await self.acknowledge(text, header, peer, started)
        return frame(encode_ack(ack, header))

    async def acknowledge(self, text: str, header: MessageHeader, peer: str,
                          started: float) -> str:
        if not header.readable:
            error = HL7Error("MSH", "100", "the message does not start with a readable MSH "
                                           "segment; not stored")
            self.report(peer, header, "AR", "rejected", "no MSH", started)
            return build_ack(text, "AR", error, "no readable MSH segment")
        try:
            accepted = await asyncio.to_thread(self.handler, text)
        except HL7Error as exc:
            detail = f"{exc.code} {exc.field or ''}".strip()
            self.report(peer, header, "AE", "error", detail, started)
            return build_ack(text, "AE", exc, "message not stored")
        except Exception as exc:
            # Any failure is answered AR, never dropped. Log the type only: an exception's
            # text can quote the message (PHI).
            reason = type(exc).__name__
            logger.error("MLLP %s: message %s (%s) not stored: %s", peer, header.control_id,
                         header.message_code, reason)
            self.report(peer, header, "AR", "rejected", reason, started)
            return build_ack(text, "AR", HL7Error(None, "207", "application internal error; "
                                                              "message not stored, resend later"),
                             "message not stored")
        self.report(peer, header, "AA", accepted.status, "", started)
        return build_ack(text, "AA")

    def report(self, peer: str, header: MessageHeader, ack_code: str, status: str,
               detail: str, started: float) -> None:
        exchange = Exchange(peer, header.control_id, header.message_code, ack_code, status,
                            detail, time.perf_counter() - started)
        logger.debug("MLLP %s: %s %s -> %s %s %s", peer, exchange.control_id, exchange.message,
                     ack_code, status, detail)
        if self.on_exchange is not None:
            self.on_exchange(exchange)


async def serve(host: str, port: int, handler: Handler, *,
                max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                on_exchange: ExchangeCallback | None = None) -> asyncio.Server:
    """Start an MLLP listener on ``host:port`` and return the listening server.

    Each decoded message goes to ``handler`` in a worker thread (it may block on the
    database); what it returns is answered AA, :class:`HL7Error` AE, any other exception AR.
    Messages on one connection are handled one at a time, so ACKs come back in order; use
    ``port=0`` for an ephemeral port (``server.sockets[0].getsockname()``)."""
    listener = _Listener(handler, max_message_bytes, on_exchange)
    return await asyncio.start_server(listener.connection, host, port,
                                      limit=READ_CHUNK_BYTES)
