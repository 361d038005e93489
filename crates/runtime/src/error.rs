//! [`Error`]: every failure of the runtime, with the id, name or path it is about.

use std::path::PathBuf;

use crate::state::VmStatus;

/// Result of runtime calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No record has this id or name.
    #[error("no such vm: {0} (see `hearth vm list --all`)")]
    NotFound(String),
    /// A name that several records carry.
    #[error("several vms are named {name} ({}); use the id", ids.join(", "))]
    AmbiguousName { name: String, ids: Vec<String> },
    /// The operation needs another state.
    #[error("vm {id} is {status}{hint}")]
    WrongState {
        id: String,
        status: VmStatus,
        hint: &'static str,
    },
    /// The sandbox is paused: its agent does not answer until it is resumed.
    #[error("sandbox {id} is paused; resume it with `hearth vm resume --vm {id}`")]
    Paused { id: String },
    /// A spec that cannot be run, caught before anything was made.
    #[error("{0}")]
    InvalidSpec(String),
    /// The host cannot hold what was asked for.
    #[error("{0}")]
    Admission(String),
    /// A disk or image a sandbox needs is missing.
    #[error("{what} {} of vm {id} is missing{hint}", path.display())]
    MissingDisk {
        id: String,
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
    /// A persist volume another sandbox uses.
    #[error("persist volume {name} belongs to vm {owner} ({status}); run `hearth vm clean --vm {owner} --keep-persist` first to hand it over")]
    PersistInUse {
        name: String,
        owner: String,
        status: VmStatus,
    },
    /// An image still used by sandboxes.
    #[error("the {language} image {hash} is used by vm {id} ({status}); clean that vm first or force it")]
    ImageInUse {
        language: String,
        hash: String,
        id: String,
        status: VmStatus,
    },
    /// The state DB is held by another process for longer than the lock timeout.
    #[error("state DB {} is locked by another process (waited {waited_secs:.1} s); is another hearth command stuck?", path.display())]
    DbLocked { path: PathBuf, waited_secs: f64 },
    /// The state DB was written by a newer hearth.
    #[error("state DB {} has schema version {found}; this hearth understands up to {supported}", path.display())]
    SchemaTooNew {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    /// Any other state DB failure.
    #[error("state DB {}: {context}", path.display())]
    Db {
        path: PathBuf,
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A record that does not decode.
    #[error("corrupt record for vm {id} in the state DB: {reason}")]
    CorruptRecord { id: String, reason: String },
    /// A file operation on the host.
    #[error("{context} {}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Building or finding an image.
    #[error("{context}")]
    Image {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The backend (boot, stop, connect).
    #[error(transparent)]
    Vmm(#[from] hearth_vmm::VmmError),
    /// The agent answered with an error, or the connection failed.
    #[error("{context}")]
    Agent {
        context: String,
        #[source]
        source: hearth_client::ClientError,
    },
    /// The sandbox's VMM died while a request was running.
    #[error("vm {id} stopped during the request ({reason})")]
    Died {
        id: String,
        reason: String,
        #[source]
        source: Box<Error>,
    },
    /// The operation was cancelled (a signal, a dropped request); what it made
    /// was removed again.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// A background task ended abnormally.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            context,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn agent(context: impl Into<String>, source: hearth_client::ClientError) -> Self {
        Error::Agent {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn image(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Image {
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// The agent's error code, when the agent refused the request.
    pub fn remote_code(&self) -> Option<hearth_proto::pb::ErrorCode> {
        match self {
            Error::Agent { source, .. } => source.remote_code(),
            Error::Died { source, .. } => source.remote_code(),
            _ => None,
        }
    }

    /// Whether the caller's input was at fault (a usage error), as opposed to
    /// the host, the guest or the runtime.
    pub fn is_user_error(&self) -> bool {
        match self {
            Error::NotFound(_)
            | Error::AmbiguousName { .. }
            | Error::WrongState { .. }
            | Error::Paused { .. }
            | Error::InvalidSpec(_)
            | Error::Admission(_)
            | Error::PersistInUse { .. }
            | Error::ImageInUse { .. } => true,
            Error::MissingDisk { .. }
            | Error::DbLocked { .. }
            | Error::SchemaTooNew { .. }
            | Error::Db { .. }
            | Error::CorruptRecord { .. }
            | Error::Io { .. }
            | Error::Image { .. }
            | Error::Vmm(_)
            | Error::Agent { .. }
            | Error::Died { .. }
            | Error::Cancelled(_)
            | Error::Internal(_) => false,
        }
    }
}
