//! AWS Signature Version 4 for one JSON 1.1 `POST /` request.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// An access key pair (and session token for temporary credentials).
pub struct Credentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_key: String,
    /// `AWS_SESSION_TOKEN`.
    pub session_token: Option<String>,
}

/// What is signed.
pub struct Signing<'a> {
    pub credentials: &'a Credentials,
    pub region: &'a str,
    pub service: &'a str,
    pub host: &'a str,
    pub target: &'a str,
    pub body: &'a str,
    pub now_ms: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// `YYYYMMDDTHHMMSSZ` and `YYYYMMDD` for a time in milliseconds since the epoch.
pub fn amz_date(now_ms: u64) -> (String, String) {
    let seconds = now_ms / 1000;
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let date = format!("{year:04}{month:02}{day:02}");
    (
        format!(
            "{date}T{:02}{:02}{:02}Z",
            rest / 3600,
            rest % 3600 / 60,
            rest % 60
        ),
        date,
    )
}

/// The headers of the signed request.
pub fn sign(s: &Signing<'_>) -> Vec<(String, String)> {
    let (stamp, date) = amz_date(s.now_ms);
    let mut headers: Vec<(String, String)> = vec![
        ("content-type".into(), "application/x-amz-json-1.1".into()),
        ("host".into(), s.host.into()),
        ("x-amz-date".into(), stamp.clone()),
        ("x-amz-target".into(), s.target.into()),
    ];
    if let Some(token) = &s.credentials.session_token {
        headers.push(("x-amz-security-token".into(), token.clone()));
    }
    headers.sort();
    let canonical_headers: String = headers
        .iter()
        .map(|(k, v)| format!("{k}:{}\n", v.trim()))
        .collect();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let canonical = format!(
        "POST\n/\n\n{canonical_headers}\n{signed}\n{}",
        hex(&Sha256::digest(s.body.as_bytes()))
    );
    let scope = format!("{date}/{}/{}/aws4_request", s.region, s.service);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let key = hmac(
        format!("AWS4{}", s.credentials.secret_key).as_bytes(),
        &date,
    );
    let key = hmac(&key, s.region);
    let key = hmac(&key, s.service);
    let key = hmac(&key, "aws4_request");
    let signature = hex(&hmac(&key, &to_sign));
    headers.push((
        "authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            s.credentials.access_key
        ),
    ));
    // `host` is set by the HTTP client from the URL.
    headers.retain(|(k, _)| k != "host");
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_formatted_as_aws_expects() {
        assert_eq!(
            amz_date(1_440_938_160_000),
            ("20150830T123600Z".into(), "20150830".into())
        );
    }

    #[test]
    fn the_signature_is_deterministic_and_covers_the_body() {
        let credentials = Credentials {
            access_key: "AK".into(),
            secret_key: "SK".into(),
            session_token: None,
        };
        let signing = |body| Signing {
            credentials: &credentials,
            region: "us-east-1",
            service: "secretsmanager",
            host: "h",
            target: "t",
            body,
            now_ms: 0,
        };
        let a = sign(&signing("{}"));
        assert_eq!(a, sign(&signing("{}")));
        assert_ne!(a, sign(&signing("{\"x\":1}")));
    }
}
