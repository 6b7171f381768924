//! A helper process of the agent driven over a line protocol (the delay tracer, the time
//! skewer): started through the spawner (PDEATHSIG), its fd 0 one end of a socketpair. It
//! says `ready` once set up; then each request line gets exactly one reply line: `ok [REST]`,
//! `refused WHY` (the request cannot be done: WHY is for the user), `error WHY`.
//! End of file on its fd 0 asks it to undo everything and exit.

use std::{
    io::{self, BufRead as _, BufReader, Write as _},
    os::{fd::OwnedFd, unix::net::UnixStream},
    process::Child,
    time::{Duration, Instant},
};

use super::spawn;

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("starting the helper process")]
    Spawn(#[source] io::Error),
    #[error("talking to the helper process")]
    Io(#[source] io::Error),
    #[error("the helper process ended")]
    Closed,
    /// The request cannot be done; the reason names why (`PID: traced by 1234 (strace)`).
    #[error("refused: {0}")]
    Refused(String),
    #[error("helper process: {0}")]
    Failed(String),
    #[error("helper process: unexpected reply {0:?}")]
    Protocol(String),
}

pub struct Helper {
    child: Option<Child>,
    ctl: BufReader<UnixStream>,
}

impl Helper {
    /// Starts `faultline ARGS...` as a child of the agent (PDEATHSIG SIGTERM), with the
    /// descriptors `keep` inherited, and waits for its `ready`.
    pub fn spawn(args: Vec<String>, keep: Vec<i32>) -> Result<Helper, HelperError> {
        let (ours, theirs) = UnixStream::pair().map_err(HelperError::Spawn)?;
        let child = spawn::spawn(spawn::Spec {
            args,
            procs: Vec::new(),
            shm_fd: None,
            oom_score_adj: None,
            death_signal: libc::SIGTERM,
            stdin: Some(OwnedFd::from(theirs)),
            keep_fds: keep,
        })
        .map_err(HelperError::Spawn)?;
        let mut h = Helper::over(child, ours)?;
        match h.reply()?.as_str() {
            "ready" => Ok(h),
            other => Err(HelperError::Protocol(other.into())),
        }
    }

    /// The client over an already started process and its channel.
    pub fn over(child: Child, ctl: UnixStream) -> Result<Helper, HelperError> {
        ctl.set_read_timeout(Some(Duration::from_secs(30))).map_err(HelperError::Io)?;
        Ok(Helper { child: Some(child), ctl: BufReader::new(ctl) })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends one request; its reply after `ok` (an empty string for a bare `ok`).
    pub fn request(&mut self, line: &str) -> Result<String, HelperError> {
        self.ctl.get_mut().write_all(format!("{line}\n").as_bytes()).map_err(HelperError::Io)?;
        let reply = self.reply()?;
        if reply == "ok" {
            return Ok(String::new());
        }
        if let Some(rest) = reply.strip_prefix("ok ") {
            return Ok(rest.into());
        }
        if let Some(rest) = reply.strip_prefix("refused ") {
            return Err(HelperError::Refused(rest.into()));
        }
        if let Some(rest) = reply.strip_prefix("error ") {
            return Err(HelperError::Failed(rest.into()));
        }
        Err(HelperError::Protocol(reply))
    }

    /// Sends `stop` and waits for the process to exit.
    pub fn stop(mut self) -> Result<(), HelperError> {
        self.request("stop")?;
        if let Some(mut c) = self.child.take() {
            c.wait().map_err(HelperError::Io)?;
        }
        Ok(())
    }

    fn reply(&mut self) -> Result<String, HelperError> {
        let mut line = String::new();
        match self.ctl.read_line(&mut line) {
            Ok(0) => Err(HelperError::Closed),
            Ok(_) => Ok(line.trim_end().to_string()),
            Err(e) => Err(HelperError::Io(e)),
        }
    }
}

impl Drop for Helper {
    /// Closing the channel makes the helper undo everything and exit; it is given 3 s before
    /// it is killed.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = self.ctl.get_ref().shutdown(std::net::Shutdown::Both);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
