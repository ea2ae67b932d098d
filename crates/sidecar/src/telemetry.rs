//! Logging, the Prometheus recorder, and the HTTP endpoints.

use std::future::Future;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::IncomingStream;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use scanner_core::{ErrorChain, Heartbeat, Liveness, ScanError, ScanStatus, Scanner};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Sends logs to standard error, at the level GLEANER_LOG (or RUST_LOG) asks for.
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = std::env::var("GLEANER_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Installs the global Prometheus recorder and describes every metric.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let buckets = [
        0.001, 0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                Matcher::Full(scanner_core::telemetry::COMMIT_DELAY.into()),
                &scanner_core::telemetry::COMMIT_DELAY_BUCKETS,
            )
        })
        .context("configuring histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    scanner_core::telemetry::describe();
    metrics::describe_gauge!(
        "gleaner_build_info",
        "Always 1; labels carry the version and the commit."
    );
    metrics::describe_counter!(
        HTTP_REJECTED,
        "Connections to the HTTP endpoints closed by Gleaner, by reason: full (every slot taken, \
         none freed in time: closed without an answer), evicted (closed to make room for a new connection: \
         it had waited longest for its request), head_timeout (no whole request head within \
         2 s), stalled (a response that moved nothing for 5 s), lifetime (open for 30 s)."
    );
    for closed in Closed::COUNTED {
        if let Some(reason) = closed.label() {
            metrics::counter!(HTTP_REJECTED, "reason" => reason).increment(0);
        }
    }
    metrics::gauge!(
        "gleaner_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => env!("GLEANER_COMMIT")
    )
    .set(1.0);
    PROCESS.describe();
    // Histograms are only folded into the rendered view by upkeep; without the exporter's own
    // HTTP listener, that is our job.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

#[derive(Clone)]
struct Endpoints {
    metrics: PrometheusHandle,
    health: Health,
}

/// What `/readyz` and `/livez` report on: a stand-in while the scanner starts (the endpoints
/// answer from the moment the port is bound: a slow start is not a dead process), then the
/// scanner's own status and heartbeat.
#[derive(Clone)]
pub struct Health(Arc<RwLock<(watch::Receiver<ScanStatus>, Heartbeat)>>);

impl Health {
    /// Not ready, alive: the scanner is starting.
    pub fn starting(stall_timeout: Duration) -> Self {
        let status = watch::channel(ScanStatus::default()).1;
        Self(Arc::new(RwLock::new((
            status,
            Heartbeat::new(stall_timeout),
        ))))
    }

    /// The start failed with `error`: not ready, with the error; alive, since the attempt
    /// ended (it is tried again, or the process stops).
    pub fn start_failed(&self, error: &ScanError, stall_timeout: Duration) {
        let mut status = ScanStatus::default();
        status.last_error = Some(format!("cannot start: {}", ErrorChain(error)));
        *self.0.write().unwrap_or_else(PoisonError::into_inner) =
            (watch::channel(status).1, Heartbeat::new(stall_timeout));
    }

    /// From now on, the scanner's status and heartbeat.
    pub fn attach(&self, scanner: &Scanner) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) =
            (scanner.status(), scanner.heartbeat());
    }

    fn status(&self) -> ScanStatus {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .borrow()
            .clone()
    }

    fn liveness(&self) -> Liveness {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .check()
    }
}

/// At most this many HTTP connections at once (fewer under a low open-file limit): the
/// endpoints must never take the descriptors that scans need.
const MAX_CONNECTIONS: usize = 8;
/// A connection must deliver a whole request head within this long of its accept, or of the
/// end of its previous response (an idle keep-alive). Trickled bytes do not extend it, so a
/// slow client holds a slot for 2 s at most; a probe or a scrape sends its head at once, well
/// within it on any network they cross.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection that has waited for its request head less than this is not evicted. A probe
/// sends its whole head at once, so it is read well within this; without it, slow clients
/// that reconnect at once evict each other in a chain, in a millisecond or two, down to the
/// newest connection: a probe whose head the server has not read yet, on a loaded machine.
const HEAD_GRACE: Duration = Duration::from_millis(250);
/// A request being answered that moves no byte for this long is closed: a client that stopped
/// reading its response.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// A request being answered that has moved no byte for this long may be evicted, after every
/// connection that has waited [`HEAD_GRACE`] for its head: a response that stalls a second is
/// not a probe's.
const STALLED_AFTER: Duration = Duration::from_secs(1);
/// A request answered for this long may be evicted like a stalled one, however steadily its
/// client reads: a scrape or a probe is answered in milliseconds, so an answer this long is a
/// client reading a byte now and then, which would otherwise hold its slot up to
/// [`CONNECTION_LIFETIME`].
const ANSWER_EVICTABLE_AFTER: Duration = Duration::from_secs(2);
/// No connection lives longer than this (a keep-alive client with request after request).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// How long a new connection waits for a slot when none can be evicted (every connection is
/// within [`HEAD_GRACE`], or answering a request that has not stalled); then it is closed.
/// Longer than [`HEAD_GRACE`], so that a slot held by a slow client always comes free in
/// time. The accept loop waits with it: others queue in the listen backlog, not refused.
const ADMIT_WAIT: Duration = Duration::from_millis(500);
/// While a new connection waits for a slot, how often it looks again for one to evict.
const ADMIT_RECHECK: Duration = Duration::from_millis(50);
/// How long a new connection waits for the one it evicted to close. That takes only a turn of
/// the victim's task; the bound is a backstop, generous so that a loaded machine does not
/// turn an eviction into a refusal.
const EVICTION_WAIT: Duration = Duration::from_secs(5);

/// Binds the address of the endpoints; done before anything is written, so that a taken port
/// fails the start with nothing written.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot serve metrics on {addr} (choose another --metrics-addr, or `off`)")
    })
}

/// Serves `/metrics`, `/healthz`, `/readyz` and `/livez` on `listener`; returns the bound
/// address.
///
/// * `/healthz` answers 200 while the process serves requests.
/// * `/livez` answers 200 while the scan loop makes progress, and 503 once it has shown none
///   for `--stall-timeout` beyond its wait for the next scan (a liveness probe: a restart
///   helps a stuck loop; a failing store is not stuck, its scans fail and are retried).
/// * `/readyz` answers 200 once state is loaded and the last scan succeeded, else 503 with the
///   last error (an unreachable store or missing watch directory shows here; not a probe for
///   a sidecar, whose readiness would take the emitter's Pod out of its Service).
///
/// Connections are capped (at most [`MAX_CONNECTIONS`], and one per eight descriptors of the
/// open-file limit), so that the endpoints never take the descriptors the scans need. Slow or
/// idle clients cannot starve the probes either, which kubelet sends on a fresh connection
/// each, with the whole request at once and a 1 s timeout:
///
/// * a connection gets [`HEAD_TIMEOUT`] for a whole request head, from its accept or from the
///   end of its previous response; bytes trickled meanwhile do not extend it;
/// * when every slot is taken, a new connection evicts the one that has waited longest for
///   its request head, once it has waited [`HEAD_GRACE`] (a response being written is never
///   cut, unless it has stalled for [`STALLED_AFTER`]), instead of being refused;
/// * a request being answered is closed after [`IDLE_TIMEOUT`] without progress, and every
///   connection after [`CONNECTION_LIFETIME`].
///
/// The connections closed so are counted in `gleaner_http_connections_rejected_total`, by
/// `reason`.
pub fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    health: Health,
) -> anyhow::Result<SocketAddr> {
    let bound = listener
        .local_addr()
        .context("reading the metrics address")?;
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness))
        .route("/livez", get(liveness))
        .with_state(Endpoints { metrics, health })
        // Outermost, and over the fallback too: every request marks its connection busy.
        .layer(axum::middleware::from_fn(track_answer));
    let open_files = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let capped = CappedListener {
        inner: listener,
        slots: Arc::new(Slots::new(connection_cap(open_files))),
    };
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<ConnectionSlot>();
        if let Err(e) = axum::serve(capped, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}

/// How many connections the endpoints take, under an open-file limit of `open_files`.
fn connection_cap(open_files: u64) -> usize {
    usize::try_from(open_files / 8)
        .unwrap_or(usize::MAX)
        .clamp(1, MAX_CONNECTIONS)
}

/// Connections the endpoints closed before their client did, by `reason`.
const HTTP_REJECTED: &str = "gleaner_http_connections_rejected_total";

/// Why the endpoints closed a connection: the `reason` label of [`HTTP_REJECTED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closed {
    /// Every slot was taken and none came free in time ([`ADMIT_WAIT`], or [`EVICTION_WAIT`]
    /// after an eviction): closed without an answer.
    Full,
    /// Closed to make room for a new connection: it had waited longest for its request head.
    Evicted,
    /// No whole request head within [`HEAD_TIMEOUT`].
    HeadTimeout,
    /// An idle keep-alive: answered, then nothing more within [`HEAD_TIMEOUT`]. Ordinary
    /// HTTP, not counted.
    KeepAliveEnded,
    /// A request being answered moved no byte for [`IDLE_TIMEOUT`].
    Stalled,
    /// Open for [`CONNECTION_LIFETIME`].
    Lifetime,
}

impl Closed {
    /// Every counted reason, registered at zero so that rates and alerts see them at once.
    const COUNTED: [Closed; 5] = [
        Closed::Full,
        Closed::Evicted,
        Closed::HeadTimeout,
        Closed::Stalled,
        Closed::Lifetime,
    ];

    /// The `reason` label, or `None` for a close that is not counted.
    fn label(self) -> Option<&'static str> {
        match self {
            Closed::Full => Some("full"),
            Closed::Evicted => Some("evicted"),
            Closed::HeadTimeout => Some("head_timeout"),
            Closed::KeepAliveEnded => None,
            Closed::Stalled => Some("stalled"),
            Closed::Lifetime => Some("lifetime"),
        }
    }

    fn count(self) {
        if let Some(reason) = self.label() {
            metrics::counter!(HTTP_REJECTED, "reason" => reason).increment(1);
        }
    }
}

/// What a connection is doing, as far as eviction and its deadline care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request head: since its accept, or since its last response was flushed.
    Head,
    /// Answering a request: from the parsed head until its response is flushed.
    Answering,
}

/// One open connection, as eviction sees it.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    phase: Phase,
    /// In [`Phase::Head`], when the wait for a head began; in [`Phase::Answering`], the
    /// answer's last progress.
    since: Instant,
    /// When the phase began.
    began: Instant,
}

/// The connection to evict among `candidates`, at `now`: the one that has waited longest for
/// its request head, once it has waited [`HEAD_GRACE`]; if none has, the answer that began
/// longest ago, once it stalled for [`STALLED_AFTER`] or has run [`ANSWER_EVICTABLE_AFTER`]
/// (a client that reads a byte now and then); else none. A probe sends its whole head at
/// once and reads its short answer at once, so it is never chosen while a slow client holds a
/// slot.
fn victim(candidates: &[Candidate], now: Instant) -> Option<usize> {
    let since = |at: Instant| now.saturating_duration_since(at);
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| match c.phase {
            Phase::Head => since(c.since) >= HEAD_GRACE,
            Phase::Answering => {
                since(c.since) >= STALLED_AFTER || since(c.began) >= ANSWER_EVICTABLE_AFTER
            }
        })
        .min_by_key(|(_, c)| (c.phase == Phase::Answering, c.began))
        .map(|(index, _)| index)
}

/// One connection's place among the capped ones: what it is doing, shared by its stream (the
/// bytes), the middleware (its requests) and the listener (eviction).
struct Slot(Mutex<SlotState>);

struct SlotState {
    phase: Phase,
    /// In [`Phase::Head`], when the wait began; in [`Phase::Answering`], the last progress.
    since: Instant,
    /// When the phase began.
    began: Instant,
    /// The handler has returned: the next completed flush ends the answer.
    responded: bool,
    /// A byte arrived since the wait for a head began (else a timeout only ends a keep-alive).
    head_started: bool,
    /// At least one request was answered on this connection.
    served: bool,
    evicted: bool,
    /// The task serving the connection, woken to close it when evicted.
    waker: Option<Waker>,
}

impl Slot {
    fn new(now: Instant) -> Self {
        Self(Mutex::new(SlotState {
            phase: Phase::Head,
            since: now,
            began: now,
            responded: false,
            head_started: false,
            served: false,
            evicted: false,
            waker: None,
        }))
    }

    fn state(&self) -> MutexGuard<'_, SlotState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request head was parsed: the connection answers it.
    fn answering(&self) {
        let mut state = self.state();
        state.phase = Phase::Answering;
        state.since = Instant::now();
        state.began = state.since;
        state.responded = false;
    }

    /// The handler returned its response; the stream ends the answer once it is flushed.
    fn responded(&self) {
        let mut state = self.state();
        state.responded = true;
        state.since = Instant::now();
    }

    /// Marks the connection evicted and wakes its task, which then fails its IO and closes.
    fn evict(&self) {
        let waker = {
            let mut state = self.state();
            state.evicted = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The slots of the open connections, and the permits that cap them.
struct Slots {
    permits: Arc<Semaphore>,
    open: Mutex<Vec<Arc<Slot>>>,
}

impl Slots {
    fn new(cap: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(cap)),
            open: Mutex::new(Vec::with_capacity(cap)),
        }
    }

    fn open(&self) -> MutexGuard<'_, Vec<Arc<Slot>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection: a free one, else one freed by evicting the [`victim`];
    /// when there is none to evict, waits up to [`ADMIT_WAIT`] for one to free or to become
    /// evictable, then gives up (`None`: the connection is closed, counted as `full`). The
    /// evicted connection is closed before its slot is reused (waited for up to
    /// [`EVICTION_WAIT`]), so the cap holds.
    async fn admit(&self) -> Option<(OwnedSemaphorePermit, Arc<Slot>)> {
        let mut give_up = Instant::now() + ADMIT_WAIT;
        let mut evicting = false;
        let permit = loop {
            if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
                break permit;
            }
            if !evicting && self.evict_one() {
                evicting = true;
                give_up = Instant::now() + EVICTION_WAIT;
            }
            let until = if evicting {
                give_up
            } else {
                give_up.min(Instant::now() + ADMIT_RECHECK)
            };
            let waited =
                tokio::time::timeout_at(until, Arc::clone(&self.permits).acquire_owned()).await;
            match waited {
                Ok(Ok(permit)) => break permit,
                // Never: the semaphore is not closed.
                Ok(Err(_)) => return None,
                Err(_) if Instant::now() >= give_up => return None,
                // Look again for a connection to evict.
                Err(_) => {}
            }
        };
        let slot = Arc::new(Slot::new(Instant::now()));
        self.open().push(Arc::clone(&slot));
        Some((permit, slot))
    }

    /// Evicts the [`victim`] among the open connections not evicted yet; whether there was one.
    fn evict_one(&self) -> bool {
        let open = self.open();
        let candidates: Vec<(usize, Candidate)> = open
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| {
                let state = slot.state();
                let candidate = Candidate {
                    phase: state.phase,
                    since: state.since,
                    began: state.began,
                };
                (!state.evicted).then_some((index, candidate))
            })
            .collect();
        let phases: Vec<Candidate> = candidates.iter().map(|(_, c)| *c).collect();
        let Some(chosen) = victim(&phases, Instant::now()) else {
            return false;
        };
        open[candidates[chosen].0].evict();
        Closed::Evicted.count();
        true
    }

    fn release(&self, slot: &Arc<Slot>) {
        self.open().retain(|open| !Arc::ptr_eq(open, slot));
    }
}

/// Accepts connections within the cap, evicting to make room (see [`Slots::admit`]).
struct CappedListener {
    inner: TcpListener,
    slots: Arc<Slots>,
}

impl axum::serve::Listener for CappedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (GuardedStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => match self.slots.admit().await {
                    Some((permit, slot)) => {
                        let stream = GuardedStream::new(stream, &self.slots, slot, permit);
                        return (stream, addr);
                    }
                    None => {
                        Closed::Full.count();
                        drop(stream);
                    }
                },
                // Out of descriptors (or a connection reset before it was accepted): wait
                // rather than spin; the scans come first.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// The slot of the connection a request came on, handed to [`track_answer`] as connect info.
#[derive(Clone)]
struct ConnectionSlot(Arc<Slot>);

impl Connected<IncomingStream<'_, CappedListener>> for ConnectionSlot {
    fn connect_info(stream: IncomingStream<'_, CappedListener>) -> Self {
        Self(Arc::clone(&stream.io().slot))
    }
}

/// Marks the connection of `request` as answering, from its parsed head until its handler
/// returns (the stream then waits for the flush): a connection answering a request is not
/// evicted unless its answer stalls, and its head deadline no longer runs.
async fn track_answer(request: Request, next: Next) -> Response {
    let slot = request
        .extensions()
        .get::<ConnectInfo<ConnectionSlot>>()
        .map(|info| Arc::clone(&info.0.0));
    if let Some(slot) = &slot {
        slot.answering();
    }
    let response = next.run(request).await;
    if let Some(slot) = &slot {
        slot.responded();
    }
    response
}

/// A connection that fails its IO once evicted, once its deadline passes (see [`serve`]), or
/// once older than [`CONNECTION_LIFETIME`]; it holds its slot and permit until dropped.
struct GuardedStream {
    inner: TcpStream,
    slot: Arc<Slot>,
    slots: Arc<Slots>,
    /// The next deadline: the head's, the answer's, or the lifetime's.
    deadline: Pin<Box<Sleep>>,
    end_of_life: Instant,
    /// Why it was closed, once it was: counted once, and every later poll fails alike.
    closed: Option<Closed>,
    _permit: OwnedSemaphorePermit,
}

impl GuardedStream {
    fn new(
        inner: TcpStream,
        slots: &Arc<Slots>,
        slot: Arc<Slot>,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        let end_of_life = Instant::now() + CONNECTION_LIFETIME;
        Self {
            inner,
            slot,
            slots: Arc::clone(slots),
            deadline: Box::pin(tokio::time::sleep_until(end_of_life)),
            end_of_life,
            closed: None,
            _permit: permit,
        }
    }

    /// Fails once the connection is evicted or a deadline has passed; otherwise arranges to
    /// be woken when the deadline passes or an eviction comes.
    fn check(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        if let Some(closed) = self.closed {
            return Err(closed_error(closed));
        }
        let (reason, at) = {
            let mut state = self.slot.state();
            if state.evicted {
                // Counted by the eviction.
                self.closed = Some(Closed::Evicted);
                return Err(closed_error(Closed::Evicted));
            }
            if !matches!(&state.waker, Some(waker) if waker.will_wake(cx.waker())) {
                state.waker = Some(cx.waker().clone());
            }
            match state.phase {
                Phase::Head if state.served && !state.head_started => {
                    (Closed::KeepAliveEnded, state.since + HEAD_TIMEOUT)
                }
                Phase::Head => (Closed::HeadTimeout, state.since + HEAD_TIMEOUT),
                Phase::Answering => (Closed::Stalled, state.since + IDLE_TIMEOUT),
            }
        };
        let (reason, at) = if self.end_of_life <= at {
            (Closed::Lifetime, self.end_of_life)
        } else {
            (reason, at)
        };
        if self.deadline.deadline() != at {
            self.deadline.as_mut().reset(at);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            reason.count();
            self.closed = Some(reason);
            return Err(closed_error(reason));
        }
        Ok(())
    }

    /// Bytes came in: the head has started; an answer made progress.
    fn received(&self) {
        let mut state = self.slot.state();
        match state.phase {
            Phase::Head => state.head_started = true,
            Phase::Answering => state.since = Instant::now(),
        }
    }

    /// Bytes went out: an answer made progress.
    fn sent(&self) {
        let mut state = self.slot.state();
        if state.phase == Phase::Answering {
            state.since = Instant::now();
        }
    }

    /// A flush completed: hyper flushes once its buffer is written, so after the handler
    /// returned the response is out, and the wait for the next head begins.
    fn flushed(&self) {
        let mut state = self.slot.state();
        if state.phase == Phase::Answering && state.responded {
            state.phase = Phase::Head;
            state.since = Instant::now();
            state.began = state.since;
            state.responded = false;
            state.head_started = false;
            state.served = true;
        }
    }
}

fn closed_error(closed: Closed) -> std::io::Error {
    let (kind, why) = match closed {
        Closed::Evicted => (
            std::io::ErrorKind::ConnectionAborted,
            "metrics connection evicted to make room for a new one",
        ),
        _ => (
            std::io::ErrorKind::TimedOut,
            "metrics connection too slow, idle or too old",
        ),
    };
    std::io::Error::new(kind, why)
}

impl Drop for GuardedStream {
    fn drop(&mut self) {
        // Before the permit goes (a field, dropped after this): the slot is gone by the time
        // the listener can take the permit for another connection.
        self.slots.release(&self.slot);
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.received();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if written > 0 {
            this.sent();
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.flushed();
        // The wait for the next head starts now and ends sooner than the answer's deadline
        // armed before: arm it, or an idle keep-alive would be woken only at the old one.
        this.check(cx)?;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The process metrics (CPU, memory, descriptors, threads, start time), read from /proc at
/// each scrape.
static PROCESS: std::sync::LazyLock<metrics_process::Collector> =
    std::sync::LazyLock::new(metrics_process::Collector::default);

async fn render_metrics(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    PROCESS.collect();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        endpoints.metrics.render(),
    )
}

async fn readiness(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    let status = endpoints.health.status();
    if status.ready {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        let why = status
            .last_error
            .unwrap_or_else(|| "no scan has completed yet".into());
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
    }
}

async fn liveness(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    let live = endpoints.health.liveness();
    let since = humantime::format_duration(whole_seconds(live.since_progress));
    match live.stalled_for {
        None => (
            StatusCode::OK,
            format!("alive: {}, last progress {since} ago\n", live.phase),
        ),
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "stalled: no progress for {since} while {} (--stall-timeout {})\n",
                live.phase,
                humantime::format_duration(live.stall_timeout)
            ),
        ),
    }
}

fn whole_seconds(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_descriptors_to_the_scans() {
        assert_eq!(connection_cap(64), 8);
        assert_eq!(connection_cap(32), 4);
        assert_eq!(connection_cap(4), 1);
        assert_eq!(connection_cap(1 << 20), MAX_CONNECTIONS);
    }

    /// A connection in `phase` since `at` (for an answer, its last progress too).
    fn c(phase: Phase, at: Instant) -> Candidate {
        Candidate {
            phase,
            since: at,
            began: at,
        }
    }

    #[test]
    fn a_slow_reader_is_evicted_once_its_answer_has_run_too_long() {
        let now = Instant::now();
        let ago = |ms: u64| now - Duration::from_millis(ms);
        // Answers that began 1.5 s and 2.5 s ago, their clients reading a byte just now.
        let reading = |began: u64| Candidate {
            phase: Phase::Answering,
            since: ago(0),
            began: ago(began),
        };
        assert_eq!(victim(&[reading(1500)], now), None, "not long enough");
        assert_eq!(victim(&[reading(1500), reading(2500)], now), Some(1));
        // A connection waiting for its head still goes first.
        assert_eq!(
            victim(&[reading(2500), c(Phase::Head, ago(300))], now),
            Some(1)
        );
    }

    #[test]
    fn the_victim_is_the_connection_that_waited_longest_for_its_head() {
        let now = Instant::now();
        let ago = |ms: u64| now - Duration::from_millis(ms);
        // Slow clients waiting 1.9 s, 0.4 s and 1.2 s, and a probe whose head just came.
        let open = [
            c(Phase::Head, ago(1900)),
            c(Phase::Head, ago(400)),
            c(Phase::Answering, ago(0)),
            c(Phase::Head, ago(1200)),
        ];
        assert_eq!(victim(&open, now), Some(0));
        // A response being written is not cut while a connection waits for its head, even
        // one stalled far longer.
        let open = [c(Phase::Answering, ago(4000)), c(Phase::Head, ago(300))];
        assert_eq!(victim(&open, now), Some(1));
    }

    #[test]
    fn a_connection_is_not_evicted_before_its_head_could_be_read() {
        let now = Instant::now();
        let ago = |ms: u64| now - Duration::from_millis(ms);
        // Slow clients that reconnected at once, and a probe accepted just before them.
        let fresh = [
            c(Phase::Head, ago(3)),
            c(Phase::Head, ago(1)),
            c(Phase::Head, ago(0)),
        ];
        assert_eq!(victim(&fresh, now), None);
        let grace = HEAD_GRACE.as_millis() as u64;
        let aged = [c(Phase::Head, ago(grace - 1)), c(Phase::Head, ago(grace))];
        assert_eq!(victim(&aged, now), Some(1));
        // A stalled answer goes before a connection still within its grace.
        let open = [c(Phase::Head, ago(10)), c(Phase::Answering, ago(1500))];
        assert_eq!(victim(&open, now), Some(1));
    }

    #[test]
    fn a_response_is_evicted_only_once_stalled_and_nothing_waits_for_a_head() {
        let now = Instant::now();
        let ago = |ms: u64| now - Duration::from_millis(ms);
        let answering = [c(Phase::Answering, ago(10)), c(Phase::Answering, ago(900))];
        assert_eq!(victim(&answering, now), None, "no answer has stalled");
        let stalled = [
            c(Phase::Answering, ago(1500)),
            c(Phase::Answering, ago(10)),
            c(Phase::Answering, ago(3000)),
        ];
        assert_eq!(victim(&stalled, now), Some(2), "the longest stalled");
        assert_eq!(victim(&[], now), None);
    }
}
