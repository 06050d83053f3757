//! Reading and writing files inside the sandbox for the runtime.
//!
//! The init's root *is* the sandbox root, so paths (and symlinks) resolve
//! inside it. Only regular files are served, opened non-blocking (a FIFO
//! planted at the path cannot stall the init), and never on procfs or sysfs:
//! the init's own `/proc/self/mem` or `environ` must not be readable through
//! this door.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixStream;

use super::server::Init;
use crate::protocol::{self, InitReply, Kind, CHUNK};

/// Largest file moved either way.
pub(crate) const MAX_FILE: usize = 256 << 20;
const PROC_SUPER_MAGIC: i64 = 0x9fa0;
const SYSFS_MAGIC: i64 = 0x6265_6572;

fn resolve(path: &str, init: &Init) -> PathBuf {
    if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        Path::new(if init.workdir.is_empty() {
            "/"
        } else {
            &init.workdir
        })
        .join(path)
    }
}

/// Refuses anything but a regular file on an ordinary filesystem.
fn check(f: &File, path: &Path) -> std::io::Result<()> {
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    let st = nix::sys::statfs::fstatfs(f).map_err(std::io::Error::from)?;
    let magic = st.filesystem_type().0 as i64;
    if magic == PROC_SUPER_MAGIC || magic == SYSFS_MAGIC {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{} is on a kernel filesystem", path.display()),
        ));
    }
    Ok(())
}

fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    check(&f, path)?;
    if f.metadata()?.len() > MAX_FILE as u64 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "file too large",
        ));
    }
    let mut data = Vec::new();
    Read::by_ref(&mut f)
        .take(MAX_FILE as u64 + 1)
        .read_to_end(&mut data)?;
    Ok(data)
}

pub(crate) async fn read(conn: &mut UnixStream, path: &str, init: &Init) -> std::io::Result<()> {
    let p = resolve(path, init);
    match read_file(&p) {
        Ok(data) => {
            for chunk in data.chunks(CHUNK) {
                protocol::write_frame(conn, Kind::Data, chunk).await?;
            }
            protocol::write_json(conn, Kind::Reply, &InitReply::Done).await
        }
        Err(e) => error(conn, &p, e).await,
    }
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    check(&f, path)?;
    f.set_len(0)?;
    f.write_all(data)?;
    f.set_permissions(fs::Permissions::from_mode(mode))
}

pub(crate) async fn write(
    conn: &mut UnixStream,
    path: &str,
    mode: u32,
    init: &Init,
) -> std::io::Result<()> {
    let data = protocol::read_data(conn, MAX_FILE).await?;
    let p = resolve(path, init);
    let mode = if mode == 0 { 0o644 } else { mode & 0o7777 };
    match write_file(&p, &data, mode) {
        Ok(()) => protocol::write_json(conn, Kind::Reply, &InitReply::Done).await,
        Err(e) => error(conn, &p, e).await,
    }
}

async fn error(conn: &mut UnixStream, p: &Path, e: std::io::Error) -> std::io::Result<()> {
    let missing = e.kind() == std::io::ErrorKind::NotFound;
    let reply = InitReply::Error {
        message: format!("{}: {e}", p.display()),
        missing,
    };
    protocol::write_json(conn, Kind::Reply, &reply).await
}
