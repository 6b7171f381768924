//! The integration tests that run on this host's kernel and inside every VM guest: one test
//! binary, one module per subject (each was its own binary before; one link instead of
//! eighteen, one file per guest). Tests run side by side, two at a time by default; the few
//! that measure or change the whole host run alone (`faultline_tests::serial`).

mod api;
mod bad_input;
mod bpf_debug_log;
mod chaos_mesh;
mod chaos_mesh_network;
mod chaos_mesh_workloads;
mod crash_campaign;
mod dry_run;
mod halt;
mod lease;
mod lifecycle;
mod metrics;
mod net_devices;
mod net_dns;
mod net_edt;
mod net_ingress;
mod net_loss;
mod net_loss_models;
mod net_reject;
mod no_hit;
mod process;
mod remote;
mod restart;
mod state_dir;
mod stop_conditions;
mod store_recovery;
mod stress;
mod sys_delay;
mod sys_delay_kernel;
mod sys_files;
mod sys_sockets;
mod targets;
mod time_skew;
