//! Who may publish to the remote cache: ed25519 signing keys, and the signed envelope every entry travels in.
//!
//! A reader accepts an entry only when its manifest is signed by a key the repository lists in
//! `trusted_writers` (or by the reader's own key), and only for the key it asked for: a pull request that can
//! write to the server can still not make `main` restore anything it did not build itself.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::config::{TrustedWriter, PUBLIC_KEY_PREFIX};

/// The text form of a signing key: this prefix and the 32-byte seed in base64.
pub const SECRET_KEY_PREFIX: &str = "ed25519-secret:";

/// The envelope's format name; a reader ignores envelopes of other formats.
pub const ENVELOPE_FORMAT: &str = "cairn-remote-entry/1";

/// Signed messages start with this, so a signature made for anything else never verifies as an entry's.
const SIGNING_CONTEXT: &[u8] = b"cairn remote cache entry v1\n";

/// A writer's private key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    seed: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public_text())
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<SigningKey, String> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| format!("no randomness available: {e}"))?;
        SigningKey::from_seed(seed)
    }

    fn from_seed(seed: Zeroizing<[u8; 32]>) -> Result<SigningKey, String> {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed[..])
            .map_err(|e| format!("not an ed25519 key: {e}"))?;
        Ok(SigningKey { pair, seed })
    }

    /// Reads the text form (`ed25519-secret:<base64>`); lines starting with `#` and blank lines are skipped.
    pub fn parse(text: &str) -> Result<SigningKey, String> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or("it is empty")?;
        let encoded = line
            .strip_prefix(SECRET_KEY_PREFIX)
            .ok_or_else(|| format!("a signing key starts with `{SECRET_KEY_PREFIX}`"))?;
        let bytes = Zeroizing::new(
            BASE64
                .decode(encoded)
                .map_err(|_| "the key is not valid base64".to_owned())?,
        );
        let seed: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| format!("an ed25519 key has 32 bytes, this one {}", bytes.len()))?;
        SigningKey::from_seed(Zeroizing::new(seed))
    }

    /// The text form, for the key file.
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{SECRET_KEY_PREFIX}{}",
            BASE64.encode(&self.seed[..])
        ))
    }

    /// The public key's bytes.
    pub fn public(&self) -> [u8; 32] {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.pair.public_key().as_ref());
        key
    }

    /// The public key as `trusted_writers` lists it.
    pub fn public_text(&self) -> String {
        public_text(&self.public())
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// `ed25519:<base64>`.
pub fn public_text(key: &[u8; 32]) -> String {
    format!("{PUBLIC_KEY_PREFIX}{}", BASE64.encode(key))
}

/// What travels to `/ac/`: the manifest's exact bytes, who signed them, and the signature.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// [`ENVELOPE_FORMAT`].
    pub format: String,
    /// The writer's public key, `ed25519:<base64>`.
    pub writer: String,
    /// The manifest's JSON, in base64 so the signed bytes are the bytes read back.
    pub manifest: String,
    /// The signature over [`SIGNING_CONTEXT`] and the manifest's bytes, in base64.
    pub signature: String,
}

/// Why an entry from the remote was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// It is not an envelope cairn can read (unsigned, or not cairn's).
    Malformed(String),
    /// It is signed by a key this repository does not trust.
    UntrustedWriter(String),
    /// The signature does not verify: the manifest or the signature was changed.
    BadSignature(String),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Malformed(why) => write!(f, "it is not a signed cairn entry ({why})"),
            Rejection::UntrustedWriter(key) => {
                write!(f, "it is signed by {key}, which is not in trusted_writers")
            }
            Rejection::BadSignature(writer) => {
                write!(
                    f,
                    "its signature by {writer} does not verify (it was altered)"
                )
            }
        }
    }
}

/// Signs `manifest` (JSON bytes) into an envelope.
pub fn seal(key: &SigningKey, manifest: &[u8]) -> Envelope {
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + manifest.len());
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(manifest);
    Envelope {
        format: ENVELOPE_FORMAT.to_owned(),
        writer: key.public_text(),
        manifest: BASE64.encode(manifest),
        signature: BASE64.encode(key.sign(&message)),
    }
}

/// Checks an envelope read from `/ac/` and returns the manifest's bytes and the name of the writer, if it
/// is signed by `expected` (the writer whose slot was read) and `expected` is trusted.
pub fn open(bytes: &[u8], expected: &TrustedWriter) -> Result<(Vec<u8>, String), Rejection> {
    let envelope: Envelope = serde_json::from_slice(bytes)
        .map_err(|e| Rejection::Malformed(format!("not an envelope: {e}")))?;
    if envelope.format != ENVELOPE_FORMAT {
        return Err(Rejection::Malformed(format!(
            "format `{}`, expected `{ENVELOPE_FORMAT}`",
            envelope.format
        )));
    }
    let writer = crate::config::parse_public_key(&envelope.writer)
        .map_err(|why| Rejection::Malformed(format!("writer: {why}")))?;
    if writer != expected.key {
        return Err(Rejection::UntrustedWriter(short(&envelope.writer)));
    }
    let manifest = BASE64
        .decode(&envelope.manifest)
        .map_err(|_| Rejection::Malformed("the manifest is not base64".into()))?;
    let signature = BASE64
        .decode(&envelope.signature)
        .map_err(|_| Rejection::BadSignature(expected.name.clone()))?;
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + manifest.len());
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(&manifest);
    UnparsedPublicKey::new(&ED25519, &expected.key)
        .verify(&message, &signature)
        .map_err(|_| Rejection::BadSignature(expected.name.clone()))?;
    Ok((manifest, expected.name.clone()))
}

/// Where a writer's entry for `key` lives below `/ac/`: a SHA-256 of the key and the writer's public key, so
/// each writer has its own slot and one writer never overwrites another's entries.
pub fn slot(key: &str, writer: &[u8; 32]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"cairn remote slot v1\n");
    hasher.update(key.as_bytes());
    hasher.update(b"\n");
    hasher.update(writer);
    crate::cache::hex(&hasher.finalize())
}

/// A key's first characters, enough to tell keys apart in a message.
fn short(text: &str) -> String {
    text.chars().take(PUBLIC_KEY_PREFIX.len() + 8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(key: &SigningKey, name: &str) -> TrustedWriter {
        TrustedWriter {
            name: name.into(),
            key: key.public(),
            span: 0..0,
        }
    }

    #[test]
    fn a_sealed_manifest_opens_with_its_writers_key() {
        let key = SigningKey::generate().unwrap();
        let envelope = serde_json::to_vec(&seal(&key, b"{\"key\":\"abc\"}")).unwrap();
        let (manifest, name) = open(&envelope, &trusted(&key, "ci")).unwrap();
        assert_eq!(manifest, b"{\"key\":\"abc\"}");
        assert_eq!(name, "ci");
    }

    #[test]
    fn an_altered_manifest_does_not_verify() {
        let key = SigningKey::generate().unwrap();
        let mut envelope = seal(&key, b"{\"key\":\"abc\"}");
        envelope.manifest = BASE64.encode(b"{\"key\":\"abd\"}");
        let bytes = serde_json::to_vec(&envelope).unwrap();
        assert_eq!(
            open(&bytes, &trusted(&key, "ci")),
            Err(Rejection::BadSignature("ci".into()))
        );
    }

    #[test]
    fn an_entry_signed_by_another_key_is_refused() {
        let (ours, theirs) = (
            SigningKey::generate().unwrap(),
            SigningKey::generate().unwrap(),
        );
        let bytes = serde_json::to_vec(&seal(&theirs, b"{}")).unwrap();
        assert!(matches!(
            open(&bytes, &trusted(&ours, "ci")),
            Err(Rejection::UntrustedWriter(_))
        ));
        // Claiming to be the trusted writer does not help without its private key.
        let mut forged = seal(&theirs, b"{}");
        forged.writer = ours.public_text();
        let bytes = serde_json::to_vec(&forged).unwrap();
        assert!(matches!(
            open(&bytes, &trusted(&ours, "ci")),
            Err(Rejection::BadSignature(_))
        ));
    }

    #[test]
    fn unsigned_or_foreign_data_is_malformed() {
        let key = SigningKey::generate().unwrap();
        for bytes in [&b"{\"key\":\"abc\"}"[..], b"not json", b""] {
            assert!(matches!(
                open(bytes, &trusted(&key, "ci")),
                Err(Rejection::Malformed(_))
            ));
        }
    }

    #[test]
    fn a_signing_key_survives_its_text_form() {
        let key = SigningKey::generate().unwrap();
        let text = format!("# a comment\n\n{}\n", key.to_text().as_str());
        let read = SigningKey::parse(&text).unwrap();
        assert_eq!(read.public(), key.public());
        assert!(SigningKey::parse("ed25519-secret:AAAA").is_err());
        assert!(SigningKey::parse(&key.public_text()).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the manifest, it opens as sealed, and changing any one bit of it or of its signature
        /// makes it refused.
        #[test]
        fn any_changed_bit_of_a_sealed_entry_is_refused(
            manifest in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..512),
            at in proptest::prelude::any::<usize>(),
            bit in 0u8..8,
            in_signature in proptest::prelude::any::<bool>(),
        ) {
            let key = SigningKey::generate().unwrap();
            let writer = trusted(&key, "ci");
            let mut envelope = seal(&key, &manifest);
            let opened = open(&serde_json::to_vec(&envelope).unwrap(), &writer).unwrap();
            proptest::prop_assert_eq!(&opened.0, &manifest);
            let field = if in_signature { &mut envelope.signature } else { &mut envelope.manifest };
            let mut bytes = BASE64.decode(&*field).unwrap();
            let index = at % bytes.len();
            bytes[index] ^= 1 << bit;
            *field = BASE64.encode(&bytes);
            proptest::prop_assert!(open(&serde_json::to_vec(&envelope).unwrap(), &writer).is_err());
        }
    }

    #[test]
    fn each_writer_has_its_own_slot_per_key() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_ne!(slot("k1", &a), slot("k1", &b));
        assert_ne!(slot("k1", &a), slot("k2", &a));
        assert_eq!(slot("k1", &a).len(), 64);
    }
}
