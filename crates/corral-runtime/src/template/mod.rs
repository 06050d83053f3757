//! Templates: the read-only layers (and host binds) a sandbox's root is built from.

mod base;

use std::path::PathBuf;

pub use base::base_template;

use crate::config::{BindMount, SandboxConfig};

/// A ready-to-use template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub name: String,
    /// Overlay lower dirs, top first.
    pub layers: Vec<PathBuf>,
    /// Host paths bind-mounted read-only into every sandbox of the template.
    pub binds: Vec<BindMount>,
}

impl Template {
    /// A sandbox config over this template with default limits.
    pub fn sandbox_config(&self, id: impl Into<String>) -> SandboxConfig {
        let mut cfg = SandboxConfig::new(id, self.layers.clone());
        cfg.binds = self.binds.clone();
        cfg
    }
}
