//! Server verification for a node that has no certificate yet: the server
//! must present a chain that contains a certificate whose SHA-256 equals the
//! hash in the join token, and its leaf must verify against that
//! certificate (as the only root) for the dialled name or IP. Anything else
//! fails the handshake, and the verifier remembers that it refused so the
//! caller can tell "wrong cluster" from "network down".

use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::cluster::pki::ca_hash;

/// Verifies a server against the CA pinned by a join token.
#[derive(Debug)]
pub(crate) struct PinnedCaVerifier {
    ca_hash: [u8; 32],
    provider: Arc<CryptoProvider>,
    refusal: Mutex<Option<String>>,
}

impl PinnedCaVerifier {
    pub(crate) fn new(ca_hash: [u8; 32]) -> Self {
        Self {
            ca_hash,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            refusal: Mutex::new(None),
        }
    }

    /// Why the last handshake was refused, if it was.
    pub(crate) fn refusal(&self) -> Option<String> {
        self.refusal.lock().ok().and_then(|r| r.clone())
    }

    fn refuse(&self, reason: String) -> rustls::Error {
        if let Ok(mut slot) = self.refusal.lock() {
            *slot = Some(reason.clone());
        }
        rustls::Error::General(reason)
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|c| crate::cluster::pki::token_hash_eq(&ca_hash(c), &self.ca_hash))
        else {
            return Err(self.refuse(
                "server chain holds no CA certificate matching the join token hash".into(),
            ));
        };
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| self.refuse(format!("pinned CA certificate is unusable: {e}")))?;
        let inner = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&self.provider),
        )
        .build()
        .map_err(|e| self.refuse(format!("pinned CA certificate is unusable: {e}")))?;
        inner
            .verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
            .map_err(|e| self.refuse(format!("server certificate does not verify: {e}")))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
