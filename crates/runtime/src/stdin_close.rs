//! Closing a background process's stdin, so it reads end of file (see
//! `PROCESS_STDIN_CLOSE` in docs/protocol.md).

use hearth_client::ProcessRef;

use crate::agent::Agent;
use crate::error::{Error, Result};
use crate::sandbox::Sandbox;

impl Agent {
    pub async fn close_process_stdin(&self, target: &ProcessRef) -> Result<()> {
        self.client()
            .close_process_stdin(target)
            .await
            .map_err(|e| {
                Error::agent(
                    format!("{}: closing the stdin of {target}", self.label()),
                    e,
                )
            })
    }
}

impl Sandbox {
    /// Closes a running background process's stdin for good.
    pub async fn close_process_stdin(&self, target: &ProcessRef) -> Result<()> {
        let agent = self.agent().await?;
        match agent.close_process_stdin(target).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.explain(e).await),
        }
    }
}
