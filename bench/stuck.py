"""What a septet bench run that passed its deadline left unfinished, and its files kept.

Read while the daemon still runs, so nothing its drain does hides the state: the load's
counts and the messages it saw accepted but never saw end, the simulator's count and the
recipients it never took, and each non-final message's row and history as `septet
messages list|show` give them (engine.admin_api.run_admin: the daemon's admin API).
With a keep directory the run's work directory (config, journal, daemon log) is copied
there with this report beside it, so the journal can be read again after the run.

    report = diagnose(settings, sim_url, "routemobile", tally, recipients)  # daemon running
    kept = keep_workdir(workdir, keep_dir, "septet-pool-500", report)
"""

from __future__ import annotations

import datetime as dt
import shutil
import urllib.request
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

import anyio
import msgspec

from bench.loadgen import Tally
from engine.admin import Admin, MessageDetail, MessageList, MessageSummary, RefusedError
from engine.admin_api import AdminCall, run_admin
from engine.config import Settings
from engine.models import State

# The states a message can stay in without an outcome (docs/lifecycle.md).
NON_FINAL: tuple[State, ...] = (
    State.ACCEPTED,
    State.SCHEDULED,
    State.INFLIGHT,
    State.SUBMITTED,
    State.UNCONFIRMED,
)
SHOWN = 5  # messages shown in full (row and events); the rest are counted
LISTED = 100  # messages listed per state
_T = TypeVar("_T")


class StuckReport(msgspec.Struct, kw_only=True):
    """Everything `diagnose` could read; a part it could not read says why instead."""

    tally: dict[str, int]
    unfinished_ids: list[str]  # accepted on the connection, no submitted/failed seen
    simulator_accepted: int | None
    simulator_missing: list[str]  # recipients the simulator never took
    non_final_counts: dict[str, int]  # by state, at most 100 each
    non_final: list[MessageSummary]  # `septet messages list` rows
    shown: list[MessageDetail]  # `septet messages show` of the first few
    problems: list[str]

    def summary(self) -> str:
        """One line: where the run stopped."""
        ids = ", ".join(f"{row.msg_id} {row.status}" for row in self.non_final[:SHOWN])
        return (
            f"load: {self.tally.get('submitted', 0)} submitted + {self.tally.get('failed', 0)}"
            f" failed of {self.tally.get('accepted', 0)} accepted; simulator took"
            f" {self.simulator_accepted}; journal non-final {self.non_final_counts or 'none'}"
            + (f" ({ids})" if ids else "")
        )


async def _ask(
    settings: Settings, call: AdminCall, answer: type[_T], report: StuckReport
) -> _T | None:
    """`call` as `septet messages` runs it (the daemon's admin API, or the file)."""
    try:
        return await run_admin(settings, call, answer)
    except RefusedError as error:
        report.problems.append(f"{call.method} {call.path}: {error}")
        return None


async def _journal(settings: Settings, report: StuckReport) -> None:
    for state in NON_FINAL:
        query = (("status", state.value), ("limit", str(LISTED)))
        direct = partial(Admin.list, status=state.value, limit=LISTED, below=None)
        call = AdminCall("GET", "/admin/messages", query, direct)
        page = await _ask(settings, call, MessageList, report)
        if page is not None and page.messages:
            report.non_final.extend(page.messages)
            report.non_final_counts[state.value] = len(page.messages)
    for summary in report.non_final[:SHOWN]:
        msg_id = summary.msg_id
        direct_show = partial(Admin.show, msg_id=msg_id)
        call = AdminCall("GET", f"/admin/messages/{msg_id}", (), direct_show)
        detail = await _ask(settings, call, MessageDetail, report)
        if detail is not None:
            report.shown.append(detail)


def _simulator(sim_url: str, provider: str, recipients: Sequence[str], report: StuckReport) -> None:
    url = f"{sim_url}/_sim/counters?provider={provider}"
    try:
        with urllib.request.urlopen(url, timeout=5.0) as reply:  # noqa: S310 - our 127.0.0.1 URL
            counters = msgspec.json.decode(reply.read())[provider]
    except (OSError, ValueError, KeyError) as error:
        report.problems.append(f"simulator counters: {error}")
        return
    report.simulator_accepted = int(counters["accepted_total"])
    taken = {cell.lstrip("+") for cell in counters["accepted_by_recipient"]}
    report.simulator_missing = [r for r in recipients if r.lstrip("+") not in taken][:100]


def diagnose(
    settings: Settings,
    sim_url: str,
    provider: str,
    tally: Tally,
    recipients: Sequence[str],
) -> StuckReport:
    """Read the load's, the simulator's and the journal's view (call before the daemon stops)."""
    ended = set(tally.submitted_at) | tally.failed_ids
    report = StuckReport(
        tally={
            "accepted": tally.accepted,
            "submitted": tally.submitted,
            "failed": tally.failed,
            "rejected_lines": tally.rejected_lines,
        },
        unfinished_ids=sorted(set(tally.accepted_at) - ended)[:100],
        simulator_accepted=None,
        simulator_missing=[],
        non_final_counts={},
        non_final=[],
        shown=[],
        problems=[],
    )
    _simulator(sim_url, provider, recipients, report)
    anyio.run(_journal, settings, report)
    return report


def keep_workdir(workdir: Path, keep_dir: Path, label: str, report: StuckReport) -> Path:
    """Copy the run's files under `keep_dir` with the report beside them; the copy's path."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    name = "".join(c if c.isalnum() else "-" for c in label).strip("-")
    target = keep_dir / f"{name}-{stamp}"
    shutil.copytree(workdir, target, ignore=shutil.ignore_patterns("*.sock"))
    (target / "stuck.json").write_bytes(
        msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n"
    )
    return target
