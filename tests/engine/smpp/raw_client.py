"""A bare SMPP client on septet's own codec, for what real clients won't send: malformed
PDUs, exact sequences, unanswered receipts."""

from __future__ import annotations

from types import TracebackType

import anyio
import anyio.abc

from engine.smpp import pdu as p
from engine.smpp.codec import PduReader, decode_pdu, encode_pdu


class RawClient:
    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.reader = PduReader()
        self.frames: list[bytes] = []
        self.sequence = 0

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        return cls(await anyio.connect_tcp("127.0.0.1", port))

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.stream.aclose()

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence

    async def send(self, pdu: p.Pdu) -> None:
        await self.stream.send(encode_pdu(pdu))

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send(data)

    async def read(self) -> p.AnyPdu:
        """The next PDU from the server; EndOfStream when it closed the connection."""
        with anyio.fail_after(5):
            while not self.frames:
                self.frames.extend(self.reader.feed(await self.stream.receive()))
        return decode_pdu(self.frames.pop(0))

    async def closed_by_server(self) -> bool:
        """True when the server closes the connection (after any PDUs it still sends)."""
        try:
            with anyio.fail_after(5):
                while True:
                    await self.read()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return True

    async def bind(
        self,
        kind: type[p.BindRequest] = p.BindTransceiver,
        system_id: str = "demo",
        password: str = "demo",
        interface_version: int = 0x34,
        system_type: str = "",
        address_range: str = "",
    ) -> p.BindResp:
        await self.send(
            kind(
                sequence_number=self.next_sequence(),
                system_id=system_id,
                password=password,
                interface_version=interface_version,
                system_type=system_type,
                address_range=address_range,
            )
        )
        answer = await self.read()
        assert isinstance(answer, p.BindResp)
        return answer

    async def submit(self, **fields: object) -> p.SubmitSmResp:
        values: dict[str, object] = {
            "source_addr": "ACME",
            "dest_addr_ton": 1,
            "destination_addr": "250788123456",
            "short_message": b"hello",
        }
        values.update(fields)
        await self.send(p.SubmitSm(sequence_number=self.next_sequence(), **values))  # type: ignore[arg-type]
        answer = await self.read()
        assert isinstance(answer, p.SubmitSmResp)
        return answer
