//! `corral bench`: the burst benchmark, vendor-neutral.
//!
//! A coordinator fires creates according to a [`mode::Mode`] against a
//! [`provider::Provider`] (Corral's REST API, or a local baseline such as
//! bubblewrap or podman driven through its own CLI), runs a readiness command
//! in each sandbox, keeps the survivors alive until every create has settled,
//! probes them all once more, destroys them, and writes:
//!
//! ```text
//! <out>/raw.jsonl        one record::Record per sandbox (ms offsets from the release)
//! <out>/meta.json        config, machine, stats::Summary, resource samples
//! <out>/*.hdr            HdrHistograms (µs, 3 significant digits), mergeable
//! <out>/tti_cdf.svg      time-to-interactive CDF
//! <out>/timeline.svg     live sandboxes over time
//! ```

pub mod error;
pub mod hdr;
pub mod mode;
pub mod provider;
pub mod record;
pub mod report;
pub mod run;
pub mod sample;
pub mod sim;
pub mod stats;
pub mod svg;

pub use error::BenchError;
