//! Redaction: every secret value, each line of a multi-line value, and its common encodings are replaced
//! by `[secret:NAME]` before anything cairn writes (terminal, logs, cache entries, summaries).

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;

/// Values shorter than this are not treated as secrets: they would blank out ordinary text and hide
/// almost nothing.
pub const MIN_SECRET_LEN: usize = 4;

/// Replaces secret values in text.
#[derive(Debug, Default)]
pub struct Redactor {
    matcher: Option<AhoCorasick>,
    /// Finds the few places a secret could be without reading every byte, when the shortest form is long
    /// enough to skip by.
    sampler: Option<Sampler>,
    replacements: Vec<String>,
    longest: usize,
}

/// A value refused as a secret, for the warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooShort {
    /// The secret's name.
    pub name: String,
}

impl Redactor {
    /// A redactor for `(name, value)` pairs. Values shorter than [`MIN_SECRET_LEN`] are refused and
    /// returned, so the caller can warn.
    pub fn new<'a>(
        secrets: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> (Redactor, Vec<TooShort>) {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut replacements = Vec::new();
        let mut refused = Vec::new();
        for (name, value) in secrets {
            if value.len() < MIN_SECRET_LEN {
                refused.push(TooShort {
                    name: name.to_string(),
                });
                continue;
            }
            let replacement = format!("[secret:{name}]");
            for form in forms(value) {
                if form.len() >= MIN_SECRET_LEN && !patterns.contains(&form) {
                    patterns.push(form);
                    replacements.push(replacement.clone());
                }
            }
        }
        let longest = patterns.iter().map(Vec::len).max().unwrap_or(0);
        let build = |kind: MatchKind| {
            // A DFA without a prefilter: the encoded forms start with almost any byte, so a prefilter finds
            // candidates everywhere and costs more than it saves (it halved throughput).
            AhoCorasick::builder()
                .match_kind(kind)
                .kind(Some(AhoCorasickKind::DFA))
                .prefilter(false)
                .build(&patterns)
                .expect("literal patterns always build")
        };
        let matcher = (!patterns.is_empty()).then(|| build(MatchKind::LeftmostLongest));
        let sampler = Sampler::new(&patterns);
        (
            Redactor {
                matcher,
                sampler,
                replacements,
                longest,
            },
            refused,
        )
    }

    /// Whether there is anything to redact.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// `input` with every secret replaced.
    pub fn redact<'a>(&self, input: &'a [u8]) -> Cow<'a, [u8]> {
        let Some(matcher) = &self.matcher else {
            return Cow::Borrowed(input);
        };
        let mut out: Option<Vec<u8>> = None;
        let mut last = 0;
        let mut search = |start: usize, end: usize| {
            for found in matcher.find_iter(&input[start..end]) {
                let out = out.get_or_insert_with(|| Vec::with_capacity(input.len()));
                out.extend_from_slice(&input[last..start + found.start()]);
                out.extend_from_slice(self.replacements[found.pattern().as_usize()].as_bytes());
                last = start + found.end();
            }
        };
        match &self.sampler {
            Some(sampler) => sampler.regions(input, &mut search),
            None => search(0, input.len()),
        }
        match out {
            None => Cow::Borrowed(input),
            Some(mut out) => {
                out.extend_from_slice(&input[last..]);
                Cow::Owned(out)
            }
        }
    }

    /// `text` with every secret replaced.
    pub fn redact_str(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.redact(text.as_bytes())).into_owned()
    }

    /// How much of `buffer` (a stream's pending bytes) can be written out now: everything except a tail that
    /// could be the start of a secret whose rest has not arrived yet.
    pub fn safe_prefix(&self, buffer: &[u8]) -> usize {
        let Some(matcher) = &self.matcher else {
            return buffer.len();
        };
        let mut cut = buffer.len().saturating_sub(self.longest.saturating_sub(1));
        for found in matcher.find_iter(buffer) {
            if found.start() < cut && found.end() > cut {
                cut = found.start();
            }
        }
        cut
    }
}

/// A q-gram filter (sampling, as in Wu–Manber): every occurrence of a pattern at least `shortest` bytes long
/// contains one of the 4-byte windows read every `stride = shortest - 3` bytes, and that window is one of the
/// pattern's own. So reading one window in `stride` and looking it up in a bitmap of every pattern's windows
/// finds every place worth the exact search; the automaton then runs only around those places.
#[derive(Debug)]
struct Sampler {
    stride: usize,
    longest: usize,
    /// One bit per hash of a pattern's 4-byte window.
    windows: Vec<u64>,
}

/// Bits in the window bitmap: 2^20 (128 KiB), so that a few thousand windows leave it under 1 % full.
const SAMPLE_BITS: u32 = 20;
const WINDOW: usize = 4;

impl Sampler {
    /// A sampler for `patterns`, when their shortest is long enough to skip at least four bytes at a time.
    fn new(patterns: &[Vec<u8>]) -> Option<Sampler> {
        let shortest = patterns.iter().map(Vec::len).min()?;
        let stride = shortest.checked_sub(WINDOW - 1)?;
        if stride < 4 {
            return None;
        }
        let mut windows = vec![0u64; 1 << (SAMPLE_BITS - 6)];
        for pattern in patterns {
            for at in 0..=pattern.len() - WINDOW {
                let slot = Sampler::slot(pattern, at);
                windows[slot >> 6] |= 1 << (slot & 63);
            }
        }
        Some(Sampler {
            stride,
            longest: patterns.iter().map(Vec::len).max().unwrap_or(0),
            windows,
        })
    }

    fn slot(bytes: &[u8], at: usize) -> usize {
        let window = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        (window.wrapping_mul(0x9E37_79B1) >> (32 - SAMPLE_BITS)) as usize
    }

    /// Calls `search(start, end)` on disjoint, increasing ranges of `input` that together hold every
    /// occurrence of every pattern, each occurrence whole inside one range.
    fn regions(&self, input: &[u8], mut search: impl FnMut(usize, usize)) {
        if input.len() < WINDOW {
            return;
        }
        let mut pending: Option<(usize, usize)> = None;
        let mut at = 0;
        while at + WINDOW <= input.len() {
            let slot = Sampler::slot(input, at);
            if self.windows[slot >> 6] & (1 << (slot & 63)) != 0 {
                // An occurrence holding this window starts at most `longest - 4` bytes before it and ends at
                // most `longest` bytes after its start.
                let start = (at + WINDOW).saturating_sub(self.longest);
                let end = (at + self.longest).min(input.len());
                pending = match pending {
                    Some((from, to)) if start <= to => Some((from, end.max(to))),
                    Some((from, to)) => {
                        search(from, to);
                        Some((start, end))
                    }
                    None => Some((start, end)),
                };
            }
            at += self.stride;
        }
        if let Some((from, to)) = pending {
            search(from, to);
        }
    }
}

/// The forms a value may be printed in: as is, trimmed, line by line, base64 (standard and URL-safe, with
/// and without padding, alone or at any alignment inside a longer encoded text such as HTTP Basic auth),
/// percent-encoded and JSON-escaped.
fn forms(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![value.to_vec()];
    let trimmed = value.trim_ascii();
    out.push(trimmed.to_vec());
    for line in value.split(|&b| b == b'\n') {
        out.push(line.trim_ascii().to_vec());
    }
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        out.push(engine.encode(value).into_bytes());
        if trimmed.len() != value.len() {
            out.push(engine.encode(trimmed).into_bytes());
        }
        // Inside a longer encoded text such as HTTP Basic auth, base64("user:VALUE"), the value starts one or
        // two bytes into a group of three: past the first group (which mixes in what precedes it), its
        // encoding is the same whatever that was.
        for offset in 1..=2 {
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(trimmed);
            let encoded = engine.encode(&shifted).into_bytes();
            if encoded.len() > 4 {
                out.push(encoded[4..].to_vec());
            }
        }
    }
    out.push(percent_encode(value));
    if let Ok(text) = std::str::from_utf8(value) {
        if let Ok(json) = serde_json::to_string(text) {
            out.push(json.as_bytes()[1..json.len() - 1].to_vec());
        }
    }
    out
}

fn percent_encode(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() * 3);
    for &b in value {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(pairs: &[(&str, &str)]) -> Redactor {
        Redactor::new(pairs.iter().map(|(n, v)| (*n, v.as_bytes()))).0
    }

    #[test]
    fn a_value_inside_http_basic_auth_is_replaced_whatever_the_user_name() {
        let r = redactor(&[("PASSWORD", "correct-horse-battery")]);
        for user in ["a", "al", "alex", "deploy-bot"] {
            let header = format!(
                "Authorization: Basic {}",
                STANDARD.encode(format!("{user}:correct-horse-battery"))
            );
            let redacted = r.redact_str(&header);
            assert!(redacted.contains("[secret:PASSWORD]"), "{user}: {redacted}");
            // What stays visible is the user's part and at most one group of four that mixes both.
            let visible = redacted
                .trim_start_matches("Authorization: Basic ")
                .replace("[secret:PASSWORD]", "");
            assert!(
                visible.len() <= (user.len() + 1).div_ceil(3) * 4 + 4,
                "{user}: {redacted}"
            );
        }
    }

    #[test]
    fn values_and_their_encodings_are_replaced() {
        let r = redactor(&[
            ("TOKEN", "tok_live_8f3a"),
            ("PEM", "-----BEGIN-----\nabc123def\n-----END-----\n"),
        ]);
        assert_eq!(
            r.redact_str("token=tok_live_8f3a!"),
            "token=[secret:TOKEN]!"
        );
        let b64 = STANDARD.encode("tok_live_8f3a");
        assert_eq!(r.redact_str(&format!("b64 {b64}")), "b64 [secret:TOKEN]");
        assert_eq!(
            r.redact_str("line abc123def here"),
            "line [secret:PEM] here"
        );
        let r = redactor(&[("PW", "p@ss w0rd\"x")]);
        assert_eq!(r.redact_str("url p%40ss%20w0rd%22x"), "url [secret:PW]");
        assert_eq!(
            r.redact_str(r#"{"pw":"p@ss w0rd\"x"}"#),
            r#"{"pw":"[secret:PW]"}"#
        );
    }

    /// The whole-input search the sampler must agree with.
    fn redact_everywhere(r: &Redactor, input: &[u8]) -> Vec<u8> {
        let matcher = r.matcher.as_ref().expect("has patterns");
        let mut out = Vec::new();
        let mut last = 0;
        for found in matcher.find_iter(input) {
            out.extend_from_slice(&input[last..found.start()]);
            out.extend_from_slice(r.replacements[found.pattern().as_usize()].as_bytes());
            last = found.end();
        }
        out.extend_from_slice(&input[last..]);
        out
    }

    proptest::proptest! {
        #[test]
        fn sampling_finds_exactly_what_searching_every_byte_finds(
            pieces in proptest::collection::vec((0usize..6, 0usize..40, "[a-z0-9=+/:_-]{0,12}"), 0..40),
        ) {
            let secrets = [
                ("A", "tok_live_8f3a9c2e71d0"),
                ("B", "correct-horse-battery-staple"),
                ("C", "tok_live_8f3a9c2e71d0-and-more"),
            ];
            let r = redactor(&secrets);
            proptest::prop_assert!(r.sampler.is_some());
            // Forms of the secrets (whole, cut short, encoded), glued to random text.
            let mut forms: Vec<Vec<u8>> = Vec::new();
            for (_, value) in secrets {
                forms.extend(super::forms(value.as_bytes()));
            }
            let mut input = Vec::new();
            for (which, cut, noise) in pieces {
                let form = &forms[(which * 7 + cut) % forms.len()];
                let keep = if cut % 3 == 0 { form.len().saturating_sub(cut % 5) } else { form.len() };
                input.extend_from_slice(&form[..keep]);
                input.extend_from_slice(noise.as_bytes());
            }
            proptest::prop_assert_eq!(r.redact(&input).into_owned(), redact_everywhere(&r, &input));
        }
    }

    #[test]
    fn short_values_are_refused() {
        let (r, refused) =
            Redactor::new([("PORT", b"80".as_slice()), ("KEY", b"abcdef".as_slice())]);
        assert_eq!(
            refused,
            vec![TooShort {
                name: "PORT".into()
            }]
        );
        assert_eq!(r.redact_str("80 abcdef"), "80 [secret:KEY]");
    }

    #[test]
    fn a_stream_split_anywhere_is_redacted_like_the_whole() {
        let r = redactor(&[("K", "0123456789")]);
        let text = b"aa 0123456789 bb 0123456789";
        let whole = r.redact(text).into_owned();
        for split in 0..text.len() {
            // Feed the text in two reads, writing out only what is safe each time.
            let mut pending = text[..split].to_vec();
            let mut out = Vec::new();
            let cut = r.safe_prefix(&pending);
            out.extend_from_slice(&r.redact(&pending[..cut]));
            pending.drain(..cut);
            pending.extend_from_slice(&text[split..]);
            out.extend_from_slice(&r.redact(&pending));
            assert_eq!(out, whole, "split at {split}");
        }
    }
}
