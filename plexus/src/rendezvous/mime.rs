//! A strict, bounded reader for the S/MIME entity inside a decrypted rendezvous message.
//!
//! Two shapes are read, the two that S/MIME signers write (RFC 8551 §3.5):
//! - opaque: `application/pkcs7-mime; smime-type=signed-data`, base64 (plexus itself,
//!   `openssl smime -sign -nodetach`, a mail client around gpgsm);
//! - detached: `multipart/signed; protocol="application/pkcs7-signature"` with exactly two
//!   parts, the signed content and a base64 `application/pkcs7-signature` (mail clients,
//!   `openssl smime -sign`). The content is the first part's bytes exactly as they stand
//!   between the boundaries, which is the canonical form that was signed.
//!
//! OpenSSL's own S/MIME reader copies header text into its error queue, and the Rust
//! binding panics on a non-UTF-8 byte there; so the MIME is read here and OpenSSL only
//! ever sees DER. Every limit is fixed and small, and nothing recurses: the content of
//! a detached signature is never parsed as MIME, only verified.

use std::fmt;

/// Longest header line (RFC 5322 §2.1.1).
const MAX_HEADER_LINE: usize = 998;
/// Largest header section, folded lines included.
const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Most header fields in one entity (plexus writes four).
const MAX_HEADERS: usize = 32;
/// Most parameters of one Content-Type.
const MAX_PARAMS: usize = 16;
/// Longest multipart boundary (RFC 2046 §5.1.1).
const MAX_BOUNDARY: usize = 70;

/// The signature found in the entity, as DER for OpenSSL.
#[derive(Debug, PartialEq, Eq)]
pub enum Signed<'a> {
    /// A PKCS#7 signed-data that carries its content.
    Opaque { der: Vec<u8> },
    /// A detached PKCS#7 signature over `content`.
    Detached {
        content: &'a [u8],
        signature: Vec<u8>,
    },
}

/// Why the entity is not one of the two shapes; the text says what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MimeError(pub String);

impl fmt::Display for MimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(m: impl Into<String>) -> Result<T, MimeError> {
    Err(MimeError(m.into()))
}

/// Read the S/MIME entity `entity` (headers, blank line, body).
pub fn parse(entity: &[u8]) -> Result<Signed<'_>, MimeError> {
    let head = Head::read(entity)?;
    let body = &entity[head.body..];
    let ct = head.content_type()?;
    match ct.mime.as_str() {
        "application/pkcs7-mime" | "application/x-pkcs7-mime" => {
            if let Some(t) = ct.param("smime-type") {
                if !t.eq_ignore_ascii_case("signed-data") {
                    return err(format!("smime-type is {t:?}, not signed-data"));
                }
            }
            Ok(Signed::Opaque {
                der: head.base64_body(body)?,
            })
        }
        "multipart/signed" => {
            let protocol = ct
                .param("protocol")
                .ok_or_else(|| MimeError("multipart/signed without a protocol".into()))?;
            if !is_pkcs7_signature(protocol) {
                return err(format!(
                    "multipart/signed of protocol {protocol:?}, not application/pkcs7-signature"
                ));
            }
            let boundary = ct
                .param("boundary")
                .ok_or_else(|| MimeError("multipart/signed without a boundary".into()))?;
            check_boundary(boundary)?;
            let (content, sig) = two_parts(body, boundary.as_bytes())?;
            let sig_head = Head::read(sig)?;
            let sig_ct = sig_head.content_type()?;
            if !is_pkcs7_signature(&sig_ct.mime) {
                return err(format!(
                    "the second part of multipart/signed is {}, not application/pkcs7-signature",
                    sig_ct.mime
                ));
            }
            Ok(Signed::Detached {
                content,
                signature: sig_head.base64_body(&sig[sig_head.body..])?,
            })
        }
        other => err(format!("content type {other} is not S/MIME signed data")),
    }
}

fn is_pkcs7_signature(mime: &str) -> bool {
    mime.eq_ignore_ascii_case("application/pkcs7-signature")
        || mime.eq_ignore_ascii_case("application/x-pkcs7-signature")
}

/// The header section of one entity: unfolded fields, and where the body starts.
struct Head {
    fields: Vec<(String, String)>,
    body: usize,
}

impl Head {
    fn read(entity: &[u8]) -> Result<Head, MimeError> {
        let mut fields: Vec<(String, String)> = Vec::new();
        let mut pos = 0;
        let mut n = 0;
        loop {
            n += 1;
            let rest = &entity[pos..];
            let window = &rest[..rest.len().min(MAX_HEADER_LINE + 2)];
            let Some(nl) = window.iter().position(|&b| b == b'\n') else {
                return if rest.len() > MAX_HEADER_LINE + 1 {
                    err(format!(
                        "header line {n} is longer than {MAX_HEADER_LINE} bytes"
                    ))
                } else {
                    err("the headers do not end with a blank line")
                };
            };
            let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
            pos += nl + 1;
            if pos > MAX_HEADER_BYTES {
                return err(format!(
                    "the headers are longer than {MAX_HEADER_BYTES} bytes"
                ));
            }
            if line.is_empty() {
                return Ok(Head { fields, body: pos });
            }
            if let Some(&b) = line
                .iter()
                .find(|&&b| !(b == b'\t' || (0x20..0x7f).contains(&b)))
            {
                return err(format!(
                    "header line {n} holds the byte 0x{b:02x}; headers are printable ASCII"
                ));
            }
            // Printable ASCII only, so each byte is one char.
            let text: String = line.iter().map(|&b| b as char).collect();
            if line[0] == b' ' || line[0] == b'\t' {
                // A folded line continues the field before it (RFC 5322 §2.2.3).
                match fields.last_mut() {
                    Some((_, value)) => value.push_str(&text),
                    None => return err("the first header line is a continuation"),
                }
                continue;
            }
            let Some((name, value)) = text.split_once(':') else {
                return err(format!("header line {n} has no ':'"));
            };
            if name.is_empty() || name.contains([' ', '\t']) {
                return err(format!("header line {n} has no valid field name"));
            }
            let lower = name.to_ascii_lowercase();
            // Only MIME fields belong on an S/MIME entity (RFC 2045 §9).
            if lower != "mime-version" && !lower.starts_with("content-") {
                return err(format!("header {name:?} is not a MIME header"));
            }
            if fields.len() == MAX_HEADERS {
                return err(format!("more than {MAX_HEADERS} headers"));
            }
            fields.push((lower, value.to_owned()));
        }
    }

    /// The value of the one field named `name` (lower case); two of them are refused.
    fn get(&self, name: &str) -> Result<Option<&str>, MimeError> {
        let mut found = self.fields.iter().filter(|(n, _)| n == name);
        let first = found.next();
        if found.next().is_some() {
            return err(format!("two {name} headers"));
        }
        Ok(first.map(|(_, v)| v.trim_matches([' ', '\t'])))
    }

    fn content_type(&self) -> Result<ContentType, MimeError> {
        if let Some(v) = self.get("mime-version")? {
            if !version_1_0(v) {
                return err(format!("MIME-Version is {v:?}, not 1.0"));
            }
        }
        match self.get("content-type")? {
            Some(v) => ContentType::parse(v),
            None => err("no Content-Type header"),
        }
    }

    /// The body, which must be base64 (the only encoding that carries DER intact).
    fn base64_body(&self, body: &[u8]) -> Result<Vec<u8>, MimeError> {
        match self.get("content-transfer-encoding")? {
            Some(cte) if cte.eq_ignore_ascii_case("base64") => {}
            Some(cte) => return err(format!("Content-Transfer-Encoding is {cte:?}, not base64")),
            None => return err("no Content-Transfer-Encoding: base64"),
        }
        let der = base64_decode(body)?;
        if der.is_empty() {
            return err("the base64 body is empty");
        }
        Ok(der)
    }
}

/// `1.0`, optionally followed by a comment (RFC 2045 §4).
fn version_1_0(v: &str) -> bool {
    match v.strip_prefix("1.0") {
        Some(rest) => {
            let rest = rest.trim_matches([' ', '\t']);
            rest.is_empty() || (rest.starts_with('(') && rest.ends_with(')'))
        }
        None => false,
    }
}

/// A parsed Content-Type: `type/subtype` in lower case and its parameters (names in
/// lower case, values as written, quotes removed).
struct ContentType {
    mime: String,
    params: Vec<(String, String)>,
}

/// RFC 2045 token characters: printable ASCII except space and tspecials.
fn is_token(c: u8) -> bool {
    (0x21..0x7f).contains(&c) && !b"()<>@,;:\\\"/[]?=".contains(&c)
}

impl ContentType {
    fn parse(v: &str) -> Result<ContentType, MimeError> {
        let b = v.as_bytes();
        let mut i = 0;
        let skip_ws = |i: &mut usize| {
            while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t') {
                *i += 1;
            }
        };
        let token = |i: &mut usize| {
            let start = *i;
            while *i < b.len() && is_token(b[*i]) {
                *i += 1;
            }
            &v[start..*i]
        };
        let ty = token(&mut i);
        if ty.is_empty() || b.get(i) != Some(&b'/') {
            return err(format!("Content-Type {v:?} is not type/subtype"));
        }
        i += 1;
        let sub = token(&mut i);
        if sub.is_empty() {
            return err(format!("Content-Type {v:?} is not type/subtype"));
        }
        let mime = format!("{ty}/{sub}").to_ascii_lowercase();
        let mut params: Vec<(String, String)> = Vec::new();
        loop {
            skip_ws(&mut i);
            if i == b.len() {
                break;
            }
            if b[i] != b';' {
                return err(format!(
                    "Content-Type has {:?} where ';' belongs",
                    b[i] as char
                ));
            }
            i += 1;
            skip_ws(&mut i);
            if i == b.len() {
                break; // a trailing ';', as some writers leave
            }
            let name = token(&mut i).to_ascii_lowercase();
            skip_ws(&mut i);
            if name.is_empty() || b.get(i) != Some(&b'=') {
                return err("a Content-Type parameter is not name=value");
            }
            i += 1;
            skip_ws(&mut i);
            let value = if b.get(i) == Some(&b'"') {
                i += 1;
                let mut s = String::new();
                loop {
                    match b.get(i) {
                        None => return err("a quoted Content-Type parameter is not closed"),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            let Some(&c) = b.get(i + 1) else {
                                return err("a quoted Content-Type parameter is not closed");
                            };
                            s.push(c as char);
                            i += 2;
                        }
                        Some(&c) => {
                            s.push(c as char);
                            i += 1;
                        }
                    }
                }
                i += 1;
                s
            } else {
                let t = token(&mut i);
                if t.is_empty() {
                    return err(format!("Content-Type parameter {name} has no value"));
                }
                t.to_owned()
            };
            if params.iter().any(|(n, _)| *n == name) {
                return err(format!("Content-Type parameter {name} is given twice"));
            }
            if params.len() == MAX_PARAMS {
                return err(format!("more than {MAX_PARAMS} Content-Type parameters"));
            }
            params.push((name, value));
        }
        Ok(ContentType { mime, params })
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A boundary is 1–70 characters of the RFC 2046 set, not ending in a space.
fn check_boundary(b: &str) -> Result<(), MimeError> {
    let ok_char = |c: u8| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c);
    if b.is_empty() || b.len() > MAX_BOUNDARY || b.ends_with(' ') || !b.bytes().all(ok_char) {
        return err(format!("multipart boundary {b:?} is not a valid boundary"));
    }
    Ok(())
}

/// The two parts of a multipart/signed body: the bytes between the first and second
/// delimiter lines, and between the second and the closing one. The line end before a
/// delimiter belongs to the delimiter (RFC 2046 §5.1.1); preamble and epilogue are
/// ignored.
fn two_parts<'a>(body: &'a [u8], boundary: &[u8]) -> Result<(&'a [u8], &'a [u8]), MimeError> {
    // (start of the delimiter line, start of the line after it)
    let mut opens: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |n| pos + n);
        let next = (end + 1).min(body.len());
        let line = body[pos..end]
            .strip_suffix(b"\r")
            .unwrap_or(&body[pos..end]);
        if let Some(rest) = line
            .strip_prefix(b"--")
            .and_then(|l| l.strip_prefix(boundary))
        {
            let blank = |r: &[u8]| r.iter().all(|&c| c == b' ' || c == b'\t');
            if blank(rest) {
                if opens.len() == 2 {
                    return err("multipart/signed has more than two parts");
                }
                opens.push((pos, next));
            } else if rest.starts_with(b"--") && blank(&rest[2..]) {
                return match opens[..] {
                    [(_, a), (b_line, b)] => Ok((
                        &body[a..part_end(body, a, b_line)],
                        &body[b..part_end(body, b, pos)],
                    )),
                    [] => err("multipart/signed closes before its first part"),
                    _ => err("multipart/signed has one part, not two"),
                };
            }
        }
        pos = next;
    }
    match opens.len() {
        0 => err("the multipart boundary never appears"),
        _ => err("multipart/signed has no closing boundary"),
    }
}

/// Where a part starting at `start` ends, given the delimiter line at `delim`: before
/// the CRLF or LF that precedes the delimiter.
fn part_end(body: &[u8], start: usize, delim: usize) -> usize {
    let mut end = delim;
    if end > start && body[end - 1] == b'\n' {
        end -= 1;
        if end > start && body[end - 1] == b'\r' {
            end -= 1;
        }
    }
    end
}

fn base64_decode(body: &[u8]) -> Result<Vec<u8>, MimeError> {
    crate::base64::decode(body).map_err(|e| MimeError(format!("the body {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opaque(head: &str, body: &str) -> Result<Vec<u8>, MimeError> {
        match parse(format!("{head}\n\n{body}").as_bytes())? {
            Signed::Opaque { der } => Ok(der),
            other => panic!("not opaque: {other:?}"),
        }
    }

    #[test]
    fn base64_is_strict() {
        assert_eq!(base64_decode(b"").unwrap(), b"");
        assert_eq!(base64_decode(b"TQ==").unwrap(), b"M");
        assert_eq!(base64_decode(b"TWE=").unwrap(), b"Ma");
        assert_eq!(base64_decode(b"TW\r\n Fu\t").unwrap(), b"Man");
        for bad in [
            &b"TQ="[..],
            b"TQ",
            b"T",
            b"TQ==TQ==",
            b"TW*u",
            b"TWFu=",
            b"TWF\xffu",
        ] {
            assert!(base64_decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn opaque_signed_data_headers_fold_and_ignore_case() {
        let der = opaque(
            "MIME-Version: 1.0 (made by hand)\r\ncontent-TYPE: Application/X-PKCS7-MIME;\r\n\tSMIME-Type=\"Signed-Data\";\r\n name=\"smime.p7m\";\r\nContent-Transfer-Encoding: BASE64\r",
            "TWFu\r\n",
        )
        .unwrap();
        assert_eq!(der, b"Man");
        for (head, want) in [
            ("Content-Type: application/pkcs7-mime; smime-type=enveloped-data\nContent-Transfer-Encoding: base64", "smime-type"),
            ("Content-Type: application/pkcs7-mime\nContent-Transfer-Encoding: binary", "not base64"),
            ("Content-Type: application/pkcs7-mime", "no Content-Transfer-Encoding"),
            ("MIME-Version: 2.0\nContent-Type: application/pkcs7-mime\nContent-Transfer-Encoding: base64", "MIME-Version"),
            ("Subject: hi\nContent-Type: application/pkcs7-mime\nContent-Transfer-Encoding: base64", "not a MIME header"),
            ("Content-Type: text/plain", "not S/MIME"),
            ("Content-Type: application/pkcs7-mime; a=1; a=2\nContent-Transfer-Encoding: base64", "twice"),
            ("Content-Type: application/pkcs7-mime; a=\"1\nContent-Transfer-Encoding: base64", "not closed"),
            ("Content-Type: application/pkcs7-mime a=1\nContent-Transfer-Encoding: base64", "';'"),
            ("Content-Type: application\nContent-Transfer-Encoding: base64", "type/subtype"),
            ("Content-Type: application/pkcs7-mime\nContent-Type: application/pkcs7-mime\nContent-Transfer-Encoding: base64", "two"),
        ] {
            let e = opaque(head, "TWFu").unwrap_err();
            assert!(e.0.contains(want), "{head}: {e}");
        }
        let e = opaque(
            "Content-Type: application/pkcs7-mime\nContent-Transfer-Encoding: base64",
            "",
        )
        .unwrap_err();
        assert!(e.0.contains("empty"), "{e}");
    }

    #[test]
    fn header_limits_hold() {
        let long = format!(
            "Content-Type: application/pkcs7-mime; x=\"{}\"\n\nTWFu",
            "y".repeat(MAX_HEADER_LINE)
        );
        assert!(parse(long.as_bytes())
            .unwrap_err()
            .0
            .contains("longer than 998"));
        let many = format!("{}\nTWFu", "Content-X: y\n".repeat(MAX_HEADERS + 1));
        assert!(parse(many.as_bytes()).unwrap_err().0.contains("more than"));
        let folded = format!(
            "Content-Type: application/pkcs7-mime{}\n\nTWFu",
            "\n ;a=b".repeat(3000)
        );
        assert!(parse(folded.as_bytes())
            .unwrap_err()
            .0
            .contains("longer than"));
        assert!(parse(b"Content-Type: \xff/x\n\nTWFu")
            .unwrap_err()
            .0
            .contains("0xff"));
        assert!(parse(b"Content-Type: application/pkcs7-mime")
            .unwrap_err()
            .0
            .contains("blank line"));
        assert!(parse(b" x\n\n").unwrap_err().0.contains("continuation"));
    }

    #[test]
    fn multipart_signed_content_is_exact_bytes_between_boundaries() {
        let m = "MIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/x-pkcs7-signature\"; micalg=\"sha-256\"; boundary=\"----B'(x)\"\r\n\r\nThis is an S/MIME signed message\r\n\r\n------B'(x)\r\nline 1\r\nline 2\r\n\r\n------B'(x)  \r\nContent-Type: application/x-pkcs7-signature; name=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTWFu\r\n\r\n------B'(x)--\r\nepilogue\r\n";
        assert_eq!(
            parse(m.as_bytes()).unwrap(),
            Signed::Detached {
                content: b"line 1\r\nline 2\r\n",
                signature: b"Man".to_vec()
            }
        );
        // LF line ends, no preamble, an empty first part.
        let m = "Content-Type: multipart/signed; boundary=b; protocol=\"application/pkcs7-signature\"\n\n--b\n--b\nContent-Type: application/pkcs7-signature\nContent-Transfer-Encoding: base64\n\nTWFu\n--b--";
        assert_eq!(
            parse(m.as_bytes()).unwrap(),
            Signed::Detached {
                content: b"",
                signature: b"Man".to_vec()
            }
        );
        let sig =
            "Content-Type: application/pkcs7-signature\nContent-Transfer-Encoding: base64\n\nTWFu";
        let mp = |params: &str, body: &str| {
            parse(format!("Content-Type: multipart/signed; {params}\n\n{body}").as_bytes())
                .unwrap_err()
                .0
        };
        let p = "protocol=\"application/pkcs7-signature\"; boundary=b";
        assert!(mp("boundary=b", "").contains("protocol"));
        assert!(mp("protocol=\"application/pgp-signature\"; boundary=b", "").contains("protocol"));
        assert!(mp("protocol=\"application/pkcs7-signature\"", "").contains("boundary"));
        assert!(mp(
            "protocol=\"application/pkcs7-signature\"; boundary=\"\"",
            ""
        )
        .contains("boundary"));
        assert!(mp(p, "--c\nx\n--c--\n").contains("never appears"));
        assert!(mp(p, "--b\nx\n--b--\n").contains("one part"));
        assert!(mp(p, &format!("--b\nx\n--b\n{sig}\n")).contains("no closing"));
        assert!(mp(p, &format!("--b\nx\n--b\n{sig}\n--b\nx\n--b--")).contains("more than two"));
        assert!(mp(p, "--b\nx\n--b\nContent-Type: text/plain\n\nhi\n--b--").contains("second part"));
    }
}
