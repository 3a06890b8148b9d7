//! TLS for the TCP listeners, with rustls directly rather than tonic's `tls-*` features: a cargo
//! feature of tonic would be unified into every crate of the workspace, the worker included, and
//! the binary inside the sandbox has no use for TLS code.
//!
//! The settings come from `--tls-cert`/`--tls-key` or from TensorFlow Serving's
//! `--ssl_config_file` (a text-format `SSLConfig`: `server_key`, `server_cert`, `custom_ca`,
//! `client_verify`, each PEM given inline as there). With `client_verify`, clients must present a
//! certificate that chains to `custom_ca`; its common name becomes the caller's `cert:CN`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::model_config;

/// How long a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's PEM certificate chain and key, and the CA its clients' certificates must chain
/// to when clients are verified.
#[derive(Clone)]
pub struct TlsSettings {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// `Some`: clients must present a certificate this CA (PEM) signed.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsSettings {
    // The private key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("client_verify", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// `--tls-cert` and `--tls-key`: no client verification.
    pub fn from_files(cert: &Path, key: &Path) -> Result<TlsSettings, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        Ok(TlsSettings {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            client_ca_pem: None,
        })
    }

    /// TensorFlow Serving's `--ssl_config_file`.
    pub fn from_ssl_config(path: &Path) -> Result<TlsSettings, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        parse_ssl_config(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn verifies_clients(&self) -> bool {
        self.client_ca_pem.is_some()
    }
}

fn parse_ssl_config(text: &str) -> Result<TlsSettings, String> {
    let (mut key, mut cert, mut ca, mut verify) = (None, None, None, false);
    for (name, value) in model_config::flat_fields(text)? {
        match name.as_str() {
            "server_key" => key = Some(value.into_bytes()),
            "server_cert" => cert = Some(value.into_bytes()),
            "custom_ca" => ca = Some(value.into_bytes()).filter(|v| !v.is_empty()),
            "client_verify" => {
                verify = crate::text_format::boolean(&value)
                    .ok_or_else(|| format!("client_verify: '{value}' is not a bool"))?
            }
            other => return Err(format!("SSLConfig has no field '{other}'")),
        }
    }
    let (Some(key_pem), Some(cert_pem)) = (key, cert) else {
        return Err("SSLConfig needs server_key and server_cert".to_string());
    };
    if verify && ca.is_none() {
        return Err(
            "client_verify: true needs custom_ca, the CA client certificates must chain to"
                .to_string(),
        );
    }
    if !verify && ca.is_some() {
        // As in TensorFlow Serving, custom_ca only matters for verifying clients.
        tracing::warn!("--ssl_config_file: custom_ca is not used without client_verify: true");
    }
    Ok(TlsSettings {
        cert_pem,
        key_pem,
        client_ca_pem: ca.filter(|_| verify),
    })
}

/// The acceptor for gRPC (ALPN `h2`, which gRPC clients require) and the one for REST (ALPN
/// `http/1.1`: the REST server speaks HTTP/1 only, so a client must not be offered h2).
pub fn acceptors(settings: &TlsSettings) -> Result<(TlsAcceptor, TlsAcceptor), String> {
    let certs = CertificateDer::pem_slice_iter(&settings.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if certs.is_empty() {
        return Err("certificate: no PEM certificate found".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&settings.key_pem).map_err(|e| format!("key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &settings.client_ca_pem {
        Some(ca_pem) => {
            let mut roots = RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(ca_pem) {
                let ca = ca.map_err(|e| format!("custom_ca: {e}"))?;
                roots.add(ca).map_err(|e| format!("custom_ca: {e}"))?;
            }
            if roots.is_empty() {
                return Err("custom_ca: no PEM certificate found".into());
            }
            // Without a certificate that chains to the CA, the handshake fails.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("custom_ca: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    let mut grpc = config.clone();
    grpc.alpn_protocols = vec![b"h2".to_vec()];
    let mut rest = config;
    rest.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((
        TlsAcceptor::from(Arc::new(grpc)),
        TlsAcceptor::from(Arc::new(rest)),
    ))
}

/// The TLS side of a connection once its handshake is done, with the verified client
/// certificate's identity (`cert:CN`) if there is one; `None` (logged) if the handshake failed
/// or took longer than [`HANDSHAKE_TIMEOUT`]. Handshakes run side by side, so a slow or silent
/// client holds up no one else.
pub async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
) -> Option<(TlsStream<TcpStream>, Option<Arc<str>>)> {
    let peer = tcp.peer_addr().ok();
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            // rustls hands out the client's chain only once its verifier accepted it.
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| crate::auth::certificate_identity(cert));
            Some((tls, identity.map(Arc::from)))
        }
        Ok(Err(error)) => {
            tracing::debug!(?peer, "TLS handshake failed: {error}");
            None
        }
        Err(_) => {
            tracing::debug!(?peer, "TLS handshake timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_config() {
        let settings = parse_ssl_config(
            "server_key: '-----KEY\\nabc' server_cert: \"CERT\" \"MORE\"\ncustom_ca: 'CA'\nclient_verify: true\n",
        )
        .unwrap();
        assert_eq!(settings.key_pem, b"-----KEY\nabc");
        assert_eq!(settings.cert_pem, b"CERTMORE");
        assert_eq!(settings.client_ca_pem.as_deref(), Some(&b"CA"[..]));
        let error =
            parse_ssl_config("server_key: 'k' server_cert: 'c' client_verify: true").unwrap_err();
        assert!(error.contains("needs custom_ca"), "{error}");
        assert!(parse_ssl_config("server_key: 'k'").is_err());
        assert!(parse_ssl_config("server_key: 'k' server_cert: 'c' other: 1").is_err());
        let plain = parse_ssl_config("server_key: 'k' server_cert: 'c' custom_ca: 'x'").unwrap();
        assert!(!plain.verifies_clients());
    }
}
