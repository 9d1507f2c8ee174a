//! The two Base64 forms grants need, written out instead of pulled in as a crate: standard
//! Base64 with padding for HTTP Basic client authentication (RFC 7617, RFC 4648 section 4) and
//! unpadded base64url for reading a JWT's payload (RFC 7515, RFC 4648 section 5).

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
#[cfg(test)]
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Input larger than this is refused by [`decode_url`]: a JWT payload worth reading is a few
/// hundred bytes, and the refusal bounds the work done on a hostile token.
pub(crate) const MAX_DECODE_INPUT: usize = 16 * 1024;

/// Standard Base64 with `=` padding.
pub(crate) fn encode_standard(input: &[u8]) -> String {
    encode(input, STANDARD, true)
}

/// Unpadded base64url, the form of JWT segments.
#[cfg(test)]
pub(crate) fn encode_url(input: &[u8]) -> String {
    encode(input, URL_SAFE, false)
}

fn encode(input: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // A chunk of k bytes yields k + 1 significant sextets.
        for i in 0..=chunk.len() {
            let sextet = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(alphabet[sextet as usize]));
        }
        if pad {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes unpadded base64url; `None` for padding, a character outside the alphabet, an
/// impossible length, or input over [`MAX_DECODE_INPUT`].
pub(crate) fn decode_url(input: &str) -> Option<Vec<u8>> {
    if input.len() > MAX_DECODE_INPUT || input.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0u32;
    for byte in input.bytes() {
        let sextet = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn standard_encoding_matches_rfc_4648_test_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(encode_standard(plain.as_bytes()), encoded, "{plain}");
        }
        assert_eq!(encode_standard(b"admin:secret"), "YWRtaW46c2VjcmV0");
        assert_eq!(encode_standard(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn url_decoding_rejects_padding_foreign_characters_bad_lengths_and_huge_input() {
        assert_eq!(decode_url("Zm9vYg").unwrap(), b"foob");
        assert_eq!(decode_url("-_8").unwrap(), [0xfb, 0xff]);
        assert!(decode_url("Zm9vYg==").is_none());
        assert!(decode_url("+/8").is_none());
        assert!(decode_url("Zm9v Yg").is_none());
        assert!(decode_url("Zm9vY").is_none());
        assert!(decode_url(&"A".repeat(MAX_DECODE_INPUT + 4)).is_none());
        assert_eq!(decode_url("").unwrap(), b"");
    }

    proptest! {
        #[test]
        fn url_encoding_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let encoded = encode_url(&bytes);
            prop_assert!(!encoded.contains('='));
            prop_assert_eq!(decode_url(&encoded), Some(bytes));
        }

        #[test]
        fn url_decoding_never_panics(input in ".{0,64}") {
            let _ = decode_url(&input);
        }
    }
}
