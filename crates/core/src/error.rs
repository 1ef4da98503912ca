//! How errors are written and printed, once for every crate.
//!
//! An error's `Display` says what failed at its own layer and where (`cannot bind
//! 127.0.0.1:1967`), and nothing about its cause; the cause is its `source()`. Whoever prints
//! the error prints the whole chain, each cause once: `{:#}` on an `anyhow::Error` in the binary,
//! [`Chain`] in the libraries' logs. A variant that puts its source in its message
//! (`#[error("...: {0}")]` with `#[from]` or `#[source]`) prints that cause twice; a variant that
//! forwards everything is `#[error(transparent)]`.

use std::error::Error;
use std::fmt;

/// Displays an error and its causes, `what: cause: cause`, as anyhow's `{:#}` does.
///
/// ```
/// use ipsla_core::error::Chain;
/// #[derive(Debug, thiserror::Error)]
/// #[error("cannot bind 127.0.0.1:1967")]
/// struct Bind(#[source] std::io::Error);
/// let e = Bind(std::io::Error::from(std::io::ErrorKind::AddrInUse));
/// assert_eq!(Chain(&e).to_string(), "cannot bind 127.0.0.1:1967: address in use");
/// ```
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}
