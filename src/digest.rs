//! SipHash-2-4 (Aumasson and Bernstein, 2012), written out so that its
//! value is the same in every build of sockvisor (std's hasher promises no
//! algorithm). A keyed digest for telling contents apart (the re-exec
//! proof, the environment files a generation read), not a signature.

/// SipHash-2-4 (Aumasson and Bernstein, 2012) of `data` under `key`.
pub fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    let k0 = le_u64(&key[..8]);
    let k1 = le_u64(&key[8..]);
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let blocks = data.chunks_exact(8);
    let tail = blocks.remainder();
    for block in blocks {
        compress(&mut v, le_u64(block));
    }
    compress(&mut v, ((data.len() as u64) << 56) | le_u64(tail));
    v[2] ^= 0xff;
    (0..4).for_each(|_| sip_round(&mut v));
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// One message word, with SipHash-2-4's two rounds.
fn compress(v: &mut [u64; 4], m: u64) {
    v[3] ^= m;
    sip_round(v);
    sip_round(v);
    v[0] ^= m;
}

fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// Up to 8 bytes as a little-endian number.
fn le_u64(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0, |value, byte| (value << 8) | u64::from(*byte))
}

/// A short, stable digest of `data` for people to compare: 16 hex digits.
pub fn short(data: &[u8]) -> String {
    format!("{:016x}", siphash24(&[0; 16], data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siphash_matches_the_reference_vectors() {
        let key: [u8; 16] = std::array::from_fn(|i| i as u8);
        let message: Vec<u8> = (0..15).collect();
        // From the SipHash paper's appendix and its reference test vectors.
        assert_eq!(siphash24(&key, &message), 0xa129_ca61_49be_45e5);
        assert_eq!(siphash24(&key, &[]), 0x726f_db47_dd0e_0e31);
        let eight: Vec<u8> = (0..8).collect();
        assert_eq!(siphash24(&key, &eight), 0x93f5_f579_9a93_2462);
    }
}
