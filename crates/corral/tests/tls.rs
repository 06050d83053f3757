//! TLS on both server ports: a throwaway CA and a certificate for 127.0.0.1
//! are made at test time; the REST client, the CLI and the dataplane trust
//! that CA, and clients that speak plain HTTP or do not trust it are refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{eventually, Cluster, API_TOKEN, BIN, JOIN_TOKEN};
use corral_client::{Client, ClientError, ListFilter};
use corral_core::api::{CreateSandboxRequest, ExecRequest};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// PEM files of one test PKI.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A CA and a server certificate for 127.0.0.1 signed by it, written to `dir`.
fn make_pki(dir: &Path, name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, format!("corral test CA {name}"));
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let pki = Pki {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

fn is_transport_error(r: Result<impl std::fmt::Debug, ClientError>) -> bool {
    matches!(r, Err(ClientError::Transport { .. }))
}

async fn tls_cluster() -> (Cluster, Pki) {
    let mut c = Cluster::prepare_split();
    let pki = make_pki(c.dir.path(), "main");
    c.scheme = "https";
    c.extra_server_args = vec![
        "--tls-cert".into(),
        pki.cert.display().to_string(),
        "--tls-key".into(),
        pki.key.display().to_string(),
    ];
    c.extra_dataplane_args = vec!["--ca".into(), pki.ca.display().to_string()];
    let ca = std::fs::read(&pki.ca).unwrap();
    c.client = Client::with_ca(&c.url(), Some(API_TOKEN.into()), Some(&ca)).unwrap();
    c.start_server();
    c.start_dataplane();
    c.wait_ready().await;
    (c, pki)
}

#[tokio::test]
async fn a_cluster_over_tls_creates_and_execs_in_a_sandbox() {
    let (c, pki) = tls_cluster().await;
    let sb = c.client.create(&CreateSandboxRequest::default(), true).await.unwrap();
    let req = ExecRequest { cmd: vec!["echo".into(), "over tls".into()], ..Default::default() };
    let out = c.client.exec(&sb.id, &req).await.unwrap();
    assert_eq!((out.exit_code, out.stdout.as_str()), (0, "over tls\n"), "{}", c.logs());

    let cli = Command::new(BIN)
        .args(["sandbox", "ls", "--json"])
        .env("CORRAL_URL", c.url())
        .env("CORRAL_TOKEN", API_TOKEN)
        .env("CORRAL_CA", &pki.ca)
        .output()
        .unwrap();
    assert!(cli.status.success(), "the CLI trusts CORRAL_CA: {}", String::from_utf8_lossy(&cli.stderr));
    assert!(String::from_utf8_lossy(&cli.stdout).contains(&sb.id));
}

#[tokio::test]
async fn plain_http_and_clients_that_do_not_trust_the_ca_are_refused() {
    let (c, _pki) = tls_cluster().await;
    let before = c.client.list(&ListFilter::default()).await.unwrap().len();

    let plain = Client::new(&format!("http://127.0.0.1:{}", c.api_port), Some(API_TOKEN.into())).unwrap();
    assert!(is_transport_error(plain.create(&CreateSandboxRequest::default(), false).await), "plain HTTP is refused");

    let no_ca = Client::new(&c.url(), Some(API_TOKEN.into())).unwrap();
    assert!(is_transport_error(no_ca.create(&CreateSandboxRequest::default(), false).await), "the web roots do not know our CA");

    let other = make_pki(c.dir.path(), "other");
    let wrong_ca = Client::with_ca(&c.url(), Some(API_TOKEN.into()), Some(&std::fs::read(&other.ca).unwrap())).unwrap();
    assert!(is_transport_error(wrong_ca.create(&CreateSandboxRequest::default(), false).await), "another CA is not ours");

    assert_eq!(c.client.list(&ListFilter::default()).await.unwrap().len(), before, "refused clients changed nothing");

    // A dataplane that does not trust the CA cannot register.
    let dir = c.dir.path().join("dataplane-untrusting");
    let server = format!("https://127.0.0.1:{}", c.grpc_port);
    let log = c.dir.path().join("dataplane-untrusting.log");
    let untrusting = common::Proc::spawn(
        &[
            "dataplane", "--server", &server, "--data-dir", dir.to_str().unwrap(), "--host-id", "untrusting",
            "--join-token", JOIN_TOKEN, "--driver", "process",
        ],
        &log,
    );
    eventually(Duration::from_secs(20), "the untrusting dataplane to fail to register", || async {
        untrusting.log_text().contains("register failed").then_some(())
    })
    .await;
    let hosts = c.client.hosts().await.unwrap();
    assert_eq!(hosts.hosts.iter().map(|h| h.host.id.as_str()).collect::<Vec<_>>(), vec!["h1"]);
}

#[test]
fn a_ca_with_a_plain_url_is_refused_rather_than_ignored() {
    let err = Client::with_ca("http://127.0.0.1:1", None, Some(b"")).err().expect("refused");
    assert!(matches!(&err, ClientError::Config(m) if m.contains("https://")), "{err}");
    let err = Client::with_ca("https://127.0.0.1:1", None, Some(b"not a pem")).err().expect("refused");
    assert!(matches!(err, ClientError::Config(_)));
}

/// Runs `corral server` with `tls` flags and returns its stderr (it must fail).
fn server_start_failure(dir: &Path, tls: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["server", "--insecure-no-auth", "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("server"))
        .args(tls)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the server must not start with {tls:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_server_refuses_to_start_with_bad_tls_files() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "a");
    let other = make_pki(dir.path(), "b");
    let (cert, key, other_key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap(), other.key.to_str().unwrap());

    let err = server_start_failure(dir.path(), &["--tls-cert", "/nonexistent/cert.pem", "--tls-key", key]);
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    let err = server_start_failure(dir.path(), &["--tls-cert", cert, "--tls-key", "/nonexistent/key.pem"]);
    assert!(err.contains("/nonexistent/key.pem"), "{err}");
    let err = server_start_failure(dir.path(), &["--tls-cert", key, "--tls-key", key]);
    assert!(err.contains("no PEM certificate"), "{err}");
    let err = server_start_failure(dir.path(), &["--tls-cert", cert, "--tls-key", cert]);
    assert!(err.contains("no PEM private key"), "{err}");
    let err = server_start_failure(dir.path(), &["--tls-cert", cert, "--tls-key", other_key]);
    assert!(err.contains("usable identity"), "a key of another certificate: {err}");
    let err = server_start_failure(dir.path(), &["--tls-cert", cert]);
    assert!(err.contains("--tls-key"), "{err}");
}
