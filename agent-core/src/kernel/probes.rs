//! Probes the fault drivers need before they load: what one helper or datapath feature does
//! on this kernel, learned by doing it (never from version strings). The whole capability
//! table is `crate::caps`.

use aya::{
    Ebpf,
    programs::{
        SchedClassifier, TcAttachType,
        tc::{self, NlOptions, TcAttachOptions},
    },
};

use super::{netns, object::ebpf_object, rtnl::Netlink};
use crate::engine::error::chain;

/// Whether programs may use atomic fetch-and-add (BPF_ATOMIC | BPF_FETCH, kernel 5.12+):
/// loads a socket filter that does one on its stack.
pub fn probe_atomic_fetch() -> Result<(), String> {
    let insns: [[u8; 8]; 6] = [
        [0xb7, 0x01, 0, 0, 0, 0, 0, 0],          // r1 = 0
        [0x7b, 0x1a, 0xf8, 0xff, 0, 0, 0, 0],    // *(u64 *)(r10 - 8) = r1
        [0xb7, 0x02, 0, 0, 1, 0, 0, 0],          // r2 = 1
        [0xdb, 0x2a, 0xf8, 0xff, 0x01, 0, 0, 0], // r2 = atomic_fetch_add((u64 *)(r10 - 8), r2)
        [0xb7, 0x00, 0, 0, 0, 0, 0, 0],          // r0 = 0
        [0x95, 0, 0, 0, 0, 0, 0, 0],             // exit
    ];
    let license = b"GPL\0";
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // BPF_PROG_TYPE_SOCKET_FILTER
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    // SAFETY: (nix has no bpf(2)) BPF_PROG_LOAD (5) with a zero-padded attr of the size we
    // pass; the pointers in it (insns, license) are to locals that outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_mut_ptr(), attr.len()) };
    if fd < 0 {
        return Err(format!("atomic fetch-and-add refused: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: closing the descriptor the kernel just returned, which nothing else owns.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// Whether a packet a tc ingress program redirects to an ifb comes back to the device's
/// receive path (kernels before 6.4 do not mark a bpf redirect for the ifb, which drops
/// it). Learned by doing it in a scratch namespace: a datagram to a local socket on lo.
pub fn probe_ifb_redirect() -> Result<String, String> {
    netns::in_scratch_netns(|| -> Result<String, String> {
        let mut nl = Netlink::open().map_err(|e| format!("netlink: {e}"))?;
        nl.set_up(1).map_err(|e| format!("bringing lo up: {e}"))?;
        let ifb = nl
            .add_link("flprobe0", "ifb")
            .map_err(|e| format!("creating an ifb device: {e} (is the ifb module available?)"))?;
        let mut ebpf = Ebpf::load(ebpf_object()).map_err(|e| chain(&e))?;
        let mut arg: aya::maps::Array<_, u32> = ebpf
            .take_map("FL_PROBE_ARG")
            .ok_or("probe map missing")?
            .try_into()
            .map_err(|e: aya::maps::MapError| chain(&e))?;
        arg.set(0, ifb as u32, 0).map_err(|e| chain(&e))?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut("fl_probe_redirect")
            .ok_or("probe program missing")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| chain(&e))?;
        prog.load().map_err(|e| chain(&e))?;
        let tcx = TcAttachOptions::TcxOrder(Default::default());
        if prog.attach_with_options("lo", TcAttachType::Ingress, tcx).is_err() {
            tc::qdisc_add_clsact("lo").map_err(|e| format!("adding clsact: {}", chain(&e)))?;
            let nl_opts = TcAttachOptions::Netlink(NlOptions::default());
            prog.attach_with_options("lo", TcAttachType::Ingress, nl_opts)
                .map_err(|e| format!("attaching to lo: {}", chain(&e)))?;
        }
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        rx.set_read_timeout(Some(std::time::Duration::from_millis(500)))
            .map_err(|e| e.to_string())?;
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let to = rx.local_addr().map_err(|e| e.to_string())?;
        let mut buf = [0u8; 16];
        for _ in 0..3 {
            tx.send_to(b"faultline", to).map_err(|e| e.to_string())?;
            if rx.recv(&mut buf).is_ok() {
                return Ok("a packet redirected to an ifb at ingress came back to lo".into());
            }
        }
        Err("packets a tc program redirects to an ifb are dropped there (bpf redirect is not \
             marked for the ifb before kernel 6.4)"
            .into())
    })
    .and_then(|r| r)
}
