//! What exists only for byte-compatibility with the original (Python 3.11, structlog,
//! prometheus_client): a newcomer can read the core without these, and a change here changes
//! what the server writes, byte for byte.
//! - [`pyjson`]: JSON with Python semantics (truthiness, equality, `float()`, decoding).
//! - [`isotime`]: Python `datetime` formatting: `published_at` normalisation and the timestamps
//!   of frames and log lines.
//! - [`structlog`]: the JSON log line: its keys, level names, timestamp, clashing field names.
//! - [`prometheus`]: the text exposition of `prometheus_client` (0.0.4 and OpenMetrics): family
//!   and series order, `# HELP` / `# TYPE` lines, label escaping, Python float formatting.

pub mod isotime;
pub mod prometheus;
pub mod pyjson;
pub mod structlog;
