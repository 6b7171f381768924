//! The capability probe of `sys delay`: a scratch datapath delays one call of a thread of
//! the agent's own and checks that the marker reaches that thread (caps.rs reports it).

use std::{sync::mpsc, time::Duration};

use faultline_common::delay::{DELAY_SIGNAL, DelayRule};

use super::datapath::{
    DelayDatapath, DelayTarget, ExitHook, LoadOptions, NR_PROBE, syscall_bitmap,
};
use crate::engine::error::chain;

/// What the capability probe learned about the delay datapath on this kernel.
#[derive(Clone, Debug)]
pub struct DelayProbe {
    /// "delay_exit_hook": the form of the exit program that attaches, or why none does.
    pub exit_hook: std::result::Result<ExitHook, String>,
    /// "send_signal_thread": a call of a seized thread got the marker from the exit program.
    pub send_signal_thread: std::result::Result<String, String>,
    /// "delay_path_walk": path prefixes can be matched (the file offsets from BTF), or why not.
    pub path_walk: std::result::Result<(), String>,
    /// Why fexit on the system call functions was refused, where sys_exit is used.
    pub fexit_refused: Option<String>,
}

/// Learns by doing: a scratch instance delays getpgid(0) of one thread of this process (which
/// blocks the marker, so it stays pending), the thread calls getpgid(0), and takes the marker
/// with sigtimedwait. The exit program is attached for well under a second.
pub fn probe() -> DelayProbe {
    let opts = LoadOptions { agent_tgid: 0, check_blocked: false, debug: false };
    let mut dp = match DelayDatapath::load_with(&opts) {
        Ok(dp) => dp,
        Err(e) => {
            let why = format!("eBPF object: {}", chain(&e));
            return DelayProbe {
                exit_hook: Err(why.clone()),
                send_signal_thread: Err(why.clone()),
                path_walk: Err(why),
                fexit_refused: None,
            };
        }
    };
    let rule = DelayRule {
        syscalls: syscall_bitmap(&[NR_PROBE]).unwrap_or_default(),
        latency_ns: 1,
        jitter_ns: 0,
        threshold: faultline_common::delay::DELAY_PROB_ONE,
        every_nth: 0,
        max_hits: 0,
        expires_ns: u64::MAX,
        flags: 0,
        path_dev: 0,
        path_ino: 0,
    };
    let target = DelayTarget::Pid { tgid: std::process::id(), follow: false };
    let slot = match dp.add_rule(target, rule, None) {
        Ok(s) => s,
        Err(e) => {
            let why = chain(&e);
            return DelayProbe {
                exit_hook: Err(why.clone()),
                send_signal_thread: Err(why.clone()),
                path_walk: Err(why),
                fexit_refused: None,
            };
        }
    };
    let exit_hook = dp.hook().ok_or_else(|| "not attached".to_string());
    let signalled = signal_round(&mut dp);
    let _ = dp.remove_rule(slot);
    DelayProbe {
        exit_hook,
        send_signal_thread: signalled,
        path_walk: dp.paths.clone(),
        fexit_refused: dp.fexit_refused().map(str::to_string),
    }
}

/// One seized thread's getpgid(0), and whether the marker reached that thread.
fn signal_round(dp: &mut DelayDatapath) -> std::result::Result<String, String> {
    let (tid_tx, tid_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let worker = std::thread::Builder::new()
        .name("fl-delay-probe".into())
        .spawn(move || -> std::result::Result<(), String> {
            // SAFETY: sigset manipulation on locals; pthread_sigmask on this thread only.
            let set = unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, DELAY_SIGNAL as i32);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                set
            };
            // SAFETY: gettid has no arguments.
            let tid = unsafe { libc::gettid() } as u32;
            tid_tx.send(tid).map_err(|e| e.to_string())?;
            go_rx.recv().map_err(|e| e.to_string())?;
            // SAFETY: getpgid(0) reads this process's group; through syscall(2), no cache.
            unsafe { libc::syscall(libc::SYS_getpgid, 0) };
            let timeout = libc::timespec { tv_sec: 0, tv_nsec: 200_000_000 };
            // SAFETY: waits for the blocked signal on this thread, with a timeout.
            let got = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
            if got == DELAY_SIGNAL as i32 {
                Ok(())
            } else {
                Err(format!(
                    "no marker signal after a chosen call ({})",
                    std::io::Error::last_os_error()
                ))
            }
        })
        .map_err(|e| format!("spawning the probe thread: {e}"))?;
    (|| {
        let tid = tid_rx.recv_timeout(Duration::from_secs(2)).map_err(|e| e.to_string())?;
        dp.threads().seize(tid).map_err(|e| chain(&e))?;
        go_tx.send(()).map_err(|e| e.to_string())?;
        let r = worker.join().map_err(|_| "the probe thread panicked".to_string())?;
        let arm = dp.threads().take_armed(tid).map_err(|e| chain(&e))?;
        dp.threads().release(tid);
        r?;
        match arm {
            Some(a) if a.syscall == NR_PROBE => {
                Ok("bpf_send_signal_thread at sys_exit signalled the chosen thread".to_string())
            }
            other => Err(format!("the marker came but the armed entry is {other:?}")),
        }
    })()
}
