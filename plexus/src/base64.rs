//! Base64 (RFC 4648, standard alphabet, padded) for the S/MIME bodies plexus writes and
//! reads: one strict decoder for every place that reads one, so a truncated or damaged
//! body is refused the same way everywhere (mailparse's decoder skips garbage).

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encode `data`, padded, on one line (callers fold it).
pub(crate) fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decode strictly: line breaks and blanks are skipped, anything else outside the
/// alphabet, data after the padding, or a last group cut short is an error (the text
/// says which, to follow "the body …").
pub(crate) fn decode(text: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut n = 0usize;
    let mut pad = 0usize;
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                pad += 1;
                continue;
            }
            b'\r' | b'\n' | b' ' | b'\t' => continue,
            _ => return Err(format!("holds the byte 0x{c:02x}, which is not base64")),
        };
        if pad > 0 {
            return Err("has base64 data after '=' padding".into());
        }
        acc = (acc << 6) | u32::from(v);
        n += 1;
        if n % 4 == 0 {
            out.extend_from_slice(&acc.to_be_bytes()[1..]);
            acc = 0;
        }
    }
    match (n % 4, pad) {
        (0, 0) => {}
        (2, 2) => out.push((acc >> 4) as u8),
        (3, 1) => out.extend_from_slice(&((acc >> 2) as u16).to_be_bytes()),
        _ => {
            return Err(format!(
                "is {n} base64 characters with {pad} '=': cut short"
            ))
        }
    }
    Ok(out)
}
