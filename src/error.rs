//! The library's one error type: a kind, a context message, a temporary/permanent flag and an optional source.

use std::fmt;

/// What went wrong, coarsely; match on this rather than on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The host's configuration is invalid (unknown destination, bad route, bad URL…).
    Config,
    /// Input from outside (a webhook, a CSV, an email, a filter expression) is malformed.
    InvalidInput,
    /// A request failed signature, token or timestamp verification.
    Unauthorized,
    /// A request body exceeded the configured size cap.
    PayloadTooLarge,
    /// The thing asked for does not exist.
    NotFound,
    /// The operation conflicts with current state (e.g. a run already in progress).
    Conflict,
    /// An import would exceed the attribute cap.
    AttributeCap,
    /// A template failed to compile or render.
    Template,
    /// The store (database) failed.
    Store,
    /// A remote platform answered with an error.
    Platform,
    /// The network failed (connect, timeout, TLS).
    Network,
    /// A local I/O operation failed.
    Io,
    /// The operation was cancelled by shutdown.
    Shutdown,
    /// A secret could not be sealed or opened: no encryption key configured, a
    /// wrong key, or a corrupted stored value.
    Secret,
}

impl ErrorKind {
    /// A stable snake_case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::AttributeCap => "attribute_cap",
            ErrorKind::Template => "template",
            ErrorKind::Store => "store",
            ErrorKind::Platform => "platform",
            ErrorKind::Network => "network",
            ErrorKind::Io => "io",
            ErrorKind::Shutdown => "shutdown",
            ErrorKind::Secret => "secret",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error type of every fallible switchboard operation.
///
/// It carries a [`ErrorKind`], a human-readable context message (never a secret),
/// whether retrying may help ([`Error::is_temporary`]) and the underlying source.
#[derive(thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    temporary: bool,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A permanent error of `kind` with a context message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            temporary: false,
            source: None,
        }
    }

    /// Marks the error as temporary: retrying the same operation later may succeed.
    pub fn temporary(mut self) -> Self {
        self.temporary = true;
        self
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Prefixes the message with more context (`"while X: <old message>"`).
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The context message, without the kind or the source.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True when retrying later may succeed (network blips, throttling, busy store).
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub(crate) fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    pub(crate) fn store(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Store, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.kind, self.message)?;
        if self.temporary {
            f.write_str(" (temporary)")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("temporary", &self.temporary)
            .field("source", &self.source.as_ref().map(|s| s.to_string()))
            .finish()
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::invalid_input("invalid JSON").with_source(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(ErrorKind::Io, "I/O failed").with_source(e)
    }
}

impl From<minijinja::Error> for Error {
    fn from(e: minijinja::Error) -> Self {
        Error::new(ErrorKind::Template, "template failed").with_source(e)
    }
}

/// `Result` with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
