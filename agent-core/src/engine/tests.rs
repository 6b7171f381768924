//! The engine against a fake driver: lifecycle, deadlines, cancel, bounds, shutdown.

use std::{
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::Duration,
};

use super::*;
use crate::testutil::TempDir;
use model::{FaultSpec, NetLoss, TargetSpec};

/// How the fake driver's apply ends.
#[derive(Clone, Copy, Default, PartialEq)]
enum Apply {
    #[default]
    Works,
    /// The kernel lacks what the fault needs (FailedPrecondition).
    Refused,
    /// The agent failed at it (Internal).
    Fails,
}

/// Counts live faults; fails when asked to.
#[derive(Default)]
struct FakeDriver {
    live: Arc<AtomicUsize>,
    /// How long apply takes before it answers.
    slow: Duration,
    /// The kernel deadline last given, at apply or by a lease's renewal.
    last_expiry: Arc<AtomicU64>,
    fail: Apply,
}

struct FakeHandle(Arc<AtomicUsize>, Arc<AtomicU64>);

impl FaultHandle for FakeHandle {
    fn extend(&self, expires: u64) -> std::result::Result<(), String> {
        self.1.store(expires, Ordering::SeqCst);
        Ok(())
    }
    fn backend(&self) -> &'static str {
        "fake"
    }
    fn counters(&self) -> Counters {
        Counters { packets_matched: 10, packets_dropped: 3, ..Default::default() }
    }
}

impl Drop for FakeHandle {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FaultDriver for FakeDriver {
    fn apply(&self, _: &Resolved, _: &FaultSpec, expires: u64) -> Result<Box<dyn FaultHandle>> {
        std::thread::sleep(self.slow);
        match self.fail {
            Apply::Works => {}
            Apply::Refused => return Err(Error::FailedPrecondition("unsupported: test".into())),
            Apply::Fails => return Err(Error::Internal("applying: test".into())),
        }
        self.last_expiry.store(expires, Ordering::SeqCst);
        self.live.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(FakeHandle(self.live.clone(), self.last_expiry.clone())))
    }
}

fn setup() -> (TempDir, Arc<FakeDriver>, Arc<Engine>) {
    setup_with(Apply::Works, false)
}

/// With `journal`, experiments are journaled under the temp dir's `state`.
fn setup_with(fail: Apply, journal: bool) -> (TempDir, Arc<FakeDriver>, Arc<Engine>) {
    let d = TempDir::new();
    let driver = Arc::new(FakeDriver { fail, ..Default::default() });
    let engine = engine_on(&d, driver.clone(), journal);
    (d, driver, engine)
}

/// An engine on `d`'s cgroups (and journal, with `journal`), as a restarted agent would be.
fn engine_on(d: &TempDir, driver: Arc<FakeDriver>, journal: bool) -> Arc<Engine> {
    let mount = d.cgroups(&["app"]);
    let resolver = Resolver::new(mount, d.path().join("proc"), "/".into(), 1);
    let journal = journal.then(|| journal::Journal::new(&d.path().join("state")));
    Engine::new(driver, resolver, Policy::default(), journal)
}

/// The files in the journal's directory of experiments.
fn journaled(d: &TempDir) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(d.path().join("state/experiments"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn spec(ms: u64, label: &str) -> ExperimentSpec {
    ExperimentSpec {
        target: TargetSpec::CgroupPath("/app".into()),
        fault: FaultSpec::NetLoss(NetLoss {
            filter: Default::default(),
            percent: 10.0,
            model: model::LossModel::Random,
            seed: None,
        }),
        duration: Duration::from_millis(ms),
        labels: BTreeMap::from([("drill".to_string(), label.to_string())]),
        lease: None,
        stop: Vec::new(),
        expect_hit_within: model::DEFAULT_EXPECT_HIT_WITHIN,
        follow: false,
    }
}

#[tokio::test]
async fn expires_at_the_deadline_and_keeps_final_counters() {
    let (_d, driver, engine) = setup();
    let mut events = engine.subscribe();
    let before = monotonic_ns();
    let s = engine.inject(spec(100, "a")).await.unwrap();
    assert_eq!(s.state, State::Active);
    assert_eq!(s.backend, "fake");
    // The kernel expiry is the same deadline, on the monotonic clock.
    let exp = driver.last_expiry.load(Ordering::SeqCst);
    assert!(exp >= before + 100_000_000 && exp < monotonic_ns() + 100_000_000);
    assert_eq!(driver.live.load(Ordering::SeqCst), 1);
    let mut seen = Vec::new();
    while let Ok(Ok(ev)) = tokio::time::timeout(Duration::from_secs(2), events.recv()).await {
        if ev.kind != EventKind::State {
            continue;
        }
        let ev = ev.snap;
        seen.push(ev.state);
        if ev.state == State::Expired {
            assert_eq!(ev.counters.packets_dropped, 3);
            break;
        }
    }
    assert_eq!(seen, vec![State::Pending, State::Active, State::Expired]);
    assert_eq!(driver.live.load(Ordering::SeqCst), 0, "handle not dropped at expiry");
    let got = engine.get(&s.id).await.unwrap();
    assert_eq!((got.state, got.counters.packets_matched), (State::Expired, 10));
}

#[tokio::test]
async fn cancel_reverts_once_and_is_idempotent() {
    let (_d, driver, engine) = setup();
    let s = engine.inject(spec(60_000, "a")).await.unwrap();
    let c = engine.cancel(&s.id).await.unwrap();
    assert_eq!(c.state, State::Cancelled);
    assert_eq!(driver.live.load(Ordering::SeqCst), 0);
    assert_eq!(engine.cancel(&s.id).await.unwrap().state, State::Cancelled);
    assert!(matches!(engine.cancel("nope").await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn a_refusal_at_apply_time_leaves_no_record_no_event_and_no_journal_entry() {
    let (d, driver, engine) = setup_with(Apply::Refused, true);
    let mut events = engine.subscribe();
    let err = engine.inject(spec(1000, "a")).await.unwrap_err();
    assert!(matches!(&err, Error::FailedPrecondition(m) if m.contains("unsupported")), "{err}");
    assert!(engine.list(&ListFilter::default()).await.is_empty(), "a refusal was recorded");
    assert!(matches!(events.try_recv(), Err(broadcast::error::TryRecvError::Empty)));
    assert_eq!(journaled(&d), Vec::<std::path::PathBuf>::new());
    assert_eq!(driver.live.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_failure_of_the_agent_at_apply_time_is_recorded_and_returned() {
    let (d, _driver, engine) = setup_with(Apply::Fails, true);
    let mut events = engine.subscribe();
    let err = engine.inject(spec(1000, "a")).await.unwrap_err();
    assert!(matches!(err, Error::Internal(_)));
    let all = engine.list(&ListFilter::default()).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state, State::Failed);
    assert!(all[0].reason.contains("applying: test"));
    let states: Vec<State> =
        std::iter::from_fn(|| events.try_recv().ok()).map(|e| e.snap.state).collect();
    assert_eq!(states, [State::Pending, State::Failed]);
    assert_eq!(journaled(&d), Vec::<std::path::PathBuf>::new());
}

#[tokio::test]
async fn unresolvable_target_records_nothing() {
    let (_d, driver, engine) = setup();
    let mut s = spec(1000, "a");
    s.target = TargetSpec::CgroupPath("/missing".into());
    assert!(matches!(engine.inject(s).await, Err(Error::NotFound(_))));
    assert!(engine.list(&ListFilter::default()).await.is_empty());
    assert_eq!(driver.live.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn ended_experiments_are_kept_up_to_the_bound() {
    let (_d, driver, engine) = setup();
    let mut first = None;
    for _ in 0..KEEP_ENDED + 5 {
        let s = engine.inject(spec(60_000, "a")).await.unwrap();
        first.get_or_insert(s.id.clone());
        engine.cancel(&s.id).await.unwrap();
    }
    let live = engine.inject(spec(60_000, "b")).await.unwrap();
    let all = engine.list(&ListFilter::default()).await;
    assert_eq!(all.len(), KEEP_ENDED + 1, "the ended beyond the bound stay");
    assert!(all.iter().any(|s| s.id == live.id), "an active one was dropped");
    assert!(matches!(engine.get(&first.unwrap()).await, Err(Error::NotFound(_))));
    assert_eq!(driver.live.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn shutdown_cancels_everything_and_lists_filter() {
    let (_d, driver, engine) = setup();
    engine.inject(spec(60_000, "a")).await.unwrap();
    engine.inject(spec(60_000, "b")).await.unwrap();
    let only_b =
        ListFilter { labels: BTreeMap::from([("drill".into(), "b".into())]), ..Default::default() };
    assert_eq!(engine.list(&only_b).await.len(), 1);
    engine.shutdown().await;
    assert_eq!(driver.live.load(Ordering::SeqCst), 0);
    let cancelled = ListFilter { states: vec![State::Cancelled], ..Default::default() };
    let list = engine.list(&cancelled).await;
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|s| s.reason == "agent shutting down"));
}

/// How far ahead of now a kernel deadline is.
fn ahead(mono_ns: u64) -> Duration {
    Duration::from_nanos(mono_ns.saturating_sub(super::driver::monotonic_ns()))
}

#[tokio::test]
async fn a_lease_not_renewed_ends_the_experiment_and_bounds_the_kernel_deadline() {
    let (_d, driver, engine) = setup();
    let mut s = spec(60_000, "leased");
    s.lease = Some(Duration::from_millis(1000));
    let snap = engine.inject(s).await.unwrap();
    assert_eq!(snap.state, State::Active);
    assert!(snap.lease_expires.is_some());
    // The kernel's deadline is the lease's end, not the experiment's.
    let first = ahead(driver.last_expiry.load(Ordering::SeqCst));
    assert!(
        first <= Duration::from_millis(1000) && first > Duration::from_millis(800),
        "{first:?}"
    );
    tokio::time::sleep(Duration::from_millis(1400)).await;
    let e = engine.get(&snap.id).await.unwrap();
    assert_eq!(e.state, State::Failed, "{e:?}");
    assert!(e.reason.starts_with("lease expired"), "{}", e.reason);
    assert_eq!(driver.live.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn renewing_a_lease_keeps_the_experiment_and_moves_the_kernel_deadline() {
    let (_d, driver, engine) = setup();
    let mut s = spec(60_000, "renewed");
    s.lease = Some(Duration::from_millis(1000));
    let snap = engine.inject(s).await.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = engine.renew(&snap.id).await.unwrap();
        assert_eq!(r.state, State::Active);
        let k = ahead(driver.last_expiry.load(Ordering::SeqCst));
        assert!(k > Duration::from_millis(800), "the kernel deadline did not move: {k:?}");
    }
    // Two seconds in, past its first lease: still active.
    assert_eq!(engine.get(&snap.id).await.unwrap().state, State::Active);
    // Without a lease, or once ended, there is nothing to renew.
    let plain = engine.inject(spec(60_000, "plain")).await.unwrap();
    assert!(matches!(engine.renew(&plain.id).await, Err(Error::FailedPrecondition(_))));
    engine.cancel(&snap.id).await.unwrap();
    assert!(matches!(engine.renew(&snap.id).await, Err(Error::FailedPrecondition(_))));
    assert!(matches!(engine.renew("ffffffffffff").await, Err(Error::NotFound(_))));
}

/// Found by the crash campaign: an experiment resumed with less time left than applying it
/// takes failed ("the fault's time ran out while it was being applied"). Its time was up: it
/// expired.
#[tokio::test]
async fn a_resumed_experiment_whose_deadline_comes_while_it_is_applied_expires() {
    let (d, _driver, engine) = setup_with(Apply::Works, true);
    let snap = engine.inject(spec(60_000, "short")).await.unwrap();
    let store =
        crate::store::Store::<faultline_proto::v1::Experiment>::new(&d.path().join("state"));
    let mut record = store.replay().records.pop().expect("journaled");
    assert_eq!(record.id, snap.id);
    // The agent died; the record says 100 ms are left, and applying takes 300 ms and fails.
    record.deadline = Some(crate::wire::convert::timestamp(
        std::time::SystemTime::now() + Duration::from_millis(100),
    ));
    let slow = Arc::new(FakeDriver {
        fail: Apply::Fails,
        slow: Duration::from_millis(300),
        ..Default::default()
    });
    let restarted = engine_on(&d, slow, true);
    restarted.recover(vec![record], true).await;
    let e = restarted.get(&snap.id).await.unwrap();
    assert_eq!(e.state, State::Expired, "{e:?}");
    assert!(e.reason.contains("deadline came while it was being resumed"), "{}", e.reason);
}

const CONTAINER: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

/// A Docker container's cgroup under `d`'s mount (made by `engine_on`).
fn container_dir(d: &TempDir) -> std::path::PathBuf {
    d.path().join("cg/docker").join(CONTAINER)
}

fn followed_spec(ms: u64) -> ExperimentSpec {
    ExperimentSpec {
        target: TargetSpec::Container(CONTAINER[..12].into()),
        follow: true,
        ..spec(ms, "follow")
    }
}

/// What a runtime's restart does: the container's cgroup goes, a new directory (a new inode,
/// made before the old one goes so the inode cannot be reused) takes its path.
fn restart_container(d: &TempDir) {
    let next = d.path().join("cg/docker/next");
    std::fs::create_dir_all(&next).unwrap();
    std::fs::write(next.join("cgroup.procs"), "").unwrap();
    std::fs::remove_dir_all(container_dir(d)).unwrap();
    std::fs::rename(&next, container_dir(d)).unwrap();
}

fn inode(p: &std::path::Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap())
}

#[tokio::test]
async fn a_followed_container_that_restarts_gets_the_fault_again() {
    let (d, driver, engine) = setup_with(Apply::Works, true);
    d.cgroups(&[&format!("docker/{CONTAINER}")]);
    let mut events = engine.subscribe();
    let s = engine.inject(followed_spec(60_000)).await.unwrap();
    restart_container(&d);
    let new_id = inode(&container_dir(&d));
    let ev = loop {
        let ev =
            tokio::time::timeout(Duration::from_secs(3), events.recv()).await.unwrap().unwrap();
        if ev.kind == EventKind::Followed {
            break ev.snap;
        }
    };
    assert_eq!((ev.state, ev.followed), (State::Active, 1));
    let Some(Resolved::Cgroup(cg)) = &ev.resolved else { panic!("{ev:?}") };
    assert_eq!((cg.id, cg.container_id.as_deref()), (new_id, Some(CONTAINER)));
    // One fault in effect, the old one's counts carried over; the kernel deadline unchanged.
    assert_eq!(driver.live.load(Ordering::SeqCst), 1);
    let got = engine.get(&s.id).await.unwrap();
    assert_eq!((got.followed, got.counters.packets_matched, got.note.as_str()), (1, 20, ""));
    assert!(ahead(driver.last_expiry.load(Ordering::SeqCst)) > Duration::from_secs(55));
    // Journaled on the successor: a restarted agent resumes there.
    let store =
        crate::store::Store::<faultline_proto::v1::Experiment>::new(&d.path().join("state"));
    let record = store.replay().records.pop().expect("journaled");
    assert_eq!((record.followed, record.resolved_target.unwrap().cgroup_id), (1, new_id));
    let end = engine.cancel(&s.id).await.unwrap();
    assert_eq!((end.state, end.counters.packets_matched), (State::Cancelled, 20));
    assert_eq!(driver.live.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_followed_container_not_back_yet_waits_until_the_deadline() {
    let (d, driver, engine) = setup();
    d.cgroups(&[&format!("docker/{CONTAINER}")]);
    let s = engine.inject(followed_spec(1500)).await.unwrap();
    std::fs::remove_dir_all(container_dir(&d)).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = engine.get(&s.id).await.unwrap();
    assert_eq!((e.state, e.followed), (State::Active, 0));
    assert!(e.note.starts_with("waiting for the container to come back"), "{}", e.note);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let e = engine.get(&s.id).await.unwrap();
    assert_eq!(e.state, State::Expired, "{e:?}");
    assert_eq!(driver.live.load(Ordering::SeqCst), 0);
    // A kill sent once is not carried over: its container going is how it ends.
    d.cgroups(&[&format!("docker/{CONTAINER}")]);
    let once = ExperimentSpec {
        fault: FaultSpec::ProcessKill(model::ProcessKill {
            signal: 9,
            mode: model::KillMode::All,
            interval: None,
        }),
        ..followed_spec(60_000)
    };
    let s = engine.inject(once).await.unwrap();
    restart_container(&d);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = engine.get(&s.id).await.unwrap();
    assert_eq!((e.state, e.followed), (State::Expired, 0), "{e:?}");
    assert!(e.reason.starts_with("target gone"), "{}", e.reason);
}

#[tokio::test]
async fn a_followed_container_restarted_while_the_agent_was_down_is_resumed_on() {
    let (d, _driver, engine) = setup_with(Apply::Works, true);
    d.cgroups(&[&format!("docker/{CONTAINER}")]);
    let snap = engine.inject(followed_spec(60_000)).await.unwrap();
    let store =
        crate::store::Store::<faultline_proto::v1::Experiment>::new(&d.path().join("state"));
    let record = store.replay().records.pop().expect("journaled");
    restart_container(&d);
    let restarted = engine_on(&d, Arc::new(FakeDriver::default()), true);
    restarted.recover(vec![record], true).await;
    let e = restarted.get(&snap.id).await.unwrap();
    assert_eq!((e.state, e.followed), (State::Active, 1), "{e:?}");
    let Some(Resolved::Cgroup(cg)) = &e.resolved else { panic!("{e:?}") };
    assert_eq!(cg.id, inode(&container_dir(&d)));
}
