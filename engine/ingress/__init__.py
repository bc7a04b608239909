"""The front doors: every way an application hands septet messages and hears back.

    prepare.py    one submission (an NDJSON line, an SMPP submit_sm) checked and turned into
                  one Message per recipient, or a LineError with its RefusalKind
    accept.py     the one accept path of every door: prepare, the account's rules (senders,
                  throughput, daily quota), one journal commit, queue room, counts
    ndjson.py     NDJSON lines of a byte stream: split, handed to accept.py, answered
    sockets.py    the NDJSON listeners (TCP, Unix socket) and stdin, one identity per client
    sessions.py   a connection's identity across restarts (`{"session": "<token>"}`) and
                  its account (`{"auth": {...}}`), both from its first line
    events.py     where events go: the newest live sink of the message's origin, or kept
    outbox.py     events for clients that have gone, batched into the journal
    http_api.py   the HTTP API v1 (/v1/messages, /v1/events, /v1/openapi.json) on `[api]`
    api_models.py its request and answer Structs, and the OpenAPI document made from them
    api_requests.py its keys, query parameters and bodies read, or the problem saying why
    sendsms.py    Kannel's /cgi-bin/sendsms on the same listener, and its dlr-url escapes

SMPP's socket code is engine/smpp/server.py; it accepts through accept.Acceptor like
every door (reserving queue room before the commit).
"""
