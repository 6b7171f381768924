//! Which tests may share the host. The integration tests of one binary run side by side (two
//! at a time on a two-core machine); most touch only the cgroups, namespaces and agents they
//! create. A few measure or change the whole host: the stress tests read the CPU, memory and
//! disk of the machine's share, the host target attaches to the root cgroup, the load test
//! measures the agent's CPU and latency, and the delay, bandwidth and reject tests measure
//! time to a few milliseconds (a neighbour starting an agent takes the one vCPU of a VM
//! guest for seconds). Those call [`alone`], which waits until no other
//! test holds an agent and keeps other tests from starting one until it is done; every
//! [`crate::Agent`] holds a [`Shared`] turn.
//!
//! A test thread that already holds a turn (a second agent in the same test, or the agents
//! of a test that runs alone) takes another at once, so a test never waits on itself.

use std::{
    collections::HashMap,
    sync::{Condvar, Mutex, MutexGuard},
    thread::ThreadId,
};

#[derive(Default)]
struct State {
    /// Shared turns held, per thread.
    shared: HashMap<ThreadId, usize>,
    /// The thread running alone.
    alone: Option<ThreadId>,
    /// Tests waiting to run alone: new shared turns wait behind them.
    waiting: usize,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);
static CHANGED: Condvar = Condvar::new();

fn lock() -> MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

fn wait(g: MutexGuard<'static, Option<State>>) -> MutexGuard<'static, Option<State>> {
    CHANGED.wait(g).unwrap_or_else(|p| p.into_inner())
}

/// A turn among the tests that share the host; released on drop.
pub struct Shared {
    thread: ThreadId,
}

/// Takes a shared turn: at once if this thread runs alone or already holds one, otherwise
/// after the tests that run alone (running or waiting).
pub fn shared() -> Shared {
    let me = std::thread::current().id();
    let mut g = lock();
    loop {
        let s = g.get_or_insert_with(State::default);
        let mine = s.alone == Some(me) || s.shared.contains_key(&me);
        if mine || (s.alone.is_none() && s.waiting == 0) {
            *s.shared.entry(me).or_default() += 1;
            return Shared { thread: me };
        }
        g = wait(g);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let mut g = lock();
        if let Some(s) = g.as_mut()
            && let Some(n) = s.shared.get_mut(&self.thread)
        {
            *n -= 1;
            if *n == 0 {
                s.shared.remove(&self.thread);
            }
        }
        CHANGED.notify_all();
    }
}

/// The host to this test alone; released on drop.
pub struct Alone {
    thread: ThreadId,
}

/// Waits until no other test holds a turn, then keeps the host for this test.
pub fn alone() -> Alone {
    let me = std::thread::current().id();
    let mut g = lock();
    g.get_or_insert_with(State::default).waiting += 1;
    loop {
        let s = g.get_or_insert_with(State::default);
        let others = s.shared.keys().any(|t| *t != me);
        if s.alone.is_none() && !others {
            s.waiting -= 1;
            s.alone = Some(me);
            return Alone { thread: me };
        }
        g = wait(g);
    }
}

impl Drop for Alone {
    fn drop(&mut self) {
        let mut g = lock();
        if let Some(s) = g.as_mut()
            && s.alone == Some(self.thread)
        {
            s.alone = None;
        }
        CHANGED.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::mpsc,
        time::{Duration, Instant},
    };

    use super::*;

    #[test]
    fn alone_waits_for_the_others_turns_and_holds_new_ones_back() {
        let held = shared();
        let (tx, rx) = mpsc::channel();
        let other = std::thread::spawn(move || {
            let _alone = alone();
            tx.send("alone").unwrap();
            // Its own agents take their turns at once.
            let _agent = shared();
            std::thread::sleep(Duration::from_millis(300));
            tx.send("done").unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "ran next to a turn");
        // A second turn of a thread that holds one does not wait behind the waiting test.
        drop(shared());
        drop(held);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok("alone"));
        let t0 = Instant::now();
        let _turn = shared();
        assert_eq!(rx.try_recv(), Ok("done"), "a turn was given while a test ran alone");
        assert!(t0.elapsed() >= Duration::from_millis(200), "{:?}", t0.elapsed());
        other.join().unwrap();
    }
}
