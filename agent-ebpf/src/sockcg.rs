//! Whose socket a received packet is for, at tc ingress (before any socket is attached to
//! the packet, and where no helper reads a socket's cgroup). The cgroup programs, which run
//! for the target's sockets, note each socket's cgroup ids in socket storage; the tc program
//! looks the socket up by the packet's addresses and reads them. A socket is noted at its
//! first packet through the cgroup programs; accepted sockets inherit their listener's note.
//! No user-space owner: the kernel frees an entry with its socket.

use aya_ebpf::{
    bindings::{
        __sk_buff, BPF_F_CLONE, BPF_F_NO_PREALLOC, BPF_SK_STORAGE_GET_F_CREATE, bpf_map_type,
    },
    helpers::{bpf_sk_fullsock, bpf_sk_storage_get, bpf_skb_ancestor_cgroup_id},
};
use faultline_common::net::{MAX_CGROUP_LEVEL, SockCgroups};

/// A BTF map definition (socket storage needs BTF): the same layout as aya's `SkStorage`,
/// plus BPF_F_CLONE so that a socket accepted from a noted listener starts noted.
#[repr(C)]
pub struct SockCgroupMap {
    r#type: *const [i32; bpf_map_type::BPF_MAP_TYPE_SK_STORAGE as usize],
    key: *const i32,
    value: *const SockCgroups,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; (BPF_F_NO_PREALLOC | BPF_F_CLONE) as usize],
}

// SAFETY: placeholder pointers the loader patches; never dereferenced.
unsafe impl Sync for SockCgroupMap {}

#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "FL_SOCK_CGROUPS")]
pub static FL_SOCK_CGROUPS: SockCgroupMap = SockCgroupMap {
    r#type: core::ptr::null(),
    key: core::ptr::null(),
    value: core::ptr::null(),
    max_entries: core::ptr::null(),
    map_flags: core::ptr::null(),
};

fn map() -> *mut core::ffi::c_void {
    core::ptr::from_ref(&FL_SOCK_CGROUPS).cast_mut().cast()
}

/// Notes the cgroup ids of the packet's socket, once per socket. Called by the cgroup
/// programs while an ingress delay or pacing rule exists. Global: verified once.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fl_sock_note(skb: *mut __sk_buff) -> i32 {
    // SAFETY: reading our own context; helpers on the socket it holds.
    unsafe {
        let sk = (*skb).__bindgen_anon_2.sk;
        if sk.is_null() {
            return 0;
        }
        let full = bpf_sk_fullsock(sk);
        if full.is_null() {
            return 0;
        }
        let v = bpf_sk_storage_get(
            map(),
            full.cast(),
            core::ptr::null_mut(),
            BPF_SK_STORAGE_GET_F_CREATE as u64,
        )
        .cast::<SockCgroups>();
        if v.is_null() || (*v).filled != 0 {
            return 0;
        }
        for level in 0..=MAX_CGROUP_LEVEL as usize {
            let id = bpf_skb_ancestor_cgroup_id(skb, level as i32);
            if id == 0 {
                break;
            }
            (*v).ids[level] = id;
        }
        (*v).filled = 1;
    }
    0
}

/// The cgroup id at `level` noted for a socket the tc program looked up (0 if none).
#[inline(always)]
pub fn noted_cgroup(sk: *mut core::ffi::c_void, level: u32) -> u64 {
    // SAFETY: the caller holds a reference to `sk`; the storage is only read.
    unsafe {
        let v = bpf_sk_storage_get(map(), sk, core::ptr::null_mut(), 0).cast::<SockCgroups>();
        if v.is_null() {
            return 0;
        }
        (*v).ids[(level & MAX_CGROUP_LEVEL) as usize]
    }
}
