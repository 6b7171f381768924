//! Probes for BPF trampolines that aya cannot load: fmod_ret programs, loaded and attached
//! with raw bpf(2) calls. A trivial program (`return 0`) is attached and detached at once.

use std::os::fd::{FromRawFd as _, OwnedFd};

use aya_obj::{
    btf::BtfKind,
    generated::{
        bpf_attach_type::BPF_MODIFY_RETURN, bpf_cmd, bpf_prog_type::BPF_PROG_TYPE_TRACING,
    },
};

fn sys_bpf(cmd: u32, attr: &mut [u8; 128]) -> Result<OwnedFd, std::io::Error> {
    // SAFETY: (nix has no bpf(2)) a zero-padded attr of the size we pass; the callers'
    // pointers in it (insns, license, name, log) are to buffers that outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Loads and attaches an fmod_ret program on kernel function `func`.
pub fn fmod_ret(func: &str) -> Result<(), String> {
    // r0 = 0; exit
    let insns: [u64; 2] = [0xb7, 0x95];
    let bytes: Vec<u8> = insns.iter().flat_map(|i| i.to_le_bytes()).collect();
    attach_fmod_ret("fl_fmodret", &bytes, func).map(drop)
}

/// Loads `insns` (raw bpf_insn bytes, relocated) as an fmod_ret program on kernel function
/// `func` and attaches it: returns the program and the link, which detaches when closed.
pub fn attach_fmod_ret(name: &str, insns: &[u8], func: &str) -> Result<(OwnedFd, OwnedFd), String> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| format!("no kernel BTF: {e}"))?;
    let id = btf
        .id_by_type_name_kind(func, BtfKind::Func)
        .map_err(|_| format!("{func} is not in the kernel's BTF"))?;
    let license = b"GPL\0";
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(BPF_PROG_TYPE_TRACING as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&((insns.len() / 8) as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    let n = name.len().min(15);
    attr[48..48 + n].copy_from_slice(&name.as_bytes()[..n]);
    attr[68..72].copy_from_slice(&(BPF_MODIFY_RETURN as u32).to_ne_bytes());
    attr[108..112].copy_from_slice(&id.to_ne_bytes());
    let prog = match sys_bpf(bpf_cmd::BPF_PROG_LOAD as u32, &mut attr.clone()) {
        Ok(p) => p,
        Err(e) => {
            // Again with the verifier's log, for the reason.
            let mut log = vec![0u8; 1 << 20];
            // union bpf_attr (BPF_PROG_LOAD): log_level, log_size, log_buf.
            attr[24..28].copy_from_slice(&1u32.to_ne_bytes());
            attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
            attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
            let _ = sys_bpf(bpf_cmd::BPF_PROG_LOAD as u32, &mut attr);
            let end = log.iter().position(|&c| c == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let log = if text.trim().is_empty() {
                String::new()
            } else {
                format!(". Verifier output: {text}")
            };
            return Err(crate::engine::error::brief(&format!(
                "fmod_ret on {func} refused at load: {e}{log}"
            )));
        }
    };
    let mut attr = [0u8; 128];
    use std::os::fd::AsRawFd as _;
    attr[8..12].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    let link = sys_bpf(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN as u32, &mut attr)
        .map_err(|e| format!("fmod_ret on {func} refused at attach: {e}"))?;
    Ok((prog, link))
}
