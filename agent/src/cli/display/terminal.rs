//! The terminal of the live views: its size, the alternate screen, and the signals that end
//! or pause a view. Whatever way the view ends (return, error, panic, Ctrl-C, SIGTERM,
//! SIGHUP), the terminal gets its screen and cursor back.

use std::{
    io::{IsTerminal as _, Write as _},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Alternate screen on, cursor hidden.
const ENTER: &str = "\x1b[?1049h\x1b[?25l";
/// Cursor shown, alternate screen off (the shell's screen comes back as it was).
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";
/// Cursor home; each line then clears what is left of it, and the end clears below.
const HOME: &str = "\x1b[H";
const CLEAR_LINE: &str = "\x1b[K";
const CLEAR_BELOW: &str = "\x1b[J";

/// Whether the alternate screen is on, for the panic hook.
static ON: AtomicBool = AtomicBool::new(false);

pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// The size the terminal on `fd` reports (TIOCGWINSZ), if it reports one.
fn winsize(fd: libc::c_int) -> Option<(usize, usize)> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: (nix has no safe TIOCGWINSZ) the ioctl writes one winsize into the live local we
    // pass, and nothing else.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col.into(), ws.ws_row.into()))
}

/// (columns, rows) of the terminal, read again for every frame (a resize wakes the view with
/// SIGWINCH): from stdout, else stderr or stdin (the same terminal when only stdout is
/// redirected elsewhere), else $COLUMNS and $LINES, else 80x24.
pub fn size() -> (usize, usize) {
    [libc::STDOUT_FILENO, libc::STDERR_FILENO, libc::STDIN_FILENO]
        .into_iter()
        .find_map(winsize)
        .unwrap_or_else(|| size_from(|k| std::env::var(k).ok()))
}

/// $COLUMNS and $LINES (each 80x24 when missing or not a positive number).
fn size_from(var: impl Fn(&str) -> Option<String>) -> (usize, usize) {
    let num = |k: &str, default: usize| {
        var(k).and_then(|v| v.trim().parse::<usize>().ok()).filter(|n| *n > 0).unwrap_or(default)
    };
    (num("COLUMNS", 80), num("LINES", 24))
}

fn write_out(s: &str) {
    let mut out = std::io::stdout().lock();
    // A terminal that went away leaves nothing to draw on; the signals end the view.
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

/// The alternate screen, for as long as this lives.
pub struct Screen(());

impl Screen {
    pub fn enter() -> Screen {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                // Restore first, so the message lands on the shell's screen.
                if ON.swap(false, Ordering::SeqCst) {
                    write_out(LEAVE);
                }
                previous(info);
            }));
        });
        write_out(ENTER);
        ON.store(true, Ordering::SeqCst);
        Screen(())
    }

    /// Replaces what is on the screen with `frame` in one write.
    pub fn draw(&mut self, frame: &str) {
        let mut s = String::with_capacity(frame.len() + 256);
        s += HOME;
        for (i, line) in frame.lines().enumerate() {
            if i > 0 {
                s += "\r\n";
            }
            s += line;
            s += CLEAR_LINE;
        }
        s += CLEAR_BELOW;
        write_out(&s);
    }

    /// Gives the shell its screen back while the process is stopped (Ctrl-Z), and takes it
    /// again once continued.
    pub fn suspend(&mut self) {
        write_out(LEAVE);
        // Stops this process, as the default action of SIGTSTP would have.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
        write_out(ENTER);
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        if ON.swap(false, Ordering::SeqCst) {
            write_out(LEAVE);
        }
    }
}

/// Why a live view woke up.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    /// The interval passed.
    Tick,
    /// The terminal changed size: draw again now.
    Resize,
    /// Ctrl-Z.
    Suspend,
    /// Ctrl-C, Ctrl-\, SIGTERM or SIGHUP: restore the terminal and exit 0.
    Stop,
}

/// SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGWINCH and SIGTSTP, taken over for the life of a view
/// (installed before the screen changes, so none of them can end the process with the screen
/// changed).
pub struct Signals {
    int: Signal,
    quit: Signal,
    term: Signal,
    hup: Signal,
    winch: Signal,
    tstp: Signal,
}

impl Signals {
    pub fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            winch: signal(SignalKind::window_change())?,
            tstp: signal(SignalKind::from_raw(libc::SIGTSTP))?,
        })
    }

    /// Waits `d`, or less when a signal comes.
    pub async fn sleep(&mut self, d: Duration) -> Wake {
        tokio::select! {
            _ = self.int.recv() => Wake::Stop,
            _ = self.quit.recv() => Wake::Stop,
            _ = self.term.recv() => Wake::Stop,
            _ = self.hup.recv() => Wake::Stop,
            _ = self.winch.recv() => Wake::Resize,
            _ = self.tstp.recv() => Wake::Suspend,
            _ = tokio::time::sleep(d) => Wake::Tick,
        }
    }

    /// Runs `f` unless a stopping signal comes first (None then).
    pub async fn unless_stopped<T>(&mut self, f: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            _ = self.int.recv() => None,
            _ = self.quit.recv() => None,
            _ = self.term.recv() => None,
            _ = self.hup.recv() => None,
            v = f => Some(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_sizes_a_terminal_that_does_not_say() {
        let env = |c: Option<&'static str>, l: Option<&'static str>| {
            move |k: &str| if k == "COLUMNS" { c } else { l }.map(str::to_string)
        };
        assert_eq!(size_from(env(Some("250"), Some("60"))), (250, 60));
        assert_eq!(size_from(env(None, None)), (80, 24));
        assert_eq!(size_from(env(Some("0"), Some("wide"))), (80, 24));
    }
}
