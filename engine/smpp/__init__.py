"""SMPP v3.4 server: PDUs, a pure codec, a pure session state machine, and the anyio server.

pdu.py      constants (command ids, statuses, TLV tags) and one msgspec Struct per PDU
codec.py    bytes <-> PDUs and framing (pure)
session.py  bind states and the three SMPP timers (pure; time is passed in)
text.py     data_coding, UDH / sar_* / message_payload reassembly, receipt text (pure)
store.py    the server's own SQLite file: message ids given out, parts, pending receipts
receipts.py which events end a message, and the deliver_sm receipt that tells it (pure)
account.py  one account while serving: its rate limit, its receipts waiting by bind group
auth.py     password checks and the failed-bind limit per account and peer (pure)
settings.py the `[smpp]` section: limits, timers, accounts
connection.py  one ESME's connection: reads, answers, timers, receipts, unbind
server.py   `serve_smpp`: the only socket code of SMPP
"""
