//! The fmod_ret backend: where the bpf LSM is built but not active (Ubuntu's default), the
//! same LSM programs are loaded as fmod_ret programs on the security_* functions the hooks
//! are called from. aya cannot load fmod_ret programs, so the object is relocated here with
//! aya-obj against the maps aya created, and loaded with raw bpf(2) calls.

use std::{
    collections::{HashMap, HashSet},
    os::fd::{OwnedFd, RawFd},
};

use aya::maps::Map;

use crate::{engine::error::chain, kernel::tracing};

/// A loaded and attached fmod_ret program; closing the link detaches it.
pub struct FmodRet {
    _prog: OwnedFd,
    _link: OwnedFd,
}

/// The file descriptor of any map aya created.
pub fn map_fd(m: &Map) -> Option<RawFd> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let d = match m {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::LpmTrie(d)
        | Map::SkStorage(d)
        | Map::CgroupStorage(d)
        | Map::ProgramArray(d)
        | Map::RingBuf(d)
        | Map::PerfEventArray(d)
        | Map::Unsupported(d) => d,
        _ => return None,
    };
    Some(d.fd().as_fd().as_raw_fd())
}

/// Relocates program `name` of `object` against `fds` (map name -> fd of the map aya made)
/// and attaches it as fmod_ret on kernel function `func`.
pub fn attach(
    object: &[u8],
    fds: &HashMap<String, RawFd>,
    name: &str,
    func: &str,
) -> Result<FmodRet, String> {
    let mut obj = aya_obj::Object::parse(object).map_err(|e| chain(&e))?;
    let maps = obj.maps.clone();
    let text: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    let with_fds = maps.iter().filter_map(|(n, m)| fds.get(n).map(|fd| (n.as_str(), *fd, m)));
    obj.relocate_maps(with_fds, &text).map_err(|e| chain(&e))?;
    obj.relocate_calls(&text).map_err(|e| chain(&e))?;
    let prog = obj.programs.get(name).ok_or_else(|| format!("program {name} missing"))?;
    let func_obj = obj
        .functions
        .get(&prog.function_key())
        .ok_or_else(|| format!("program {name} has no code"))?;
    let insns = &func_obj.instructions;
    // SAFETY: bpf_insn is an 8-byte #[repr(C)] struct; viewing the slice as bytes.
    let bytes = unsafe { std::slice::from_raw_parts(insns.as_ptr().cast::<u8>(), insns.len() * 8) };
    let (prog, link) = tracing::attach_fmod_ret(name, bytes, func)?;
    Ok(FmodRet { _prog: prog, _link: link })
}
