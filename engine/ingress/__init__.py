"""The front doors: every way an application hands septet messages and hears back.

    prepare.py    one submission (an NDJSON line, an SMPP submit_sm) checked and turned into
                  one Message per recipient, or a LineError with its RefusalKind
    ndjson.py     NDJSON lines of a byte stream: split, prepared, journaled, answered
    sockets.py    the NDJSON listeners (TCP, Unix socket) and stdin, one identity per client
    sessions.py   a connection's identity across restarts (`{"session": "<token>"}`)
    events.py     where events go: the newest live sink of the message's origin, or kept
    outbox.py     events for clients that have gone, batched into the journal

SMPP's socket code is engine/smpp/server.py; it accepts through ndjson.LineHandler's
`accept_submission`, the same journal commit and queue reservation as the sockets.
"""
