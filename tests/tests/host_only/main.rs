//! The integration tests that run on the host only, never in the VM guests: the guests have
//! no Python (the example client, the stock gRPC clients, Chaos Toolkit), no promtool (the
//! metrics and dashboard checks), no tmux (the live view's terminal), the load test measures
//! the agent, not the kernel, and so do
//! the tests of what the agent and the CLI do around the faults (`serve`, `cli_output`) and
//! of the README's examples (`readme_examples`, which read README.md), and the delay
//! tracer's own tests (`sys_delay_tracer`: ptrace and signal handling, the same on every
//! kernel here; the guests run the whole sys delay path end to end in kernel/sys_delay.rs),
//! and the faults on real containers (`containers_runc`: the guests carry no runc).

mod chaos_toolkit;
mod cli_output;
mod containers_runc;
mod live_view;
mod load;
mod observability_tools;
mod python_client;
mod readme_examples;
mod serve;
mod stock_clients;
mod sys_delay_tracer;
