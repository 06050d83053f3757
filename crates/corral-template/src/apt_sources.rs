//! Finds the Debian mirror this machine's apt already uses. Only the package
//! registries configured there are reachable from our hosts, so debootstrap
//! must use the same one rather than any hardcoded host.

use std::fs;
use std::path::Path;

use crate::error::{Result, TemplateError};

/// One `deb` source: a mirror URI and the suites it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    pub uri: String,
    pub suites: Vec<String>,
}

/// Parses one file: one-line `.list` format (`deb [opts] URI SUITE COMP...`)
/// or deb822 `.sources` stanzas (`Types:`, `URIs:`, `Suites:`, `Enabled:`).
/// `deb-src` entries and disabled stanzas are skipped.
pub fn parse_sources(text: &str, deb822: bool) -> Vec<AptSource> {
    if deb822 {
        text.split("\n\n").filter_map(parse_stanza).flat_map(|v| v.into_iter()).collect()
    } else {
        text.lines().filter_map(parse_list_line).collect()
    }
}

fn parse_list_line(line: &str) -> Option<AptSource> {
    let line = line.split('#').next()?.trim();
    let mut words = line.split_whitespace();
    if words.next()? != "deb" {
        return None;
    }
    let mut rest: Vec<&str> = words.collect();
    if rest.first()?.starts_with('[') {
        let end = rest.iter().position(|w| w.ends_with(']'))?;
        rest.drain(..=end);
    }
    Some(AptSource { uri: rest.first()?.to_string(), suites: vec![rest.get(1)?.to_string()] })
}

fn parse_stanza(stanza: &str) -> Option<Vec<AptSource>> {
    let field = |key: &str| {
        stanza.lines().filter(|l| !l.trim_start().starts_with('#')).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(key).then(|| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        })
    };
    if !field("Types")?.iter().any(|t| t == "deb") {
        return None;
    }
    if field("Enabled").is_some_and(|v| v.first().is_some_and(|e| e.eq_ignore_ascii_case("no"))) {
        return None;
    }
    let suites = field("Suites")?;
    Some(field("URIs")?.into_iter().map(|uri| AptSource { uri, suites: suites.clone() }).collect())
}

/// Every `deb` source of this machine (`/etc/apt/sources.list` and
/// `/etc/apt/sources.list.d/*.list|*.sources`), in apt's order.
pub fn machine_sources(etc_apt: &Path) -> Vec<AptSource> {
    let mut out = Vec::new();
    if let Ok(text) = fs::read_to_string(etc_apt.join("sources.list")) {
        out.extend(parse_sources(&text, false));
    }
    let mut files: Vec<_> = fs::read_dir(etc_apt.join("sources.list.d"))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        if let (true, Ok(text)) = (ext == "list" || ext == "sources", fs::read_to_string(&f)) {
            out.extend(parse_sources(&text, ext == "sources"));
        }
    }
    out
}

/// The mirror serving `suite` (exactly, e.g. `bookworm`, not `bookworm-security`)
/// in this machine's apt sources.
pub fn default_mirror(suite: &str) -> Result<String> {
    machine_sources(Path::new("/etc/apt"))
        .into_iter()
        .find(|s| s.suites.iter().any(|x| x == suite))
        .map(|s| s.uri)
        .ok_or_else(|| {
            TemplateError::InvalidArgument(format!(
                "no apt source of this machine serves suite {suite:?}; pass --mirror URL (one of the registries apt uses)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_deb822_and_list() {
        let d822 = "Types: deb\n# comment\nURIs: http://m.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
                    Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n\
                    Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n";
        let got = parse_sources(d822, true);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].uri, "http://m.example/debian");
        assert_eq!(got[0].suites, ["bookworm", "bookworm-updates"]);
        let list = "# x\ndeb [arch=amd64 signed-by=/k.gpg] http://a.example/debian bookworm main\ndeb-src http://b/ bookworm main\ndeb http://c.example/d trixie main # tail\n";
        let got = parse_sources(list, false);
        assert_eq!(got, [
            AptSource { uri: "http://a.example/debian".into(), suites: vec!["bookworm".into()] },
            AptSource { uri: "http://c.example/d".into(), suites: vec!["trixie".into()] },
        ]);
    }
}
