//! HdrHistograms of a run (µs, 3 significant digits) saved beside the data so
//! shards run on several machines merge exactly: adding histograms loses
//! nothing, unlike averaging percentiles.
//!
//! Files: `<out>/{allocate,first_command,tti}.hdr` (V2 serialization, ready
//! sandboxes only; the failure count is in meta.json).

use std::path::Path;

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;

use crate::record::Record;
use crate::BenchError;

pub const SIGFIG: u8 = 3;
pub const NAMES: [&str; 3] = ["allocate", "first_command", "tti"];

pub fn new_histogram() -> Histogram<u64> {
    // Auto-resizing: no upper bound to guess; 3 significant digits.
    Histogram::new(SIGFIG).expect("3 significant digits is valid")
}

fn value(r: &Record, name: &str) -> Option<f64> {
    match name {
        "allocate" => r.allocate_ms,
        "first_command" => r.first_command_ms,
        "tti" => r.tti_ms,
        _ => None,
    }
}

/// The three histograms of ready sandboxes, in the order of [`NAMES`].
pub fn from_records(records: &[Record]) -> Vec<Histogram<u64>> {
    NAMES
        .iter()
        .map(|name| {
            let mut h = new_histogram();
            for r in records.iter().filter(|r| r.status.was_ready()) {
                if let Some(ms) = value(r, name) {
                    let _ = h.record((ms.max(0.0) * 1000.0).round() as u64);
                }
            }
            h
        })
        .collect()
}

pub fn save(path: &Path, h: &Histogram<u64>) -> Result<(), BenchError> {
    let mut buf = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut buf)
        .map_err(|e| BenchError::Parse { path: path.into(), message: format!("{e:?}") })?;
    let tmp = path.with_extension("hdr.tmp");
    std::fs::write(&tmp, &buf).map_err(|e| BenchError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| BenchError::io("rename", path, e))
}

pub fn load(path: &Path) -> Result<Histogram<u64>, BenchError> {
    let bytes = std::fs::read(path).map_err(|e| BenchError::io("read", path, e))?;
    let mut h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| BenchError::Parse { path: path.into(), message: format!("{e:?}") })?;
    // Deserialized histograms are fixed-range; merging needs them to grow.
    h.auto(true);
    Ok(h)
}

pub fn save_all(dir: &Path, hists: &[Histogram<u64>]) -> Result<(), BenchError> {
    for (name, h) in NAMES.iter().zip(hists) {
        save(&dir.join(format!("{name}.hdr")), h)?;
    }
    Ok(())
}

pub fn load_all(dir: &Path) -> Result<Vec<Histogram<u64>>, BenchError> {
    NAMES.iter().map(|name| load(&dir.join(format!("{name}.hdr")))).collect()
}

/// Adds `other` into `into`, histogram by histogram.
pub fn merge_into(into: &mut [Histogram<u64>], other: &[Histogram<u64>]) -> Result<(), BenchError> {
    for (a, b) in into.iter_mut().zip(other) {
        a.add(b).map_err(|e| BenchError::Config(format!("histograms do not merge: {e:?}")))?;
    }
    Ok(())
}

/// p50/p99/max in ms of a µs histogram, for reports.
pub fn quantiles_ms(h: &Histogram<u64>) -> (f64, f64, f64) {
    let ms = |v: u64| v as f64 / 1000.0;
    (ms(h.value_at_quantile(0.5)), ms(h.value_at_quantile(0.99)), ms(h.max()))
}
