//! The policy's node guards in force: evaluated every 200 ms for as long as the agent runs;
//! the first that holds halts it ("halted: guard ..."), ending every experiment at once. After
//! a `resume` they are watched again, so a guard that still holds halts again.

use std::{sync::Arc, time::Duration};

use tracing::{error, info};

use super::Engine;

impl Engine {
    /// Starts watching the policy's guards; Err when the node cannot give what they read
    /// (no PSI for a pressure guard).
    pub fn watch_node(self: &Arc<Self>) -> Result<(), String> {
        let guards = self.policy.guards.clone();
        if guards.is_empty() {
            return Ok(());
        }
        guards.check_readable()?;
        info!(guards = %guards.summary(), "node guards watched");
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let held = guards.first_to_hold().await;
                let Some(engine) = me.upgrade() else { return };
                if engine.halted().is_none() {
                    let reason = format!("guard {} held ({})", held.condition, held.value);
                    error!(reason = %reason, "node guard held: halting");
                    if let Err(e) = engine.halt(reason).await {
                        error!(error = %e, "halting on a guard");
                    }
                }
                drop(engine);
                // Watched again once a person resumed.
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    match me.upgrade() {
                        Some(e) if e.halted().is_some() => {}
                        Some(_) => break,
                        None => return,
                    }
                }
            }
        });
        Ok(())
    }
}
