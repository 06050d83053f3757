//! Request validation: every bad input is rejected here, with a message that
//! names the field and the allowed range, before anything is written.

use std::collections::BTreeMap;

use crate::api::{CreateSandboxRequest, ExecRequest};
use crate::sandbox::{NetworkMode, SandboxSpec};

/// Bounds on what one request may ask for.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_cpu_millis: i64,
    pub max_memory_mb: i64,
    pub max_ttl_s: i64,
    pub max_batch: i64,
    pub max_env: usize,
    pub max_labels: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_cpu_millis: 64_000,
            max_memory_mb: 256 * 1024,
            max_ttl_s: 7 * 24 * 3600,
            max_batch: 10_000,
            max_env: 256,
            max_labels: 64,
        }
    }
}

pub const DEFAULT_TEMPLATE: &str = "base";
pub const DEFAULT_CPU_MILLIS: i64 = 1000;
pub const DEFAULT_MEMORY_MB: i64 = 512;
pub const DEFAULT_TTL_S: i64 = 900;
pub const MIN_CPU_MILLIS: i64 = 10;
pub const MIN_MEMORY_MB: i64 = 16;
pub const DEFAULT_EXEC_TIMEOUT_MS: u64 = 60_000;
pub const MAX_EXEC_TIMEOUT_MS: u64 = 3_600_000;

/// A rejected request: `code` is stable, `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
}

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid { code: "invalid_request", message: message.into() }
}

fn in_range(field: &str, value: i64, lo: i64, hi: i64) -> Result<u32, Invalid> {
    if value < lo || value > hi {
        return Err(invalid(format!("{field} must be between {lo} and {hi}, got {value}")));
    }
    Ok(value as u32)
}

fn check_name(kind: &str, name: &str, max: usize) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{kind} {name:?} must be 1-{max} characters of letters, digits, '_', '-', '.', '/'")))
    }
}

fn check_env(env: &BTreeMap<String, String>, limits: &Limits) -> Result<(), Invalid> {
    if env.len() > limits.max_env {
        return Err(invalid(format!("env has {} entries, at most {} allowed", env.len(), limits.max_env)));
    }
    for (k, v) in env {
        let ok = !k.is_empty()
            && k.len() <= 256
            && !k.as_bytes()[0].is_ascii_digit()
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(invalid(format!("env name {k:?} must be letters, digits and '_', not starting with a digit")));
        }
        if v.len() > 32 * 1024 || v.contains('\0') {
            return Err(invalid(format!("env value of {k} must be under 32 KiB with no NUL byte")));
        }
    }
    Ok(())
}

/// Turns a create request into a spec, or says exactly what is wrong.
/// `template_known` answers whether any host (or the server) offers a template.
pub fn create_spec(
    req: &CreateSandboxRequest,
    template_known: impl Fn(&str) -> bool,
    limits: &Limits,
) -> Result<SandboxSpec, Invalid> {
    let template = req.template.clone().unwrap_or_else(|| DEFAULT_TEMPLATE.to_string());
    let template_ok = template.len() <= 128
        && template.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && template.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !template_ok {
        return Err(invalid(format!(
            "template {template:?} must be 1-128 letters, digits, '_', '-', '.', starting with a letter or digit"
        )));
    }
    if !template_known(&template) {
        return Err(Invalid { code: "unknown_template", message: format!("template {template:?} does not exist") });
    }
    let cpu_millis =
        in_range("cpu_millis", req.cpu_millis.unwrap_or(DEFAULT_CPU_MILLIS), MIN_CPU_MILLIS, limits.max_cpu_millis)?;
    let memory_mb =
        in_range("memory_mb", req.memory_mb.unwrap_or(DEFAULT_MEMORY_MB), MIN_MEMORY_MB, limits.max_memory_mb)?;
    let ttl_s = in_range("ttl_s", req.ttl_s.unwrap_or(DEFAULT_TTL_S), 1, limits.max_ttl_s)?;
    check_env(&req.env, limits)?;
    if req.labels.len() > limits.max_labels {
        return Err(invalid(format!("{} labels, at most {} allowed", req.labels.len(), limits.max_labels)));
    }
    for (k, v) in &req.labels {
        check_name("label name", k, 63)?;
        if v.len() > 255 {
            return Err(invalid(format!("label {k} value is over 255 bytes")));
        }
    }
    if let Some(key) = &req.idempotency_key {
        if key.is_empty() || key.len() > 256 {
            return Err(invalid("idempotency_key must be 1-256 bytes"));
        }
    }
    let network = match req.network.as_deref() {
        None => NetworkMode::Isolated,
        Some(s) => NetworkMode::parse(s)
            .ok_or_else(|| invalid(format!("network must be \"isolated\" or \"nat\", got {s:?}")))?,
    };
    Ok(SandboxSpec { template, cpu_millis, memory_mb, ttl_s, env: req.env.clone(), labels: req.labels.clone(), network })
}

/// Checks a batch size.
pub fn batch_count(count: i64, limits: &Limits) -> Result<usize, Invalid> {
    in_range("count", count, 1, limits.max_batch).map(|n| n as usize)
}

/// Checks an exec request and returns its effective timeout.
pub fn exec_request(req: &ExecRequest, limits: &Limits) -> Result<u64, Invalid> {
    if req.cmd.is_empty() || req.cmd[0].is_empty() {
        return Err(invalid("cmd must name a program: [\"prog\", \"arg\", …]"));
    }
    if req.cmd.len() > 4096 || req.cmd.iter().any(|a| a.contains('\0')) {
        return Err(invalid("cmd must have at most 4096 arguments and no NUL byte"));
    }
    check_env(&req.env, limits)?;
    let timeout = req.timeout_ms.unwrap_or(DEFAULT_EXEC_TIMEOUT_MS);
    if timeout == 0 || timeout > MAX_EXEC_TIMEOUT_MS {
        return Err(invalid(format!("timeout_ms must be between 1 and {MAX_EXEC_TIMEOUT_MS}, got {timeout}")));
    }
    Ok(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(t: &str) -> bool {
        t == "base"
    }

    #[test]
    fn an_empty_request_gets_the_defaults() {
        let spec = create_spec(&CreateSandboxRequest::default(), known, &Limits::default()).unwrap();
        assert_eq!(spec.template, "base");
        assert_eq!((spec.cpu_millis, spec.memory_mb, spec.ttl_s), (1000, 512, 900));
    }

    #[test]
    fn bad_resources_name_the_field_and_range() {
        let req = CreateSandboxRequest { memory_mb: Some(-5), ..Default::default() };
        let err = create_spec(&req, known, &Limits::default()).unwrap_err();
        assert_eq!(err.message, "memory_mb must be between 16 and 262144, got -5");
        let req = CreateSandboxRequest { cpu_millis: Some(1_000_000_000_000), ..Default::default() };
        let err = create_spec(&req, known, &Limits::default()).unwrap_err();
        assert_eq!(err.message, "cpu_millis must be between 10 and 64000, got 1000000000000");
        let req = CreateSandboxRequest { cpu_millis: Some(0), ..Default::default() };
        assert!(create_spec(&req, known, &Limits::default()).is_err());
        let req = CreateSandboxRequest { ttl_s: Some(0), ..Default::default() };
        assert!(create_spec(&req, known, &Limits::default()).is_err());
    }

    #[test]
    fn unknown_templates_have_their_own_code() {
        let req = CreateSandboxRequest { template: Some("nope".into()), ..Default::default() };
        let err = create_spec(&req, known, &Limits::default()).unwrap_err();
        assert_eq!(err.code, "unknown_template");
        let req = CreateSandboxRequest { template: Some("../etc".into()), ..Default::default() };
        assert_eq!(create_spec(&req, |_| true, &Limits::default()).unwrap_err().code, "invalid_request");
    }

    #[test]
    fn network_is_isolated_by_default_and_unknown_modes_are_refused() {
        let l = Limits::default();
        assert_eq!(create_spec(&CreateSandboxRequest::default(), known, &l).unwrap().network, NetworkMode::Isolated);
        let nat = CreateSandboxRequest { network: Some("nat".into()), ..Default::default() };
        assert_eq!(create_spec(&nat, known, &l).unwrap().network, NetworkMode::Nat);
        let bad = CreateSandboxRequest { network: Some("bridge".into()), ..Default::default() };
        let err = create_spec(&bad, known, &l).unwrap_err();
        assert_eq!((err.code, err.message.as_str()), ("invalid_request", "network must be \"isolated\" or \"nat\", got \"bridge\""));
    }

    #[test]
    fn env_names_are_checked() {
        let mut req = CreateSandboxRequest::default();
        req.env.insert("1BAD".into(), "x".into());
        assert!(create_spec(&req, known, &Limits::default()).is_err());
        let mut req = CreateSandboxRequest::default();
        req.env.insert("GOOD_1".into(), "x".into());
        assert!(create_spec(&req, known, &Limits::default()).is_ok());
    }

    #[test]
    fn exec_needs_a_program_and_a_sane_timeout() {
        let l = Limits::default();
        assert!(exec_request(&ExecRequest::default(), &l).is_err());
        let ok = ExecRequest { cmd: vec!["true".into()], ..Default::default() };
        assert_eq!(exec_request(&ok, &l), Ok(60_000));
        let zero = ExecRequest { timeout_ms: Some(0), ..ok.clone() };
        assert!(exec_request(&zero, &l).is_err());
    }

    #[test]
    fn batch_counts_are_bounded() {
        let l = Limits::default();
        assert_eq!(batch_count(5, &l), Ok(5));
        assert!(batch_count(0, &l).is_err());
        assert!(batch_count(10_001, &l).is_err());
    }
}
