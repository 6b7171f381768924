//! The owner of FL_TIME_PIDS and the raw-syscall programs (agent-ebpf/src/time.rs): the
//! results of `clock_gettime` and `gettimeofday` entered with `syscall` are shifted for the
//! processes the skewer lists there, under their data page's lease. Loaded at the first
//! time-skew experiment (fexit on the calls' functions where the kernel allows it, else the
//! sys_exit tracepoint), attached while one runs. The skewer writes the map through a
//! descriptor it inherits (`PidsWriter`).

use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};

use aya::{
    Btf, Ebpf, EbpfError, EbpfLoader,
    maps::{HashMap as BpfHashMap, Map, MapData, MapError},
    programs::{
        BtfTracePoint, FExit, ProgramError, RawTracePoint, fexit::FExitLink,
        raw_trace_point::RawTracePointLink, tp_btf::BtfTracePointLink,
    },
};
use faultline_common::time::{MAP_TIME_PIDS, TIME_MAPS};

use crate::{engine::error::chain, kernel::ebpf_object};

/// Each hooked call: its function, the sleepable fexit program, the plain one.
const HOOKS: [(&str, &str, &str); 2] = [
    ("__x64_sys_clock_gettime", "fl_time_clock_gettime_s", "fl_time_clock_gettime"),
    ("__x64_sys_gettimeofday", "fl_time_gettimeofday_s", "fl_time_gettimeofday"),
];
/// The sys_exit forms, where the kernel refuses fexit on the calls' functions.
const PROG_BTF: &str = "fl_time_sys_exit_btf";
const PROG_RAW: &str = "fl_time_sys_exit_raw";
const SYS_EXIT: &str = "sys_exit";

#[derive(Debug, thiserror::Error)]
pub enum TimeDatapathError {
    #[error("loading the eBPF object")]
    Load(#[source] EbpfError),
    #[error("map {0} missing from the eBPF object")]
    MapMissing(&'static str),
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("reading the kernel's BTF")]
    Btf(#[source] aya::BtfError),
    #[error("program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("no hook takes the programs: fexit: {fexit}; tp_btf: {tp_btf}; raw_tp: {raw_tp}")]
    NoHook { fexit: String, tp_btf: String, raw_tp: String },
}

type Result<T, E = TimeDatapathError> = std::result::Result<T, E>;

/// Which form of the programs the kernel took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// fexit.s on the two calls' functions: the data page is read with a page fault allowed.
    FExitSleepable,
    /// fexit on them: the data page is read as it is mapped (the skewer faults it in).
    FExit,
    /// tp_btf on sys_exit: every system call on the node passes the program while attached.
    TpBtf,
    RawTp,
}

impl Form {
    pub fn name(self) -> &'static str {
        match self {
            Form::FExitSleepable => "fexit.s",
            Form::FExit => "fexit",
            Form::TpBtf => "tp_btf on sys_exit",
            Form::RawTp => "raw_tp on sys_exit",
        }
    }
}

/// An attachment, held for its drop (which detaches).
enum Link {
    FExit(#[expect(dead_code, reason = "held for its drop")] FExitLink),
    TpBtf(#[expect(dead_code, reason = "held for its drop")] BtfTracePointLink),
    RawTp(#[expect(dead_code, reason = "held for its drop")] RawTracePointLink),
}

pub struct TimeDatapath {
    ebpf: Ebpf,
    pids: MapData,
    form: Form,
    links: Vec<Link>,
}

impl TimeDatapath {
    /// Loads the programs in the first form the kernel takes, without attaching them.
    pub fn load() -> Result<Self> {
        let mut loader = EbpfLoader::new();
        crate::kernel::object::shrink_others(&mut loader, TIME_MAPS);
        let mut ebpf = loader.load(ebpf_object()).map_err(TimeDatapathError::Load)?;
        let pids = match ebpf.take_map(MAP_TIME_PIDS) {
            Some(Map::HashMap(m)) => m,
            Some(_) => {
                return Err(TimeDatapathError::Map {
                    name: MAP_TIME_PIDS,
                    source: MapError::InvalidMapType { map_type: 0 },
                });
            }
            None => return Err(TimeDatapathError::MapMissing(MAP_TIME_PIDS)),
        };
        let btf = Btf::from_sys_fs().map_err(TimeDatapathError::Btf)?;
        let form = choose(&mut ebpf, &btf)?;
        Ok(TimeDatapath { ebpf, pids, form, links: Vec::new() })
    }

    pub fn form(&self) -> Form {
        self.form
    }

    /// Attaches the programs (idempotent).
    pub fn attach(&mut self) -> Result<()> {
        if !self.links.is_empty() {
            return Ok(());
        }
        let names: Vec<&'static str> = match self.form {
            Form::FExitSleepable => HOOKS.iter().map(|h| h.1).collect(),
            Form::FExit => HOOKS.iter().map(|h| h.2).collect(),
            Form::TpBtf => vec![PROG_BTF],
            Form::RawTp => vec![PROG_RAW],
        };
        for name in names {
            match self.attach_one(name) {
                Ok(l) => self.links.push(l),
                Err(source) => {
                    self.links.clear();
                    return Err(TimeDatapathError::Program { name, source });
                }
            }
        }
        Ok(())
    }

    fn attach_one(&mut self, name: &str) -> Result<Link, ProgramError> {
        let prog = self.ebpf.program_mut(name).ok_or(ProgramError::NotLoaded)?;
        Ok(match self.form {
            Form::FExitSleepable | Form::FExit => {
                let p: &mut FExit = prog.try_into()?;
                Link::FExit(p.attach().and_then(|id| p.take_link(id))?)
            }
            Form::TpBtf => {
                let p: &mut BtfTracePoint = prog.try_into()?;
                Link::TpBtf(p.attach().and_then(|id| p.take_link(id))?)
            }
            Form::RawTp => {
                let p: &mut RawTracePoint = prog.try_into()?;
                Link::RawTp(p.attach(SYS_EXIT).and_then(|id| p.take_link(id))?)
            }
        })
    }

    /// Detaches them: raw calls on the node run untouched again.
    pub fn detach(&mut self) {
        self.links.clear();
    }

    /// A descriptor of FL_TIME_PIDS for the skewer (`PidsWriter::from_fd`).
    pub fn pids_fd(&self) -> BorrowedFd<'_> {
        self.pids.fd().as_fd()
    }
}

/// Loads the first form the kernel takes: fexit.s, fexit, tp_btf, raw_tp.
fn choose(ebpf: &mut Ebpf, btf: &Btf) -> Result<Form> {
    let fexit = |ebpf: &mut Ebpf, pick: fn(&(&str, &'static str, &'static str)) -> &'static str| {
        HOOKS.iter().try_for_each(|h| {
            let p: &mut FExit =
                ebpf.program_mut(pick(h)).ok_or(ProgramError::NotLoaded)?.try_into()?;
            p.load(h.0, btf)
        })
    };
    if fexit(ebpf, |h| h.1).is_ok() {
        return Ok(Form::FExitSleepable);
    }
    let fexit_err = match fexit(ebpf, |h| h.2) {
        Ok(()) => return Ok(Form::FExit),
        Err(e) => short(&e),
    };
    let tp_btf = (|| {
        let p: &mut BtfTracePoint =
            ebpf.program_mut(PROG_BTF).ok_or(ProgramError::NotLoaded)?.try_into()?;
        p.load(SYS_EXIT, btf)
    })();
    let tp_btf_err = match tp_btf {
        Ok(()) => return Ok(Form::TpBtf),
        Err(e) => short(&e),
    };
    let raw = (|| {
        let p: &mut RawTracePoint =
            ebpf.program_mut(PROG_RAW).ok_or(ProgramError::NotLoaded)?.try_into()?;
        p.load()
    })();
    match raw {
        Ok(()) => Ok(Form::RawTp),
        Err(e) => Err(TimeDatapathError::NoHook {
            fexit: fexit_err,
            tp_btf: tp_btf_err,
            raw_tp: short(&e),
        }),
    }
}

/// A load error in one line: the verifier's verdict on bpf_probe_write_user (refused under
/// kernel lockdown) rather than its whole log.
fn short(e: &ProgramError) -> String {
    let full = chain(e);
    if full.contains("cannot use helper bpf_probe_write_user") {
        return "bpf_probe_write_user refused to this program type".into();
    }
    full.lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches(". Verifier output: 0: R1=ctx() R10=fp0")
        .into()
}

/// The skewer's side of FL_TIME_PIDS.
pub struct PidsWriter {
    map: BpfHashMap<MapData, u32, u64>,
}

impl PidsWriter {
    /// The map behind a descriptor from `TimeDatapath::pids_fd` (inherited).
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        let err = |source| TimeDatapathError::Map { name: MAP_TIME_PIDS, source };
        let map = MapData::from_fd(fd).map_err(err)?;
        Ok(PidsWriter { map: BpfHashMap::try_from(Map::HashMap(map)).map_err(err)? })
    }

    /// Process `pid`'s raw clock calls read its mapping at `base`.
    pub fn insert(&mut self, pid: i32, base: u64) {
        if let Err(e) = self.map.insert(pid as u32, base, 0) {
            eprintln!("time skew: listing process {pid} for raw clock calls: {}", chain(&e));
        }
    }

    pub fn remove(&mut self, pid: i32) {
        let _ = self.map.remove(&(pid as u32));
    }
}

/// Whether raw clock calls can be shifted here (the caps row `time_raw_syscall`): the
/// programs load and attach (and are detached again at once).
pub fn probe() -> std::result::Result<String, String> {
    let why = |e: &TimeDatapathError| {
        let mut s = chain(e);
        if let Some(mode) = lockdown() {
            s.push_str(&format!(" (kernel lockdown is {mode}: bpf_probe_write_user is refused)"));
        }
        s
    };
    let mut dp = TimeDatapath::load().map_err(|e| why(&e))?;
    dp.attach().map_err(|e| why(&e))?;
    dp.detach();
    let at = match dp.form() {
        Form::FExitSleepable | Form::FExit => {
            "on __x64_sys_clock_gettime and __x64_sys_gettimeofday"
        }
        Form::TpBtf | Form::RawTp => {
            "(fexit refused: every system call on the node passes it while a skew runs)"
        }
    };
    Ok(format!("{} {at}: raw clock calls of a shifted process are shifted too", dp.form().name()))
}

/// The kernel's lockdown mode, when one is in force.
fn lockdown() -> Option<String> {
    let s = std::fs::read_to_string("/sys/kernel/security/lockdown").ok()?;
    let mode = s.split_whitespace().find(|w| w.starts_with('['))?.trim_matches(['[', ']']);
    (mode != "none").then(|| mode.to_string())
}
