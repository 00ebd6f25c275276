//! The leaf key as Consul returns it: SEC1 `EC PRIVATE KEY` PEM (rcgen writes PKCS#8 only),
//! with the minimal DER reading and writing that needs.

use rcgen::KeyPair;

use super::minimal_be_bytes;

/// The key as SEC1 `EC PRIVATE KEY` PEM with the curve parameters and the public key, the form
/// Go's `x509.MarshalECPrivateKey` writes and `x509.ParseECPrivateKey` needs.
pub(crate) fn sec1_pem(key: &KeyPair) -> String {
    let der = sec1_der(key);
    let body = base64_lines(&der);
    format!("-----BEGIN EC PRIVATE KEY-----\n{body}-----END EC PRIVATE KEY-----\n")
}

fn sec1_der(key: &KeyPair) -> Vec<u8> {
    // OID 1.2.840.10045.3.1.7 (prime256v1)
    const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let scalar = pkcs8_ec_scalar(key.serialized_der())
        .expect("rcgen P-256 keys are PKCS#8 documents holding an ECPrivateKey");
    let mut public = vec![0x00]; // no unused bits
    public.extend_from_slice(key.public_key_raw());
    let mut body = der_tlv(0x02, &[0x01]); // version 1
    body.extend(der_tlv(0x04, scalar));
    body.extend(der_tlv(0xa0, P256_OID));
    body.extend(der_tlv(0xa1, &der_tlv(0x03, &public)));
    der_tlv(0x30, &body)
}

/// The private scalar inside a PKCS#8 `PrivateKeyInfo` whose key is a SEC1 `ECPrivateKey`.
fn pkcs8_ec_scalar(pkcs8: &[u8]) -> Option<&[u8]> {
    let (tag, info, _) = der_read(pkcs8)?;
    if tag != 0x30 {
        return None;
    }
    let (_version, _, rest) = der_read(info)?;
    let (_algorithm, _, rest) = der_read(rest)?;
    let (tag, ec_key, _) = der_read(rest)?;
    if tag != 0x04 {
        return None;
    }
    let (tag, ec_key, _) = der_read(ec_key)?;
    if tag != 0x30 {
        return None;
    }
    let (_version, _, rest) = der_read(ec_key)?;
    let (tag, scalar, _) = der_read(rest)?;
    (tag == 0x04).then_some(scalar)
}

/// Reads one DER TLV: (tag, content, rest).
pub(crate) fn der_read(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = input
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let content = input.get(header..header + len)?;
    Some((tag, content, &input[header + len..]))
}

pub(crate) fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = minimal_be_bytes(len as u64);
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// Standard base64 in 64-character lines, each ending with a newline (PEM body).
fn base64_lines(data: &[u8]) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 64 + 1);
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 output is ASCII"));
        out.push('\n');
    }
    out
}
