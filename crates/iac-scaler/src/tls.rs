//! TLS for the monitor's gRPC endpoint: the stack's own CA and the monitor's certificate
//! ([`generate`]), and the server side ([`acceptor`], [`incoming`]), which performs each
//! handshake itself so that a failed one (a plaintext client, a client that does not trust this
//! CA, an expired certificate on either side) is counted instead of vanishing in the server.
//!
//! rustls with aws-lc-rs: the crypto provider the AWS SDK already brings, so the workspace
//! links one crypto stack.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

/// A handshake that takes longer than this is dropped (and counted as refused).
const HANDSHAKE: Duration = Duration::from_secs(10);

/// What `iac up` stores for a stack: the CA agents pin, and the monitor's certificate and key.
/// The CA's own key is not kept: a new monitor certificate comes with a new CA.
#[derive(Clone)]
pub struct StackTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for StackTls {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StackTls(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot generate the stack's certificates: {0}")]
    Generate(String),
    #[error("the monitor's TLS certificate or key is unusable: {0}")]
    Load(String),
}

impl StackTls {
    /// The one text `iac up` stores (a SecureString only the monitor reads): the monitor's key,
    /// its certificate, then the CA's certificate, PEM blocks in that order.
    pub fn bundle(&self) -> String {
        format!("{}{}{}", self.key_pem, self.cert_pem, self.ca_pem)
    }
}

/// A CA and the monitor's certificate (for [`iac_proto::MONITOR_TLS_NAME`]), valid from the
/// start of this year for ten years.
pub fn generate() -> Result<StackTls, TlsError> {
    generate_for(iac_proto::MONITOR_TLS_NAME)
}

/// [`generate`] for another server name.
pub fn generate_for(server_name: &str) -> Result<StackTls, TlsError> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let year = 1970 + (secs / 31_556_952) as i32;
    generate_named(server_name, year, year + 10)
}

/// [`generate`] with the validity given in years (from 1 January to 1 January): tests make
/// expired certificates with it.
pub fn generate_between(from_year: i32, to_year: i32) -> Result<StackTls, TlsError> {
    generate_named(iac_proto::MONITOR_TLS_NAME, from_year, to_year)
}

fn generate_named(server_name: &str, from_year: i32, to_year: i32) -> Result<StackTls, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let e = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let (from, to) = (
        rcgen::date_time_ymd(from_year, 1, 1),
        rcgen::date_time_ymd(to_year, 1, 1),
    );
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "iac custom-scaler CA");
    (ca.not_before, ca.not_after) = (from, to);
    let ca_key = KeyPair::generate().map_err(e)?;
    let ca_pem = ca.self_signed(&ca_key).map_err(e)?.pem();
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(vec![server_name.to_string()]).map_err(e)?;
    leaf.distinguished_name
        .push(DnType::CommonName, server_name);
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    (leaf.not_before, leaf.not_after) = (from, to);
    let key = KeyPair::generate().map_err(e)?;
    let cert_pem = leaf.signed_by(&key, &issuer).map_err(e)?.pem();
    Ok(StackTls {
        ca_pem,
        cert_pem,
        key_pem: key.serialize_pem(),
    })
}

/// The server side of TLS for a certificate chain and key (PEM), speaking HTTP/2 only.
pub fn acceptor(cert_pem: &str, key_pem: &str) -> Result<TlsAcceptor, TlsError> {
    let e = |e: String| TlsError::Load(e);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|x| e(format!("certificate: {x}")))?;
    if certs.is_empty() {
        return Err(e("no certificate in the PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|x| e(format!("private key: {x}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|x| e(x.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|x| e(x.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections on `listener` and yields those whose TLS handshake succeeded, each
/// handshake on its own task (a slow client holds up nobody). `refused` hears the peer address
/// of every failed or timed-out handshake. Stops when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    refused: Arc<dyn Fn(&str) + Send + Sync>,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(128);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (acceptor, tx, refused) = (acceptor.clone(), tx.clone(), refused.clone());
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    _ => refused(&peer.to_string()),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
