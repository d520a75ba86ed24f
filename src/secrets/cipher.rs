//! SOPS's value encryption: AES-256-GCM with a 32-byte nonce, the value's path as associated data, written
//! as `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`.

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce, Tag};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use zeroize::Zeroizing;

use super::error::FormatError;

type Aes256Gcm32 = AesGcm<Aes256, U32>;

/// The length of a data key.
pub const KEY_LEN: usize = 32;

/// A file's data key, wiped from memory when dropped.
pub type DataKey = Zeroizing<[u8; KEY_LEN]>;

/// One parsed `ENC[…]` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Ciphertext without the tag.
    pub data: Vec<u8>,
    /// The 32-byte nonce.
    pub iv: [u8; 32],
    /// The GCM tag.
    pub tag: [u8; 16],
    /// The `type:` tag (`str`, `int`, `comment`, …).
    pub kind: String,
}

impl Sealed {
    /// Parses `ENC[AES256_GCM,…]`; `None` when `text` is not an encrypted value at all.
    pub fn parse(text: &str) -> Option<Result<Sealed, FormatError>> {
        let body = text.strip_prefix("ENC[")?.strip_suffix(']')?;
        Some(Sealed::parse_body(body))
    }

    fn parse_body(body: &str) -> Result<Sealed, FormatError> {
        let bad = |why: &str| FormatError::BadValue(why.to_string());
        let mut parts = body.split(',');
        if parts.next() != Some("AES256_GCM") {
            return Err(bad("only AES256_GCM values are supported"));
        }
        let (mut data, mut iv, mut tag, mut kind) = (None, None, None, None);
        for part in parts {
            let (name, value) = part
                .split_once(':')
                .ok_or_else(|| bad("a field without `:`"))?;
            let decode = |v: &str| STANDARD.decode(v).map_err(|_| bad("invalid base64"));
            match name {
                "data" => data = Some(decode(value)?),
                "iv" => iv = Some(decode(value)?),
                "tag" => tag = Some(decode(value)?),
                "type" => kind = Some(value.to_string()),
                _ => return Err(bad(&format!("unknown field `{name}`"))),
            }
        }
        let iv: [u8; 32] = iv
            .ok_or_else(|| bad("no iv"))?
            .try_into()
            .map_err(|_| bad("the iv is not 32 bytes"))?;
        let tag: [u8; 16] = tag
            .ok_or_else(|| bad("no tag"))?
            .try_into()
            .map_err(|_| bad("the tag is not 16 bytes"))?;
        Ok(Sealed {
            data: data.ok_or_else(|| bad("no data"))?,
            iv,
            tag,
            kind: kind.ok_or_else(|| bad("no type"))?,
        })
    }

    /// The `ENC[…]` text.
    pub fn render(&self) -> String {
        format!(
            "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{}]",
            STANDARD.encode(&self.data),
            STANDARD.encode(self.iv),
            STANDARD.encode(self.tag),
            self.kind
        )
    }

    /// Decrypts with `key`, authenticating `aad` (the value's path, `db:password:`).
    pub fn open(&self, key: &DataKey, aad: &str) -> Result<Zeroizing<Vec<u8>>, FormatError> {
        let cipher = Aes256Gcm32::new_from_slice(&key[..]).map_err(|_| FormatError::Crypto)?;
        let mut buffer = Zeroizing::new(self.data.clone());
        cipher
            .decrypt_in_place_detached(
                Nonce::<U32>::from_slice(&self.iv),
                aad.as_bytes(),
                &mut buffer,
                Tag::from_slice(&self.tag),
            )
            .map_err(|_| FormatError::Crypto)?;
        Ok(buffer)
    }

    /// Encrypts `plain` under `key` with the nonce `iv`.
    pub fn seal(
        key: &DataKey,
        plain: &[u8],
        aad: &str,
        kind: &str,
        iv: [u8; 32],
    ) -> Result<Sealed, FormatError> {
        let cipher = Aes256Gcm32::new_from_slice(&key[..]).map_err(|_| FormatError::Crypto)?;
        let mut data = plain.to_vec();
        let tag = cipher
            .encrypt_in_place_detached(Nonce::<U32>::from_slice(&iv), aad.as_bytes(), &mut data)
            .map_err(|_| FormatError::Crypto)?;
        Ok(Sealed {
            data,
            iv,
            tag: tag.into(),
            kind: kind.to_string(),
        })
    }
}

/// Fresh random bytes from the operating system.
pub fn random<const N: usize>() -> Result<[u8; N], FormatError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| FormatError::Random)?;
    Ok(bytes)
}

/// A new random data key.
pub fn new_data_key() -> Result<DataKey, FormatError> {
    Ok(Zeroizing::new(random::<KEY_LEN>()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_round_trip_and_bind_their_path() {
        let key = Zeroizing::new([7u8; 32]);
        let sealed = Sealed::seal(&key, b"hunter22", "db:password:", "str", [1; 32]).unwrap();
        let text = sealed.render();
        let parsed = Sealed::parse(&text).unwrap().unwrap();
        assert_eq!(parsed, sealed);
        assert_eq!(&parsed.open(&key, "db:password:").unwrap()[..], b"hunter22");
        assert!(parsed.open(&key, "db:user:").is_err());
    }

    #[test]
    fn non_values_are_not_parsed() {
        assert!(Sealed::parse("hello").is_none());
        assert!(Sealed::parse("ENC[AES256_GCM,data:!!]").unwrap().is_err());
    }
}
