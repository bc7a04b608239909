"""Signed webhooks: each event of a message POSTed to its callback URL, at least once.

    settings.py   AccountWebhooks (an account's URL, allow-list, secret) and the worker's
                  settings, `[webhooks]`
    hosts.py      which callback URLs may be called (SSRF rules), at accept and at delivery
    signing.py    the `Septet-Signature` header: HMAC-SHA256 over "{timestamp}.{body}"
    policy.py     what a reply means and when to try again (pure: injected clock, jitter)
    worker.py     the delivery worker: claims owed deliveries from the journal, POSTs them
                  with bounded concurrency on its own HTTP pool, settles them in batches

The deliveries owed live in the journal (engine.feed), written in the transaction of the
state change that made the event, so neither a restart nor a receiver that is down loses
one. User documentation: docs/webhooks.md.
"""
