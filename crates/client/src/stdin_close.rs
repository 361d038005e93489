//! Closing a background process's stdin (`CAPABILITY_PROCESS_STDIN_CLOSE`):
//! `PROCESS_STDIN_CLOSE`, answered by OK.

use hearth_proto::{pb, Message};

use crate::background::ProcessRef;
use crate::conn::{unexpected, Client};
use crate::error::ClientError;

impl Client {
    /// Closes the stdin pipe of a running background process for good (the
    /// agent's and every attach's copy), so it reads end of file.
    pub async fn close_process_stdin(&self, target: &ProcessRef) -> Result<(), ClientError> {
        self.require(
            pb::Capability::ProcessStdinClose,
            "closing a background process's stdin",
        )?;
        let (pid, tag) = target.parts();
        match self
            .request(Message::ProcessStdinClose(pb::ProcessStdinClose {
                pid,
                tag,
            }))
            .await?
        {
            Message::Ok(_) => Ok(()),
            m => Err(unexpected("process stdin close", m)),
        }
    }
}
