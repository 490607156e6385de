"""When to measure the uplink, and measuring it: the agent's bandwidth probes.

The link estimate (scheduler/link.py) learns from frames whose transfer took long enough to
read the rate. When none has for a while - frames run on the edge, or are cuts too quick on
the wire - a probe measures it: an RTT exchange, then a bulk `Probe` sized to the estimate
(~50 ms of traffic, at most PROBE_BYTES). The schedule (docs/scheduler.md, "Probes"):
probe_first_s after the last frame that measured the rate and while the camera keeps giving
frames, doubling to probe_idle_s while none come; never while a frame is planned for the link
or the session backs off; a reading that rose REPROBE_RISE-fold is read again at once.

`LinkProber` runs on its own thread (`start`/`stop`), beside the frames and never in front of
one: a 64 KiB probe on a 2 Mbps uplink takes a quarter of a second, which a frame waiting
behind it would pay. The session (edge_node/session.py) owns it and tells it what it needs
of the session's state through functions (frames handed a stream; the end of a backoff).

Locks: `LinkProber._lock` (the probe schedule) is a leaf: what the agent, the link estimator
and the session know is asked before it is taken (each of their locks is a leaf too).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from scheduler.cost import transfer_ms
from scheduler.link import PROBE_TARGET_MS, LinkEstimator, LinkState, probe_bytes
from splitpoint.errors import RemoteError

from .client import CloudLink, Interrupted
from .config import EdgeConfig
from .notices import RepeatedFailures
from .session_api import SessionCallbacks

log = logging.getLogger("edge_node.agent")  # the agent's logger: users filter on one name

#: the largest bandwidth probe (probes are sized to the estimate: scheduler.link.probe_bytes)
PROBE_BYTES = 64 * 1024
#: a probe that reads this many times the estimate it was sized by is repeated at once
REPROBE_RISE = 1.5
#: the prober never waits less than this between looks (a probe just fell due: poll again soon)
PROBE_WAKE_MIN_S = 0.005


class LinkProber:
    """The probe schedule and its thread (see the module doc)."""

    def __init__(self, config: EdgeConfig, link: LinkEstimator, client: CloudLink,
                 sends: Callable[[], int], backoff_until: Callable[[], float],
                 on_failure: Callable[[RemoteError], None], clock: Callable[[], float] = time.monotonic,
                 several_servers: bool = False):
        self.config = config
        #: the target may be several replicas (a list, a dns: name): a probe that round_robin put on
        #: a hung one is given up at frame_deadline_ms past its prediction (`_timeout_s`)
        self._several_servers = several_servers
        self.link = link
        self.client = client
        self._sends = sends  # how many frames the session has handed a stream (a count that moves)
        self._backoff_until = backoff_until  # clock time the session's reconnect backoff ends
        self._on_failure = on_failure  # a probe that failed: the session's last error
        self._clock = clock
        #: failed probes: logged as failed streams are, at INFO (a line each was 42 in a 21 s server
        #: restart, up to 7,200 an hour of outage, with the agent probing every 0.5-2 s)
        self._failures = RepeatedFailures("link probes", logging.INFO, clock=clock)
        self._callbacks: SessionCallbacks | None = None
        self._lock = threading.Lock()  # the probe schedule below (a leaf)
        self._last_probe = 0.0
        #: the wait before the next idle probe: probe_first_s after a frame measured the link's
        #: rate and while the camera keeps giving frames that do not (they run on the edge, or
        #: are cuts too quick on the wire to measure it: the link is the path, or the payload,
        #: they may be missing; a link that came back is seen within probe_first_s, not
        #: probe_idle_s); doubling up to probe_idle_s while neither happens (no frames: nothing
        #: to gain). _probed_traffic is the link's last_rate_sample right after our own last
        #: probe: when it moves, a frame measured the rate since; _probed_frames the agent's
        #: frames_planned() at that probe.
        self._probe_gap = 0.0
        self._reprobe = False  # the last probe read a rise: the next one is due now
        self._probed_sends = 0  # sends() when the last probe started
        self._probe_took_s = 0.0  # how long the last probe took (its RTT exchange and bulk)
        self._probed_traffic: float | None = None
        self._probed_frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe_loop, name="link-prober", daemon=True)

    def start(self, callbacks: SessionCallbacks) -> None:
        """A first probe now (before the first frame is captured: a first estimate costs no
        frame), then the thread; it idles while the policy is fixed (a reload may make it adaptive)."""
        self._callbacks = callbacks
        self.maybe_probe()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(1.0)  # a probe in flight ends at its deadline or when the channel closes
        self._failures.flush()  # the failed probes not yet told

    def _probe_loop(self) -> None:
        """Background thread: probe whenever no frame has measured the link's rate for a while
        (probe_first_s; doubling up to probe_idle_s once frames stop coming)."""
        policy = self.config.policy
        poll_s = min(0.1, policy.probe_first_s / 4, policy.probe_idle_s / 4)
        wait_s = poll_s
        while not self._stop.wait(wait_s):
            wait_s = poll_s
            try:
                # Wake when the next probe falls due rather than up to a poll later: with the
                # camera live the probe period is what bounds how soon a risen link is seen.
                wait_s = min(poll_s, max(PROBE_WAKE_MIN_S, self.maybe_probe()))
            except Exception as err:  # noqa: BLE001 - e.g. the channel closed under a probe at shutdown
                log.debug("link probe ended: %s", err)

    def _timeout_s(self, size: int, before: LinkState, bulk: bool) -> float:
        """How long a probe of `size` bytes (its RTT exchange, or its `bulk`) may take:
        connect_timeout_s + the bulk's bytes at 100 kbps (at least 1 s).

        With one server, a probe that stalls is the link's evidence: its overdue booking holds
        the planner's link (`Timeline.free_at`) until it ends. With several, round_robin may
        have given it to a hung replica: held for its whole timeout (~9 s for 48 KiB), it kept
        an adaptive agent on the edge while the other replicas stood idle (the fleet audit, one
        of three replicas SIGSTOPped). There it is given up at frame_deadline_ms past what the
        estimate predicts for it, as a silent stream is set aside; the next probe goes to the
        next replica."""
        timeout_s = self.config.connect_timeout_s + max(1.0, size * 8 / 100e3)
        if self._several_servers:
            predicted_ms = (transfer_ms(size, before.bandwidth_bps) if bulk else 0.0) + before.rtt_ms
            timeout_s = min(timeout_s, (predicted_ms + self.config.frame_deadline_ms) / 1000)
        return timeout_s

    def maybe_probe(self) -> float:
        """Measure the link when no frame has measured its rate for a while (and at start): none
        was sent, or every one was on the wire for less than an RTT (scheduler/link.py: such a
        reading is only a lower bound, and an agent sending small cuts on a fast link would
        never see that a larger payload had become the quicker path). Returns
        the seconds until the next probe could fall due (the prober's wait; frames may push it)."""
        callbacks = self._callbacks
        if callbacks is None or not callbacks.wants_probes():  # also after a reload to fixed
            return math.inf
        policy = self.config.policy
        now = self._clock()
        first = min(policy.probe_first_s, policy.probe_idle_s)
        planned = callbacks.frames_planned()
        frames_on_link = callbacks.frames_on_link()  # asked before the lock: ours is a leaf
        before = self.link.estimate()  # likewise (the link's lock)
        sends, retry_at = self._sends(), self._backoff_until()  # likewise (the session's lock)
        size = min(PROBE_BYTES, probe_bytes(before.bandwidth_bps))  # ~50 ms of traffic, bounded
        with self._lock:
            frame_crossed = self.link.last_rate_sample != self._probed_traffic  # and measured the rate
            if frame_crossed or sends != self._probed_sends:
                # Frames are crossing (or on their way): they measure the link, and a re-probe
                # beside them delays them (in a step-only run, most likely what pushed one of
                # the first frames past its hedge time).
                self._reprobe = False
            if frame_crossed:  # a new idle spell
                self._probe_gap = first
            gap = self._probe_gap
            if self._last_probe and not self._reprobe:
                # The spell is timed from the last frame that measured the rate, or, when only our probes
                # did, from the last probe's start: timed from its end, every probe's own
                # transfer (130 ms for 32 KiB at 2 Mbps) stretched the period by that much.
                # Probes keep the link at most half busy: a slow one waits twice its length.
                wait = self._last_probe + max(gap, 2 * self._probe_took_s) - now
                if frame_crossed:
                    wait = max(wait, gap - self.link.idle_s())
                if wait > 0:
                    return wait
            if now < retry_at:  # the session is backing off: the server is down or refusing
                return retry_at - now
            if frames_on_link:
                # A frame planned for the link (its head is running) would queue behind the probe:
                # the plan booked its transfer on a link it saw free. In the trace stage (RTT 10 ms,
                # 792d828) the one k = 89 frame sent after an all-edge spell on ATT-LTE-driving 0 s
                # and on Verizon-EVDO 1045 s ended hedged at 257 ms (3 frames late behind it) where
                # the fixed k = 89 run sent it in 27-29 ms. Frames on the link measure it anyway,
                # and their answers restart the spell: look again a poll later, not in 5 ms steps
                # for as long as a stalled frame holds the link.
                return first
            if (sends != self._probed_sends and not self._reprobe
                    and transfer_ms(size, before.bandwidth_bps) > PROBE_TARGET_MS):
                # Frames are being sent, as cuts too quick on the wire to measure the rate: a
                # probe beside them is what could show that a larger payload has become the
                # quicker path, but it holds the link they use. Only while it is cheap (its
                # bytes in PROBE_TARGET_MS at the estimate: 32 KiB needs 5.2 Mbps): sent at
                # 4 Mbps beside TMobile-LTE-short's k = 89 frames (RTT 10 ms, one run), 32 KiB
                # held the link for ~65 ms of every 0.5 s, delayed frames by up to 22 ms and sent
                # others to the edge (1.026x the best fixed split, 1.009x without them), where no
                # larger payload could have won. "Being sent" is since this look, not since the
                # last probe: counted from the last probe, an agent that went all-edge with a low
                # estimate stayed "offloading" and was never probed again (15a619b: the whole
                # 50 Mbps phase of the step on the edge, and Verizon-LTE-short's last 2 s).
                self._probed_sends = sends
                return first
            self._last_probe = now
            reprobing, self._reprobe = self._reprobe, False
            # Frames sent since the last probe: the agent is offloading (cuts too quick on the
            # wire to measure the rate), and its frames' own outcomes (hedges, late answers) are
            # its risk evidence (scheduler/risk.py); a probe is judged for the link's drops only
            # for an agent that has none. Judged beside the frames (TMobile-LTE-short, RTT 10 ms,
            # one run), an agent that had offloaded every frame ran 30 of its 200 on the edge,
            # each ~15 ms slower than the k = 89 it had been sending - most likely held there by
            # the drops its probes met (the reasons are not logged).
            offloading = sends != self._probed_sends
            self._probed_sends = sends
            # Frames planned since the last probe ran on the edge (none crossed): the camera is
            # live, so keep watching the link at probe_first_s. Costs up to one probe (32-48 KiB)
            # per probe_first_s while the agent is all-edge; no frames: back off.
            camera_live = planned != self._probed_frames
            self._probed_frames = planned
            self._probe_gap = first if camera_live else min(policy.probe_idle_s, 2 * gap)
        before_bps, measured = before.bandwidth_bps, before.samples > 0
        try:
            rtt_ms, resp = self.client.probe(0, 0, timeout_s=self._timeout_s(size, before, bulk=False))
            self.link.observe_rtt(max(0.01, rtt_ms - resp.server_time_ms))
            if callbacks.frames_on_link():
                # planned during the RTT exchange (an RTT or more: 10-70 ms): its plan did not see
                # this probe, so the bulk would go ahead of it. Checked again here, the window in
                # which a plan can miss a probe is the few microseconds to probe_sent below.
                log.debug("probe: a frame was planned for the link during the RTT exchange; no bulk")
                self._failures.answered()  # the RTT exchange was answered: probes work
                return 0.0
            # the cost model's time; overdue, a stall only with one server (`_timeout_s`)
            callbacks.probe_sent(size, transfer_ms(size, before_bps), before.rtt_ms, not self._several_servers)
            answered = False
            try:
                bulk_ms, resp = self.client.probe(size, 0, timeout_s=self._timeout_s(size, before, bulk=True))
                answered = True
            finally:
                callbacks.probe_done(answered)
            # A re-probe is not judged for drops: its prediction is the one reading it repeats,
            # and a noisy high one (48 KiB is 8 ms on the wire at 50 Mbps) made the re-probe
            # after it look like a drop, which the hedge risk would count against offloading.
            sample_bps = self.link.observe_probe(size, bulk_ms, resp.server_time_ms,
                                                 judged=not reprobing and not offloading)
            with self._lock:
                self._probed_traffic = self.link.last_rate_sample
                self._probe_took_s = self._clock() - now
                # A link that rose during the probe: the reading blends the old rate and the new
                # (a 32 KiB probe at 2 Mbps that a rise to 50 Mbps hits half way through reads
                # 3.8 Mbps). Read it again at once rather than a probe period later; one
                # re-probe per reading, so a noisy link costs at most twice the probes.
                # Not after a first reading: the estimate it is compared with was a guess.
                self._reprobe = sample_bps > REPROBE_RISE * before_bps and not reprobing and measured
            log.debug("probe: %s", self.link.estimate())
            self._failures.answered()
        except Interrupted:  # the agent was told to stop (session.interrupt), for good: probe no more
            self._stop.set()  # every later probe was given up at once and logged, 47 in a long stop
            return math.inf
        except RemoteError as err:
            self._on_failure(err)
            self._failures.failed(f"link probe failed: {err}")  # at INFO, one line a period at most
        return 0.0  # look again at once: what is due next is worked out there
