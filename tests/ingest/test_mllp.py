"""MLLP framing, ACKs and the listener over a real socket (with and without the store)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from chartkeeper.ingest.hl7v2 import HL7Error
from chartkeeper.ingest.mllp import (
    END_BLOCK,
    START_BLOCK,
    Exchange,
    Frame,
    FrameDecoder,
    Garbage,
    Handler,
    Oversize,
    build_ack,
    decode_message,
    error_location,
    frame,
    read_header,
    serve,
)
from chartkeeper.ingest.service import Hl7Ingestor, create_ingest_schema, hl7_message
from chartkeeper.store import Store, schema

T = TypeVar("T")

ADT_A01 = (
    "MSH|^~\\&|ADTApp|GHHSFacility^2.16.840.1.122848.1.30^ISO|EHRApp^1.Edu^ISO|"
    "GHHRFacility^2.16.840.1.1122848.1.32^ISO|198908181126+0215|SECURITY|ADT^A01^ADT_A01|"
    "MSG00001|P|2.8\r"
    "EVN|A01|20290801070624+0115\r"
    "PID|1||PATID1234^^^GHH^MR||EVERYMAN^ADAM^A||19880818|M\r"
)


def segments(ack: str) -> dict[str, list[str]]:
    """The ACK's segments by id, split into fields (index n is field n; MSH shifted by one)."""
    assert ack.endswith("\r")
    parsed: dict[str, list[str]] = {}
    for segment in ack.rstrip("\r").split("\r"):
        fields = segment.split("|")
        if fields[0] == "MSH":
            fields.insert(1, "|")
        parsed[fields[0]] = fields
    return parsed


def field(fields: list[str], n: int) -> str:
    return fields[n] if len(fields) > n else ""


# --- framing ---------------------------------------------------------------------------------


def test_frame_wraps_message_in_start_and_end_blocks() -> None:
    assert frame("MSH|x\r") == b"\x0bMSH|x\r\x1c\r"
    assert START_BLOCK == b"\x0b" and END_BLOCK == b"\x1c\r"


def test_decoder_joins_a_message_split_across_reads_even_inside_the_end_block() -> None:
    wire = frame(ADT_A01)
    decoder = FrameDecoder()
    events = []
    for i in range(len(wire)):  # one byte per read: the end block is split too
        events += decoder.feed(wire[i:i + 1])
    assert events == [Frame(ADT_A01.encode())]
    assert decoder.pending == 0


def test_decoder_returns_two_messages_that_arrive_in_one_read() -> None:
    second = ADT_A01.replace("MSG00001", "MSG00002")
    decoder = FrameDecoder()
    events = decoder.feed(frame(ADT_A01) + frame(second))
    assert events == [Frame(ADT_A01.encode()), Frame(second.encode())]


def test_decoder_skips_garbage_between_frames_and_reports_its_size() -> None:
    decoder = FrameDecoder()
    events = decoder.feed(b"hello" + frame("MSH|1\r") + b"\r\n" + frame("MSH|2\r") + b"xy")
    assert events == [Garbage(5, whitespace=False), Frame(b"MSH|1\r"),
                      Garbage(2, whitespace=True), Frame(b"MSH|2\r"), Garbage(2, False)]


def test_decoder_drops_an_unfinished_frame_when_a_new_start_block_arrives() -> None:
    decoder = FrameDecoder()
    events = decoder.feed(b"\x0bMSH|cut off" + frame("MSH|2\r"))
    assert events == [Garbage(len(b"\x0bMSH|cut off"), False), Frame(b"MSH|2\r")]


def test_decoder_reports_a_frame_over_the_limit_and_reads_the_next_one() -> None:
    big = "MSH|^~\\&|A|B|C|D|||ADT^A01|BIG1|P|2.5\r" + "NTE|" + "x" * 200 + "\r"
    decoder = FrameDecoder(max_message_bytes=100)
    events = decoder.feed(frame(big) + frame("MSH|ok\r"))
    assert events == [Oversize(len(big), big.encode()[:4096]), Frame(b"MSH|ok\r")]


@pytest.mark.parametrize("chunk", [1, 7, 64, 101])
def test_decoder_skips_an_oversize_frame_streamed_in_pieces(chunk: int) -> None:
    big = ("MSH|^~\\&|A|B|C|D|||ADT^A01|BIG1|P|2.5\r" + "NTE|" + "x" * 500 + "\r").encode()
    wire = frame(big) + frame("MSH|ok\r")
    decoder = FrameDecoder(max_message_bytes=100)
    events = []
    for i in range(0, len(wire), chunk):
        events += decoder.feed(wire[i:i + chunk])
    assert len(events) == 2
    oversize, following = events
    assert isinstance(oversize, Oversize) and oversize.size == len(big)
    assert oversize.head.startswith(b"MSH|^~\\&|A|B|C|D|||ADT^A01|BIG1")
    assert following == Frame(b"MSH|ok\r")


def test_decoder_keeps_a_frame_that_starts_inside_an_abandoned_oversize_frame() -> None:
    decoder = FrameDecoder(max_message_bytes=10)
    events = decoder.feed(b"\x0b" + b"x" * 50)
    events += decoder.feed(b"y" * 5 + frame("MSH|ok\r"))
    assert events == [Garbage(56, False), Frame(b"MSH|ok\r")]


def test_decoder_refuses_a_limit_below_one_byte() -> None:
    with pytest.raises(ValueError, match="max_message_bytes must be positive, got 0"):
        FrameDecoder(0)


message_bytes = st.binary(max_size=60).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b""))


@given(messages=st.lists(message_bytes, max_size=6), cuts=st.lists(st.integers(0, 400)))
def test_decoder_yields_the_same_frames_however_the_stream_is_cut(
        messages: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(frame(m) for m in messages)
    points = sorted({c for c in cuts if c < len(wire)} | {0, len(wire)})
    decoder = FrameDecoder()
    events = []
    for start, end in zip(points, points[1:], strict=False):
        events += decoder.feed(wire[start:end])
    assert events == [Frame(m) for m in messages]


# --- decoding and ACKs -----------------------------------------------------------------------


def test_decode_message_uses_the_charset_named_in_msh_18() -> None:
    text = "MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.5|||||USA|8859/1\rPID|1||1||Müller\r"
    assert decode_message(text.encode("latin-1")) == text


def test_decode_message_reads_utf8_and_strips_a_byte_order_mark() -> None:
    text = "MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.5\rPID|1||1||Łukasz\r"
    assert decode_message(b"\xef\xbb\xbf" + text.encode()) == text


def test_decode_message_falls_back_to_latin1_for_bytes_that_are_not_utf8() -> None:
    raw = "MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.5\rPID|1||1||Müller\r".encode("latin-1")
    assert "Müller" in decode_message(raw)


def test_ack_swaps_sender_and_receiver_and_echoes_the_control_id() -> None:
    ack = segments(build_ack(ADT_A01, "AA"))
    msh, msa = ack["MSH"], ack["MSA"]
    assert set(ack) == {"MSH", "MSA"}
    assert msh[2] == "^~\\&"
    assert (msh[3], msh[4]) == ("EHRApp^1.Edu^ISO", "GHHRFacility^2.16.840.1.1122848.1.32^ISO")
    assert (msh[5], msh[6]) == ("ADTApp", "GHHSFacility^2.16.840.1.122848.1.30^ISO")
    assert msh[9] == "ACK^A01^ACK"
    assert msh[10] and msh[10] != "MSG00001" and len(msh[10]) <= 20
    assert (msh[11], msh[12]) == ("P", "2.8")
    assert msa[1:3] == ["AA", "MSG00001"]


def test_each_ack_gets_a_new_control_id() -> None:
    first = segments(build_ack(ADT_A01, "AA"))["MSH"][10]
    second = segments(build_ack(ADT_A01, "AA"))["MSH"][10]
    assert first != second


def test_ae_ack_has_an_err_segment_naming_the_field_the_code_and_the_reason() -> None:
    error = HL7Error("PID-3", "101", "PID-3 (patient identifier list) is required")
    ack = segments(build_ack(ADT_A01, "AE", error, "message not stored"))
    assert ack["MSA"][1:3] == ["AE", "MSG00001"]
    err = ack["ERR"]
    assert field(err, 1) == ""  # ERR-1 is for versions before 2.5
    assert field(err, 2) == "PID^1^3"
    assert field(err, 3) == "101^Required field missing^HL70357"
    assert field(err, 4) == "E"
    assert field(err, 8) == "PID-3 (patient identifier list) is required"


def test_err_text_is_escaped_so_it_cannot_break_the_ack() -> None:
    error = HL7Error("OBX-5", "102", "value a|b^c~d&e\\f\rg is not a number")
    ack = build_ack(ADT_A01, "AE", error, "x|y")
    parsed = segments(ack)
    assert field(parsed["ERR"], 8) == "value a\\F\\b\\S\\c\\R\\d\\T\\e\\E\\f g is not a number"
    assert field(parsed["MSA"], 3) == "x\\F\\y"
    assert ack.count("\r") == 3


def test_ack_to_a_v23_message_also_fills_err_1() -> None:
    old = ADT_A01.replace("|P|2.8\r", "|P|2.3\r")
    err = segments(build_ack(old, "AE", HL7Error("PID-3", "101", "missing")))["ERR"]
    assert err[1] == "PID^1^3^101&Required field missing&HL70357"
    assert segments(build_ack(old, "AA"))["MSH"][12] == "2.3"


@pytest.mark.parametrize(("location", "expected"), [
    ("PID-3", "PID^1^3"),
    ("PID-3.1", "PID^1^3^1^1"),
    ("OBX[2]-5", "OBX^2^5"),
    ("MSH-9.2.1", "MSH^1^9^1^2^1"),
    ("PV1", "PV1^1"),
    (None, ""),
    ("patient identifier", ""),
])
def test_error_location_reads_segment_field_and_component(location: str | None,
                                                          expected: str) -> None:
    assert error_location(location) == expected


def test_ack_to_an_unreadable_message_is_ar_with_defaults() -> None:
    ack = segments(build_ack("this is not HL7", "AR", HL7Error("MSH", "100", "no MSH")))
    assert ack["MSH"][2] == "^~\\&"
    assert ack["MSH"][3] == "CHARTKEEPER"
    assert ack["MSH"][9] == "ACK"
    assert ack["MSH"][12] == "2.5"
    assert ack["MSA"][1:3] == ["AR", ""]
    assert ack["ERR"][3] == "100^Segment sequence error^HL70357"


def test_ack_keeps_what_a_truncated_msh_has() -> None:
    ack = segments(build_ack("MSH|^~\\&|LAB|NORTH", "AR"))
    assert (ack["MSH"][5], ack["MSH"][6]) == ("LAB", "NORTH")
    assert ack["MSA"][1:3] == ["AR", ""]


def test_ack_uses_the_message_delimiters() -> None:
    message = "MSH#*~\\@#LAB#NORTH#CK#HIM#20260101##ORU*R01#C42#P#2.5.1\rPID#1\r"
    header = read_header(message)
    assert header.readable and header.control_id == "C42" and header.event == "R01"
    ack = build_ack(message, "AE", HL7Error("PID-3", "101", "a#b"))
    msh, msa, err = ack.rstrip("\r").split("\r")
    assert msh.startswith("MSH#*~\\@#CK#HIM#LAB#NORTH#")
    assert "#ACK*R01*ACK#" in msh
    assert msa == "MSA#AE#C42"
    assert err == "ERR##PID*1*3#101*Required field missing*HL70357#E####a\\F\\b"


def test_build_ack_refuses_an_unknown_code() -> None:
    with pytest.raises(ValueError, match="AA, AE or AR, got 'CA'"):
        build_ack(ADT_A01, "CA")


# --- the listener, with handlers standing in for the store ----------------------------------


@dataclass
class Accepted:
    status: str


def run(coroutine: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, timeout=60)

    return asyncio.run(bounded())


async def send_and_read(port: int, wire: bytes, replies: int) -> list[str]:
    """Send ``wire`` on one connection and read ``replies`` framed ACKs."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(wire)
    await writer.drain()
    decoder = FrameDecoder()
    acks: list[str] = []
    while len(acks) < replies:
        data = await reader.read(65536)
        assert data, f"connection closed after {len(acks)} of {replies} ACKs"
        acks += [e.payload.decode() for e in decoder.feed(data) if isinstance(e, Frame)]
    writer.close()
    await writer.wait_closed()
    return acks


async def with_listener(handler: Handler, wire: bytes, replies: int,
                        exchanges: list[Exchange] | None = None,
                        max_message_bytes: int = 16 * 1024 * 1024) -> list[str]:
    server = await serve("127.0.0.1", 0, handler, max_message_bytes=max_message_bytes,
                         on_exchange=None if exchanges is None else exchanges.append)
    port = server.sockets[0].getsockname()[1]
    async with server:
        return await send_and_read(port, wire, replies)


def control_id(n: int) -> str:
    return ADT_A01.replace("MSG00001", f"C{n}")


def test_listener_answers_pipelined_messages_in_order_from_a_worker_thread() -> None:
    threads: list[str] = []

    def handler(text: str) -> Accepted:
        threads.append(threading.current_thread().name)
        return Accepted("stored")

    wire = b"".join(frame(control_id(n)) for n in range(5))
    exchanges: list[Exchange] = []
    acks = run(with_listener(handler, wire, 5, exchanges))
    assert [segments(a)["MSA"][1:3] for a in acks] == [["AA", f"C{n}"] for n in range(5)]
    assert threading.main_thread().name not in threads
    assert [(e.control_id, e.message, e.ack_code, e.status) for e in exchanges] == [
        (f"C{n}", "ADT^A01", "AA", "stored") for n in range(5)]


def test_listener_maps_hl7_errors_to_ae_and_other_failures_to_ar(
        caplog: pytest.LogCaptureFixture) -> None:
    def handler(text: str) -> Accepted:
        if "C1" in text:
            raise HL7Error("PID-3", "101", "PID-3 is required")
        if "C2" in text:
            raise RuntimeError("database said: EVERYMAN^ADAM is locked")
        return Accepted("duplicate")

    wire = b"".join(frame(control_id(n)) for n in range(3))
    with caplog.at_level(logging.DEBUG, logger="chartkeeper.ingest.mllp"):
        acks = run(with_listener(handler, wire, 3))
    parsed = [segments(a) for a in acks]
    assert [p["MSA"][1:3] for p in parsed] == [["AA", "C0"], ["AE", "C1"], ["AR", "C2"]]
    assert parsed[1]["ERR"][2:5] == ["PID^1^3", "101^Required field missing^HL70357", "E"]
    assert parsed[2]["ERR"][3] == "207^Application internal error^HL70357"
    assert "RuntimeError" in caplog.text
    assert "EVERYMAN" not in caplog.text and "locked" not in caplog.text


def test_listener_skips_garbage_and_answers_oversize_and_headless_messages_with_ar(
        caplog: pytest.LogCaptureFixture) -> None:
    handled: list[str] = []

    def handler(text: str) -> Accepted:
        handled.append(read_header(text).control_id)
        return Accepted("stored")

    big = control_id(1) + "NTE|" + "x" * 5000 + "\r"
    wire = (b"junk" + frame(control_id(0)) + b"\r\n" + frame(big) + frame("no header here")
            + frame(control_id(2)))
    with caplog.at_level(logging.WARNING, logger="chartkeeper.ingest.mllp"):
        acks = run(with_listener(handler, wire, 4, max_message_bytes=4096))
    parsed = [segments(a) for a in acks]
    assert [p["MSA"][1:3] for p in parsed] == [
        ["AA", "C0"], ["AR", "C1"], ["AR", ""], ["AA", "C2"]]
    assert "exceeds the limit of 4096 bytes" in parsed[1]["ERR"][8]
    assert parsed[2]["ERR"][3].startswith("100^")
    assert handled == ["C0", "C2"]
    assert "skipped 4 bytes outside a frame" in caplog.text
    assert "junk" not in caplog.text


def test_listener_sends_the_ack_in_the_message_charset() -> None:
    message = control_id(7).replace("|P|2.8\r", "|P|2.8|||||USA|8859/1\r").replace(
        "ADTApp", "Läbor")

    async def exchange() -> bytes:
        server = await serve("127.0.0.1", 0, lambda text: Accepted("stored"))
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(frame(message.encode("latin-1")))
            data = await reader.readuntil(END_BLOCK)
            writer.close()
            return data

    raw = run(exchange())
    assert "|Läbor|".encode("latin-1") in raw


# --- the listener in front of the real store --------------------------------------------------

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "hl7v2" / \
    "ms_fhir_converter_samples"
BATCH = ["ADT-A01-01", "ADT-A04-01", "ADT-A08-01", "ADT04-251", "ORU-R01-01", "LAB-ORU-1"]


def sample(name: str, new_control_id: str) -> str:
    """A sample file as a wire message: segments ended by CR, a control id of its own."""
    text = (SAMPLES / f"{name}.hl7").read_text(encoding="utf-8-sig")
    lines = [line for line in text.splitlines() if line.strip()]
    msh = lines[0].split("|")
    msh[9] = new_control_id
    return "\r".join(["|".join(msh), *lines[1:]]) + "\r"


def without_field(message: str, segment: str, position: int) -> str:
    lines = message.rstrip("\r").split("\r")
    for i, line in enumerate(lines):
        if line.startswith(segment + "|"):
            fields = line.split("|")
            fields[position] = ""
            lines[i] = "|".join(fields)
    return "\r".join(lines) + "\r"


def acks_by_control_id(acks: Sequence[str]) -> list[tuple[str, str]]:
    return [(segments(a)["MSA"][1], segments(a)["MSA"][2]) for a in acks]


@pytest.fixture
def ingest_store(sqlite_url: str) -> Store:
    store = Store(sqlite_url)
    store.create_schema()
    create_ingest_schema(store.engine)
    return store


def stored_counts(store: Store) -> tuple[list[str], int, int]:
    """(control ids in the message log, resource rows, resource versions)."""
    with store.engine.connect() as conn:
        control_ids = sorted(conn.execute(select(hl7_message.c.control_id)).scalars())
        resources = conn.execute(select(func.count()).select_from(schema.resource)).scalar_one()
        versions = conn.execute(
            select(func.count()).select_from(schema.resource_version)).scalar_one()
    return control_ids, resources, versions


def test_listener_stores_a_batch_answers_a_broken_message_ae_and_a_resend_aa_once(
        ingest_store: Store) -> None:
    good = [sample(name, f"G{n}") for n, name in enumerate(BATCH)]
    broken = without_field(sample("ADT-A01-02", "BAD1"), "PID", 3)
    batch = [*good[:3], broken, *good[3:]]
    ingestor = Hl7Ingestor(ingest_store)
    exchanges: list[Exchange] = []

    async def exchange_twice() -> tuple[list[str], list[str], tuple[list[str], int, int]]:
        server = await serve("127.0.0.1", 0, ingestor.ingest, on_exchange=exchanges.append)
        port = server.sockets[0].getsockname()[1]
        async with server:
            first = await send_and_read(port, b"".join(frame(m) for m in batch), len(batch))
            after_batch = stored_counts(ingest_store)
            # The sender missed G0's ACK and sends it again on a new connection.
            again = await send_and_read(port, frame(good[0]), 1)
        return first, again, after_batch

    first, again, after_batch = run(exchange_twice())

    expected = [("AA", f"G{n}") for n in range(3)] + [("AE", "BAD1")] + \
        [("AA", f"G{n}") for n in range(3, len(good))]
    assert acks_by_control_id(first) == expected
    err = segments(first[3])["ERR"]
    assert err[2:5] == ["PID^1^3", "101^Required field missing^HL70357", "E"]
    assert "patient identifier" in err[8]
    control_ids, resources, versions = after_batch
    assert control_ids == sorted(f"G{n}" for n in range(len(good)))
    assert resources > len(good)
    assert acks_by_control_id(again) == [("AA", "G0")]
    assert stored_counts(ingest_store) == after_batch
    assert [e.status for e in exchanges] == [
        "stored", "stored", "stored", "error", "stored", "stored", "stored", "duplicate"]
    assert segments(first[0])["MSH"][9] == "ACK^A01^ACK"
    assert segments(first[4])["MSH"][9] == "ACK^A04^ACK"


def test_listener_answers_ar_when_the_store_is_unreachable(tmp_path: Path) -> None:
    # The store's file sits in a directory that does not exist: every write fails.
    store = Store(f"sqlite:///{tmp_path}/missing/chartkeeper.sqlite")
    acks = run(with_listener(Hl7Ingestor(store).ingest, frame(sample("ADT-A01-01", "G9")), 1))
    parsed = segments(acks[0])
    assert parsed["MSA"][1:3] == ["AR", "G9"]
    assert parsed["ERR"][3] == "207^Application internal error^HL70357"


def test_cli_listen_prints_one_line_per_message_without_phi_and_stops_on_ctrl_c(
        tmp_path: Path) -> None:
    env = {**os.environ, "CHARTKEEPER_HOME": str(tmp_path),
           "CHARTKEEPER_DATABASE_URL": f"sqlite:///{tmp_path}/chartkeeper.sqlite"}
    listener = subprocess.Popen(
        [sys.executable, "-m", "chartkeeper.cli", "hl7", "listen", "--port", "0"],
        env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert listener.stderr is not None
        banner = listener.stderr.readline()
        match = re.search(r"listening for MLLP on 127\.0\.0\.1:(\d+)", banner)
        assert match, banner
        message = sample("ADT-A01-01", "CLI1")
        acks = run(send_and_read(int(match.group(1)), frame(message) + frame(message), 2))
        assert acks_by_control_id(acks) == [("AA", "CLI1"), ("AA", "CLI1")]
        lines = [listener.stderr.readline(), listener.stderr.readline()]
        listener.send_signal(signal.SIGINT)
        rest = listener.stderr.read()
        assert listener.wait(timeout=30) == 0
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    assert "CLI1 ADT^A01 AA stored" in lines[0]
    assert "CLI1 ADT^A01 AA duplicate" in lines[1]
    assert "EVERYMAN" not in "".join(lines) + rest
    assert rest.strip().endswith("stopped")
