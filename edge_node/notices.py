"""What the agent tells its user about a run, beyond one record per frame.

A run can look fine and not be: every frame ran locally because the cloud was
never reached (a wrong port, a forgotten --cloud), or nothing ran because the
results log already records every frame. These are said once, clearly, at the
end; the per-frame "ran locally" detail is at DEBUG and INFO gets a periodic
digest instead of one line per frame (a drone at 10 fps would log ten a second).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from splitpoint.errors import RemoteError, SplitpointError
from splitpoint.remote_hints import is_refusal, remote_hint

if TYPE_CHECKING:
    from .config import EdgeConfig
    from .run_report import RunSummary
    from .session_api import Session

log = logging.getLogger("edge_node.agent")  # the agent's logger: users filter on one name


class CloudNotReachedError(SplitpointError):
    """require_cloud is set and no cloud server answered during the run."""


#: seconds between two digests of the frames that ran locally
DIGEST_PERIOD_S = 60.0  # as failed streams' WARNINGs: at 10 s a day-long outage was 8,640 lines (s31-soak)
#: seconds between two lines about streams (or link probes) that keep failing
FAILURE_PERIOD_S = 60.0


class FallbackDigest:
    """Counts fallbacks by reason; the first is logged at once, then one INFO digest per period."""

    def __init__(self, period_s: float = DIGEST_PERIOD_S, clock=time.monotonic):
        self.period_s = period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._reasons: Counter[str] = Counter()
        self._since: float | None = None  # start of the current digest period
        self._announced = False

    def note(self, frame_id: int, reason: str) -> None:
        log.debug("frame %d ran locally: %s", frame_id, reason)
        first = False
        with self._lock:
            if not self._announced:
                self._announced = first = True
            else:
                self._reasons[reason] += 1
                if self._since is None:
                    self._since = self._clock()
        if first:  # the moment frames start falling back is worth a line of its own
            log.info("frame %d ran locally: %s (further local runs are summarised every %.0f s)",
                     frame_id, reason, self.period_s)
        self.maybe_flush()

    def maybe_flush(self) -> None:
        """Log the digest if its period has passed (called from any thread, cheaply)."""
        with self._lock:
            if self._since is None or self._clock() - self._since < self.period_s:
                return
            self._log_locked()

    def flush(self) -> None:
        """Log what is counted and not yet reported (end of run)."""
        with self._lock:
            if self._reasons:
                self._log_locked()

    def _log_locked(self) -> None:
        assert self._since is not None
        n = sum(self._reasons.values())
        span = self._clock() - self._since
        reasons = "; ".join(f"{count} x {reason}" for reason, count in self._reasons.most_common(3))
        more = len(self._reasons) - 3
        log.info("%d frames ran locally in the last %.0f s: %s%s", n, span, reasons,
                 f"; and {more} other reasons" if more > 0 else "")
        self._reasons.clear()
        self._since = None


class RepeatedFailures:
    """Something the agent keeps trying - streams, link probes - failing, told at a rate a journal
    holds: at most one line per period at `level` - the failure itself, or how many `noun` failed
    since the last line and the last one's error - and, after such a line, one INFO line when
    one works again. A server down for hours is retried once per backoff (up to 5 s) and a
    flapping link fails a stream every few seconds: a WARNING each was ~24 lines a minute in a
    soak, 35,000 a day on a drone's journal; an adaptive agent probes the link every 0.5-2 s,
    and a line per failed probe was 42 in a 21 s server restart. Every failure is still at DEBUG."""

    def __init__(self, noun: str, level: int, period_s: float = FAILURE_PERIOD_S, clock=time.monotonic):
        self.noun = noun  # what fails, plural: "N <noun> failed ...", "<noun> work again ..."
        self.level = level  # of the failure lines (the "work again" line is at INFO)
        self.period_s = period_s
        self._clock = clock
        self._lock = threading.Lock()  # every field below (a leaf)
        self._last_line: float | None = None  # when a line last said they fail
        self._unreported = 0  # failures since that line
        self._last = ""  # the last failure, as its line says it
        self._told = 0  # failures since the first line no "work again" has answered (0: none told)
        self._told_at = 0.0

    def failed(self, what: str) -> None:
        """One failed; `what` says so ("stream to ADDRESS ended: ...", "link probe failed: ...")."""
        now = self._clock()
        log.debug("%s", what)
        with self._lock:
            self._last = what
            self._unreported += 1
            if self._told:
                self._told += 1
            if self._last_line is not None and now - self._last_line < self.period_s:
                return
            count, self._unreported = self._unreported, 0
            span = 0.0 if self._last_line is None else now - self._last_line
            self._last_line = now
            if not self._told:  # the failures this line tells of, since when
                self._told, self._told_at = count, now if count == 1 else now - span
        if count == 1:
            log.log(self.level, "%s (further failures: one line every %.0f s at most)", what, self.period_s)
        else:
            self._log_count(count, span, what)

    def answered(self) -> None:
        """One worked (an answer came): they work (again)."""
        with self._lock:
            told, since = self._told, self._told_at
            if told:  # the failures not yet counted in a line are in this one's count
                self._told = self._unreported = 0
        if told:
            log.info("%s work again after %d failed in %.0f s", self.noun, told, self._clock() - since)

    def flush(self) -> None:
        """Say the failures not yet told (the end of the run)."""
        now = self._clock()
        with self._lock:
            count, self._unreported = self._unreported, 0
            span = 0.0 if self._last_line is None else now - self._last_line
            self._last_line = now
            last = self._last
        if count:
            self._log_count(count, span, last)

    def _log_count(self, count: int, span: float, last: str) -> None:
        log.log(self.level, "%d %s failed in the last %.0f s (last: %s)", count, self.noun, span, last)


def unreached_message(addresses: Sequence[str], local: int, error: RemoteError | None = None,
                      require_cloud: bool = False) -> str:
    """The end-of-run line of an agent that no server answered: what the last failure said and
    what it most likely means (a refused token is not a server that is down)."""
    where = ", ".join(addresses)
    servers = "the cloud server" if len(addresses) == 1 else "any of the cloud servers"
    if error is not None and is_refusal(error):
        head = f"{servers} at {where} refused this agent ({error})"
    else:
        head = f"never reached {servers} at {where}" + (f" (last error: {error})" if error is not None else "")
    advice = (remote_hint(error) if error is not None else "") or "check --cloud and that the server is running"
    if not require_cloud:
        advice += "; --require-cloud makes this an error"
    return f"{head}: all {local} frames ran locally on the edge ({advice})"


def nothing_to_do_message(results: str, skipped: int) -> str:
    """The end-of-run line of a resumed run that found every frame already recorded."""
    return (f"nothing to do: all {skipped} frames of the source are already recorded in {results}; "
            "to run them again, use --no-resume (the old log is renamed to .bak) or another --results file")


def mostly_local_message(local_instead: dict[str, int], frames: int) -> str | None:
    """The end-of-run line of an agent that reached its server and still ran most of its frames
    here instead of there (a server on another bundle, refusing its streams, or a link that
    kept failing): the summary said only "0 cloud, 500 local (500 fallbacks)". None when at
    most half of the frames did."""
    n = sum(local_instead.values())
    if not frames or n * 2 <= frames:
        return None
    ranked = sorted(local_instead.items(), key=lambda kv: (-kv[1], kv[0]))
    reasons = "; ".join(f"{count} x {group}" for group, count in ranked[:3])
    more = f"; and {len(ranked) - 3} other reasons" if len(ranked) > 3 else ""
    return (f"{n} of {frames} frames ran locally instead of in the cloud: {reasons}{more} "
            "(the journal's warnings say more; splitpoint results LOG lists every reason)")


def report_end(s: RunSummary, cfg: EdgeConfig, session: Session, wanted_cloud: bool) -> None:
    """The end-of-run notices of a run that ended without an error: skipped, dropped, abandoned,
    mostly local, never reached a server. CloudNotReachedError when require_cloud is set and no
    server was reached."""
    if s.nothing_to_do:
        log.warning("%s", nothing_to_do_message(cfg.results, s.skipped))
    elif s.skipped:
        log.info("resumed: %d frames already recorded in %s were skipped", s.skipped, cfg.results)
    if s.dropped:
        log.warning("live capture: %d frames dropped (the agent fell behind the source)", s.dropped)
    if s.abandoned:
        log.warning("stopped: %d frames in flight got no answer within grace_s = %s; they have no record "
                    "and run again on resume", s.abandoned, cfg.grace_s)
    # an all-edge run (k = K) never needed a server: nothing to say, unless one was required
    if session.reached() and (mostly := mostly_local_message(s.local_instead, s.frames)):
        log.warning("%s", mostly)
    if session.reached() or s.frames == 0 or not (wanted_cloud or cfg.require_cloud):
        return
    s.unreached = [session.address]
    message = unreached_message(s.unreached, s.local, session.last_error(), cfg.require_cloud)
    if cfg.require_cloud:
        raise CloudNotReachedError(f"require_cloud: {message}; results in {cfg.results}")
    log.warning("%s", message)
