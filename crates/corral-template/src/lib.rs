//! Corral templates: the read-only root filesystems that sandboxes start from.
//!
//! A [`TemplateStore`] keeps one folder per template under its root
//! (default [`DEFAULT_TEMPLATES_DIR`]):
//!
//! ```text
//! <root>/<name>/template.json     metadata (TemplateMeta): kind, status, size, image config
//! <root>/<name>/rootfs/           the root filesystem, used read-only (overlay lower dir)
//! <root>/.building/<name>/        a build in progress (renamed to <root>/<name> when done)
//! <root>/.locks/<name>.lock       flock held by the process building or removing <name>
//! <root>/.cache/debootstrap/<key> debootstrap results keyed by (suite, arch, mirror, packages)
//! <root>/.trash/                  templates being deleted
//! ```
//!
//! Three kinds are built: `host` (a skeleton the runtime fills with read-only
//! binds of the host's `/usr` and friends), `debootstrap` (a Debian rootfs)
//! and `oci` (an imported OCI image layout or `docker save` archive).
//! Every build goes through one path ([`TemplateStore`]'s staging and rename),
//! so a crash or an error never leaves a half-built template marked ready.

mod apt_sources;
mod debootstrap;
mod error;
mod fsutil;
pub mod host;
mod lock;
mod manifest;
mod name;
pub mod oci;
mod progress;
mod store;

pub use apt_sources::{default_mirror, parse_sources, AptSource};
pub use debootstrap::{DebootstrapSpec, DEFAULT_SUITE};
pub use error::{Result, TemplateError};
pub use host::{default_host_binds, default_host_builder, HostBind};
pub use manifest::{ImageConfig, TemplateKind, TemplateMeta, TemplateSource, TemplateStatus};
pub use name::{validate_name, MAX_NAME_LEN};
pub use progress::Progress;
pub use store::{Template, TemplateStore, DEFAULT_TEMPLATES_DIR};
