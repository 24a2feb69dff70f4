//! TLS for Stratum (rustls, ring provider): a configured certificate
//! chain and key (PEM files), or, for development, a self-signed one
//! generated once into the data directory and reused afterwards.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.to_path_buf(), reason: reason.to_string() }
}

/// A server configuration from a PEM certificate chain and a PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).map_err(|e| file_err(cert, e))?.collect::<Result<_, _>>().map_err(|e| file_err(cert, e))?;
    if chain.is_empty() {
        return Err(file_err(cert, "no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(cfg))
}

/// The development certificate in `dir` (`cert.pem`, `key.pem`, mode
/// 0600), generated for `names` if it is not there yet. Returns the paths.
pub fn self_signed(dir: &Path, names: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let ck = rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| TlsError::Config(e.to_string()))?;
    std::fs::write(&cert, ck.cert.pem()).map_err(|e| file_err(&cert, e))?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&key).map_err(|e| file_err(&key, e))?;
    f.write_all(ck.key_pair.serialize_pem().as_bytes()).map_err(|e| file_err(&key, e))?;
    Ok((cert, key))
}

/// SHA-256 of the first certificate in a PEM file, hex (what a miner
/// pins a self-signed certificate by).
pub fn fingerprint(cert: &Path) -> Result<String, TlsError> {
    let der = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e))?
        .next()
        .ok_or_else(|| file_err(cert, "no certificate in the file"))?
        .map_err(|e| file_err(cert, e))?;
    use sha2::Digest;
    Ok(hex::encode(sha2::Sha256::digest(der.as_ref())))
}
