//! TLS test helpers: a CA and serving certificates made with rcgen, and an HTTPS client that
//! verifies the server the way the API server does (CA from `caBundle`, Service DNS name) and
//! reports which certificate was presented.

#![allow(dead_code)] // Each test binary uses a different part.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// DNS name of the webhook's Service, as the API server calls it.
pub const SERVICE: &str = "dadi-p2p-admission.dadi-p2p-system.svc";

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pub der: CertificateDer<'static>,
}

pub fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let der = params.self_signed(&key).unwrap().der().clone();
    Ca { params, key, der }
}

/// A serving certificate for the Service name, as (cert PEM, key PEM, cert DER).
pub fn leaf(ca: &Ca) -> (String, String, CertificateDer<'static>) {
    let params = CertificateParams::new(vec![SERVICE.to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params
        .signed_by(&key, &Issuer::from_params(&ca.params, &ca.key))
        .unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

/// One new TLS connection: the certificate the server presented and a ready HTTP/1.1 sender.
pub async fn connect(
    addr: std::net::SocketAddr,
    trust: &CertificateDer<'static>,
) -> Result<
    (
        CertificateDer<'static>,
        hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    ),
    rustls::Error,
> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(SERVICE).unwrap(), tcp)
        .await
        .map_err(|e| {
            e.into_inner()
                .and_then(|i| i.downcast::<rustls::Error>().ok())
                .map(|b| *b)
                .unwrap_or(rustls::Error::General("handshake failed".into()))
        })?;
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    Ok((presented, sender))
}

pub async fn call(sender: &mut Sender, method: &str, path: &str, body: Vec<u8>) -> (u16, Bytes) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", SERVICE)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}
