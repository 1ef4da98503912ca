//! TWAMP crypto for the authenticated, encrypted and mixed modes (RFC 4656 §3.1, §3.4, §4.1.2;
//! RFC 5357 §3.1, §4.1.2, §4.2.1; RFC 5618), as verified against twampd (reference §3):
//!
//! | what | how |
//! |---|---|
//! | `dk` | PBKDF2-HMAC-SHA1(passphrase, Salt, Count), 16 octets ([`derive_key`]) |
//! | Token | AES-128-CBC(dk, IV 0) of Challenge ‖ AES key(16) ‖ HMAC key(32) ([`encrypt_token`]) |
//! | control stream | each direction one AES-128-CBC stream under the AES session key, IV = Client-IV (client→server, from Request-TW-Session) or Server-IV (server→client, from Server-Start octet 32) ([`ControlSealer`], [`ControlOpener`]) |
//! | control HMAC | HMAC-SHA1 under the 32-octet HMAC session key, truncated to 16, over all plaintext sent in that direction since the previous HMAC; the server's first one therefore covers Server-Start[32..48] ‖ Accept-Session[0..32] |
//! | test AES key | AES-ECB(key = SID) of the AES session key ([`TestKeys::derive`]) |
//! | test HMAC key | AES-CBC(key = SID, IV 0) of the HMAC session key |
//! | test packets | authenticated: block 0 AES-ECB, HMAC over plaintext block 0; encrypted: AES-CBC (IV 0) of 32 (sender) or 96 (reflector) octets, HMAC over them; the HMAC itself and the padding stay clear ([`TestCrypto`]) |
//!
//! RFC 5357 §4.2.1 can be read as the authenticated-mode reflector HMAC covering more than the
//! first block; twampd covers block 0 only in both directions (a sequence-0 packet gets the same
//! ciphertext and HMAC both ways), and that is what interoperates.
//!
//! Everything works in place on the caller's buffer. Errors: `BadLength` for a buffer that is not
//! whole blocks, `Truncated` for a test packet shorter than its layout, `Integrity` for an HMAC
//! or Token challenge that does not match (compared in constant time).

use super::control::{BLOCK_LEN, HMAC_LEN};
use super::test::{REFLECTOR_HMAC, REFLECTOR_LEN_AUTH, SENDER_HMAC, SENDER_LEN_AUTH};
use super::{SecurityMode, Sid};
use crate::{Error, Result};
use aes::Aes128;
use aes::cipher::consts::U16;
use aes::cipher::{
    Array, BlockCipherDecrypt, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, InnerIvInit, KeyInit, KeyIvInit,
};
use core::fmt;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

type HmacSha1 = Hmac<Sha1>;
type Block = Array<u8, U16>;

/// Smallest PBKDF2 Count RFC 4656 §3.1 allows.
pub const MIN_PBKDF2_COUNT: u32 = 1024;
/// Largest Count [`derive_key`] will run: a greeting with a huge count is a cheap way to make a
/// client burn CPU (reference §4.3). twampd uses 2048; 2^20 is about a second of SHA-1 work.
pub const MAX_PBKDF2_COUNT: u32 = 1 << 20;

/// `dk = PBKDF2-HMAC-SHA1(passphrase, salt, count, 16)` (RFC 4656 §3.1). `Malformed` when the
/// count is not a power of 2 in `MIN_PBKDF2_COUNT..=MAX_PBKDF2_COUNT`.
pub fn derive_key(passphrase: &[u8], salt: &[u8; 16], count: u32) -> Result<[u8; 16]> {
    if !count.is_power_of_two() || !(MIN_PBKDF2_COUNT..=MAX_PBKDF2_COUNT).contains(&count) {
        return Err(Error::Malformed);
    }
    #[cfg(fuzzing)]
    if let Some(dk) = fuzz_memo::get(passphrase, salt, count) {
        return Ok(dk);
    }
    let mut dk = [0u8; 16];
    pbkdf2::pbkdf2_hmac::<Sha1>(passphrase, salt, count, &mut dk);
    #[cfg(fuzzing)]
    fuzz_memo::put(passphrase, salt, count, dk);
    Ok(dk)
}

/// Under the fuzzer only (`--cfg fuzzing`, which cargo-fuzz sets): PBKDF2 results are memoised,
/// so that the TWAMP harnesses, which meet the same few salts again and again, are not bound by
/// the thousand-plus HMAC rounds of every derivation. The result is the same; only the time
/// changes. Never compiled into the binaries.
#[cfg(fuzzing)]
mod fuzz_memo {
    use std::cell::RefCell;

    type Entry = (Vec<u8>, [u8; 16], u32, [u8; 16]);

    thread_local! {
        static MEMO: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn get(passphrase: &[u8], salt: &[u8; 16], count: u32) -> Option<[u8; 16]> {
        MEMO.with(|m| m.borrow().iter().find(|e| e.0 == passphrase && &e.1 == salt && e.2 == count).map(|e| e.3))
    }

    pub(super) fn put(passphrase: &[u8], salt: &[u8; 16], count: u32, dk: [u8; 16]) {
        MEMO.with(|m| {
            let mut m = m.borrow_mut();
            if m.len() >= 512 {
                m.remove(0);
            }
            m.push((passphrase.to_vec(), *salt, count, dk));
        });
    }
}

/// The two session keys the client chooses and sends inside the Token (RFC 4656 §3.1).
/// `Debug` does not print them.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// AES-128 key of the control streams.
    pub aes: [u8; 16],
    /// HMAC-SHA1 key of the control HMACs.
    pub hmac: [u8; 32],
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

fn cbc_encrypt(key: &[u8; 16], iv: &[u8; 16], buf: &mut [u8]) {
    let mut enc = cbc::Encryptor::<Aes128>::new(&Array::from(*key), &Array::from(*iv));
    enc.encrypt_blocks(as_blocks(buf));
}

fn cbc_decrypt(key: &[u8; 16], iv: &[u8; 16], buf: &mut [u8]) {
    let mut dec = cbc::Decryptor::<Aes128>::new(&Array::from(*key), &Array::from(*iv));
    dec.decrypt_blocks(as_blocks(buf));
}

/// The whole blocks of `buf` (callers pass multiples of 16).
fn as_blocks(buf: &mut [u8]) -> &mut [Block] {
    Array::slice_as_chunks_mut(buf).0
}

/// The Token of the Set-Up-Response: AES-128-CBC(dk, IV 0) over Challenge ‖ AES key ‖ HMAC key
/// (RFC 4656 §3.1).
pub fn encrypt_token(dk: &[u8; 16], challenge: &[u8; 16], keys: &SessionKeys) -> [u8; 64] {
    let mut t = [0u8; 64];
    t[..16].copy_from_slice(challenge);
    t[16..32].copy_from_slice(&keys.aes);
    t[32..].copy_from_slice(&keys.hmac);
    cbc_encrypt(dk, &[0; 16], &mut t);
    t
}

/// The server's side of [`encrypt_token`]: decrypts the Token and checks, in constant time, that
/// it carries the greeting's challenge. `Integrity` otherwise (twampd: "Invalid challenge
/// encryption"), and the server answers Server-Start with a non-zero Accept.
pub fn open_token(dk: &[u8; 16], token: &[u8; 64], challenge: &[u8; 16]) -> Result<SessionKeys> {
    let mut t = *token;
    cbc_decrypt(dk, &[0; 16], &mut t);
    if !bool::from(t[..16].ct_eq(challenge)) {
        return Err(Error::Integrity);
    }
    let mut keys = SessionKeys { aes: [0; 16], hmac: [0; 32] };
    keys.aes.copy_from_slice(&t[16..32]);
    keys.hmac.copy_from_slice(&t[32..]);
    Ok(keys)
}

fn truncated_hmac(mac: HmacSha1) -> [u8; 16] {
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

fn hmac_with(key: &[u8]) -> HmacSha1 {
    // HMAC accepts keys of any length, so this cannot fail.
    <HmacSha1 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

fn whole_blocks(len: usize) -> Result<()> {
    if len.is_multiple_of(BLOCK_LEN) { Ok(()) } else { Err(Error::BadLength) }
}

/// A whole control message: whole blocks, at least one block of content before its HMAC.
fn sealed_message(len: usize) -> Result<()> {
    whole_blocks(len)?;
    if len < BLOCK_LEN + HMAC_LEN { Err(Error::Truncated) } else { Ok(()) }
}

/// The HMAC chain of one direction of a control connection (RFC 4656 §3.4): each HMAC covers
/// everything since the previous one, then starts again from the key.
#[derive(Clone)]
struct ChainedMac {
    fresh: HmacSha1,
    running: HmacSha1,
}

impl ChainedMac {
    fn new(key: &[u8]) -> Self {
        let fresh = hmac_with(key);
        ChainedMac { running: fresh.clone(), fresh }
    }

    fn update(&mut self, data: &[u8]) {
        self.running.update(data);
    }

    /// The truncated HMAC of everything since the previous one; the chain starts again.
    fn take(&mut self) -> [u8; 16] {
        truncated_hmac(core::mem::replace(&mut self.running, self.fresh.clone()))
    }
}

/// The sending half of one direction of an encrypted control connection (RFC 4656 §3.4): a
/// continuous AES-CBC stream and a running HMAC. The client makes one with Client-IV, the server
/// one with Server-IV.
pub struct ControlSealer {
    cbc: cbc::Encryptor<Aes128>,
    mac: ChainedMac,
}

impl fmt::Debug for ControlSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ControlSealer(..)")
    }
}

impl ControlSealer {
    /// A stream under `keys` starting from `iv`.
    pub fn new(keys: &SessionKeys, iv: &[u8; 16]) -> Self {
        ControlSealer {
            cbc: cbc::Encryptor::new(&Array::from(keys.aes), &Array::from(*iv)),
            mac: ChainedMac::new(&keys.hmac),
        }
    }

    /// Encrypts whole blocks that end in no HMAC of their own, adding their plaintext to the
    /// next HMAC: the server uses it for Server-Start octets 32–47.
    pub fn encrypt_blocks(&mut self, blocks: &mut [u8]) -> Result<()> {
        whole_blocks(blocks.len())?;
        self.mac.update(blocks);
        self.cbc.encrypt_blocks(as_blocks(blocks));
        Ok(())
    }

    /// Seals one message in place: writes the HMAC of everything since the previous HMAC plus
    /// `msg` up to its last 16 octets into those 16 octets, then encrypts the whole message.
    pub fn seal(&mut self, msg: &mut [u8]) -> Result<()> {
        sealed_message(msg.len())?;
        let at = msg.len() - HMAC_LEN;
        self.mac.update(&msg[..at]);
        msg[at..].copy_from_slice(&self.mac.take());
        self.cbc.encrypt_blocks(as_blocks(msg));
        Ok(())
    }
}

/// The receiving half of one direction of an encrypted control connection: decrypts the
/// stream and checks each HMAC before the message is used (RFC 4656 §3.4).
pub struct ControlOpener {
    cbc: cbc::Decryptor<Aes128>,
    mac: ChainedMac,
}

impl fmt::Debug for ControlOpener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ControlOpener(..)")
    }
}

impl ControlOpener {
    /// A stream under `keys` starting from `iv`.
    pub fn new(keys: &SessionKeys, iv: &[u8; 16]) -> Self {
        ControlOpener {
            cbc: cbc::Decryptor::new(&Array::from(keys.aes), &Array::from(*iv)),
            mac: ChainedMac::new(&keys.hmac),
        }
    }

    /// Decrypts whole blocks in place and adds their plaintext to the next HMAC. A reader of a
    /// variable-length message decrypts its first block, learns the length
    /// ([`super::control::message_len`]), decrypts the rest but the HMAC, then calls
    /// [`ControlOpener::check_hmac`].
    pub fn decrypt_blocks(&mut self, blocks: &mut [u8]) -> Result<()> {
        whole_blocks(blocks.len())?;
        self.cbc.decrypt_blocks(as_blocks(blocks));
        self.mac.update(blocks);
        Ok(())
    }

    /// Decrypts the 16-octet HMAC field in place and compares it with the HMAC of everything
    /// decrypted since the previous one. `Integrity` on a mismatch; the connection should then
    /// be closed, as the stream state is no longer trustworthy.
    pub fn check_hmac(&mut self, field: &mut [u8; 16]) -> Result<()> {
        self.cbc.decrypt_blocks(as_blocks(field));
        if bool::from(self.mac.take().ct_eq(field)) { Ok(()) } else { Err(Error::Integrity) }
    }

    /// Opens one whole message in place: decrypt, then check its trailing HMAC.
    pub fn open(&mut self, msg: &mut [u8]) -> Result<()> {
        sealed_message(msg.len())?;
        let (body, tail) = msg.split_at_mut(msg.len() - HMAC_LEN);
        self.decrypt_blocks(body)?;
        let field: &mut [u8; 16] = tail.try_into().map_err(|_| Error::BadLength)?;
        self.check_hmac(field)
    }
}

/// The per-session TWAMP-Test keys (RFC 4656 §4.1.2 via RFC 5357 §4.1.2). `Debug` does not
/// print them.
#[derive(Clone, PartialEq, Eq)]
pub struct TestKeys {
    /// AES-128 key of the test packets (both directions).
    pub aes: [u8; 16],
    /// HMAC-SHA1 key of the test packets.
    pub hmac: [u8; 32],
}

impl fmt::Debug for TestKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TestKeys(..)")
    }
}

impl TestKeys {
    /// AES key = AES-ECB(key = SID) of the AES session key; HMAC key = AES-CBC(key = SID, IV 0)
    /// of the HMAC session key (RFC 4656 §4.1.2).
    pub fn derive(keys: &SessionKeys, sid: &Sid) -> Self {
        let sid_cipher = Aes128::new(&Array::from(sid.0));
        let mut aes = Block::from(keys.aes);
        sid_cipher.encrypt_block(&mut aes);
        let mut hmac = keys.hmac;
        cbc_encrypt(&sid.0, &[0; 16], &mut hmac);
        TestKeys { aes: aes.into(), hmac }
    }
}

/// How a session's test packets are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Protection {
    Authenticated,
    Encrypted,
}

/// Protects and checks TWAMP-Test packets of one session in authenticated or encrypted mode
/// (RFC 4656 §4.1.2, RFC 5357 §4.1.2 and §4.2.1). Packets are in the authenticated layout
/// ([`super::test::TestLayout::Authenticated`]); padding is never touched.
#[derive(Clone)]
pub struct TestCrypto {
    protection: Protection,
    cipher: Aes128,
    mac: HmacSha1,
}

impl fmt::Debug for TestCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TestCrypto({:?})", self.protection)
    }
}

impl TestCrypto {
    /// The test crypto of `mode`; `None` for unauthenticated and mixed mode, whose test packets
    /// carry no crypto (RFC 5618 §3.3).
    pub fn new(mode: SecurityMode, keys: &TestKeys) -> Option<Self> {
        let protection = match mode {
            SecurityMode::Authenticated => Protection::Authenticated,
            SecurityMode::Encrypted => Protection::Encrypted,
            SecurityMode::Unauthenticated | SecurityMode::Mixed => return None,
        };
        Some(TestCrypto { protection, cipher: Aes128::new(&Array::from(keys.aes)), mac: hmac_with(&keys.hmac) })
    }

    /// Octets covered by the HMAC and encrypted: block 0 in authenticated mode, 32 (sender) or
    /// 96 (reflector) octets in encrypted mode.
    fn region(&self, encrypted_len: usize) -> usize {
        match self.protection {
            Protection::Authenticated => BLOCK_LEN,
            Protection::Encrypted => encrypted_len,
        }
    }

    fn seal(
        &self,
        packet: &mut [u8],
        min: usize,
        encrypted_len: usize,
        hmac_at: core::ops::Range<usize>,
    ) -> Result<()> {
        if packet.len() < min {
            return Err(Error::Truncated);
        }
        let n = self.region(encrypted_len);
        let mut mac = self.mac.clone();
        mac.update(&packet[..n]);
        packet[hmac_at].copy_from_slice(&truncated_hmac(mac));
        match self.protection {
            Protection::Authenticated => self.cipher.encrypt_blocks(as_blocks(&mut packet[..n])),
            Protection::Encrypted => cbc::Encryptor::inner_iv_init(self.cipher.clone(), &Array::from([0; 16]))
                .encrypt_blocks(as_blocks(&mut packet[..n])),
        }
        Ok(())
    }

    fn open(
        &self,
        packet: &mut [u8],
        min: usize,
        encrypted_len: usize,
        hmac_at: core::ops::Range<usize>,
    ) -> Result<()> {
        if packet.len() < min {
            return Err(Error::Truncated);
        }
        let n = self.region(encrypted_len);
        match self.protection {
            Protection::Authenticated => self.cipher.decrypt_blocks(as_blocks(&mut packet[..n])),
            Protection::Encrypted => cbc::Decryptor::inner_iv_init(self.cipher.clone(), &Array::from([0; 16]))
                .decrypt_blocks(as_blocks(&mut packet[..n])),
        }
        let mut mac = self.mac.clone();
        mac.update(&packet[..n]);
        if bool::from(truncated_hmac(mac).ct_eq(&packet[hmac_at])) { Ok(()) } else { Err(Error::Integrity) }
    }

    /// Writes the HMAC of a plaintext Session-Sender packet (octets 32–47) and encrypts it.
    pub fn seal_sender(&self, packet: &mut [u8]) -> Result<()> {
        self.seal(packet, SENDER_LEN_AUTH, 32, SENDER_HMAC)
    }
    /// Decrypts a Session-Sender packet in place and checks its HMAC (`Integrity` on failure:
    /// drop the packet, twampd logs "Invalid HMAC on received packet").
    pub fn open_sender(&self, packet: &mut [u8]) -> Result<()> {
        self.open(packet, SENDER_LEN_AUTH, 32, SENDER_HMAC)
    }
    /// Writes the HMAC of a plaintext Session-Reflector packet (octets 96–111) and encrypts it.
    pub fn seal_reflector(&self, packet: &mut [u8]) -> Result<()> {
        self.seal(packet, REFLECTOR_LEN_AUTH, 96, REFLECTOR_HMAC)
    }
    /// Decrypts a Session-Reflector packet in place and checks its HMAC.
    pub fn open_reflector(&self, packet: &mut [u8]) -> Result<()> {
        self.open(packet, REFLECTOR_LEN_AUTH, 96, REFLECTOR_HMAC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{ErrorEstimate, NtpTimestamp};
    use crate::twamp::control::{AcceptSessionRepr, RequestTwSession, RequestTwSessionRepr, StartSessionsRepr};
    use crate::twamp::test::{ReflectorRepr, SenderRepr, TestLayout};
    use crate::twamp::{Accept, control};
    use proptest::prelude::*;

    fn h<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s.replace(' ', "")).unwrap().try_into().unwrap()
    }

    // The worked example of reference §3.4: a real twping → twampd session in mode 2.
    const SALT: &str = "2f95a3562e228bb63925c19af56e7af8";
    const CHALLENGE: &str = "7a8f5da43ac5e213e28aeaab4099f903";
    const DK: &str = "443e95c30f784187cb64b538acf9e72e";
    const TOKEN: &str = "1a984d3b1b8a7ee0e304905f73509cb1b2af3f858d16d64035db9be90b70b236\
                         83d71806bb9043e66c8873e2c88ead2b3c7cca2ffa03daa38f3d83bd23667821";
    const SID: &str = "7f000001eeacd05d47993d537e2859e7";

    fn example_keys() -> SessionKeys {
        let mut aes = [0u8; 16];
        let mut hmac = [0u8; 32];
        aes.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        hmac.iter_mut().enumerate().for_each(|(i, b)| *b = 0x20 + i as u8);
        SessionKeys { aes, hmac }
    }

    fn client_iv() -> [u8; 16] {
        core::array::from_fn(|i| 0x40 + i as u8)
    }

    #[test]
    fn kat_key_derivation() {
        assert_eq!(derive_key(b"testsecret", &h(SALT), 2048), Ok(h(DK)));
        assert_eq!(derive_key(b"testsecret", &h(SALT), 1000), Err(Error::Malformed));
        assert_eq!(derive_key(b"testsecret", &h(SALT), 0), Err(Error::Malformed));
        assert_eq!(derive_key(b"testsecret", &h(SALT), 1 << 21), Err(Error::Malformed));
    }

    #[test]
    fn kat_token() {
        let token = encrypt_token(&h(DK), &h(CHALLENGE), &example_keys());
        assert_eq!(hex::encode(token), TOKEN.replace(' ', ""));
        assert_eq!(open_token(&h(DK), &token, &h(CHALLENGE)), Ok(example_keys()));
        let mut wrong = h::<16>(CHALLENGE);
        wrong[0] ^= 1;
        assert_eq!(open_token(&h(DK), &token, &wrong), Err(Error::Integrity));
        let other_dk = derive_key(b"testsecreT", &h(SALT), 2048).unwrap();
        assert_eq!(open_token(&other_dk, &token, &h(CHALLENGE)), Err(Error::Integrity));
    }

    #[test]
    fn kat_test_keys() {
        let k = TestKeys::derive(&example_keys(), &Sid(h(SID)));
        assert_eq!(hex::encode(k.aes), "64cebf0952f0a082875ca8b0c6449092");
        assert_eq!(hex::encode(k.hmac), "16c9c84511519afa7824d4a4c0b57387e2f99f9aee4f692f0e9bdf33e3c8b166");
        assert_eq!(format!("{k:?}"), "TestKeys(..)");
    }

    #[test]
    fn kat_first_client_hmac() {
        // The client's first HMAC covers Request-TW-Session octets 0–95 only.
        let mut msg = control::tests::reference_request();
        let mut sealer = ControlSealer::new(&example_keys(), &client_iv());
        sealer.seal(&mut msg).unwrap();
        // The HMAC is encrypted with the message: decrypt to see it.
        let mut opener = ControlOpener::new(&example_keys(), &client_iv());
        let mut copy = msg.clone();
        opener.open(&mut copy).unwrap();
        assert_eq!(hex::encode(&copy[96..]), "8aa9c3726c5d8a64d126c8ca2fb36a3f");
        assert_eq!(&copy[..96], &control::tests::reference_request()[..96]);
        // and the ciphertext is AES-CBC(AES key, Client-IV) of the plaintext with its HMAC
        let mut plain = copy.clone();
        cbc_encrypt(&example_keys().aes, &client_iv(), &mut plain);
        assert_eq!(plain, msg);
        let req = RequestTwSessionRepr::parse(&RequestTwSession::new_checked(&copy[..]).unwrap()).unwrap();
        assert_eq!(req.padding_length, 64);
    }

    #[test]
    fn control_stream_chains_across_messages() {
        let keys = example_keys();
        let iv = client_iv();
        let pa = control::tests::reference_request();
        let mut pb = [0u8; 32];
        StartSessionsRepr.emit(&mut pb);
        let (mut a, mut b) = (pa.clone(), pb);
        let mut s = ControlSealer::new(&keys, &iv);
        s.seal(&mut a).unwrap();
        s.seal(&mut b).unwrap();
        // one continuous CBC stream: the second message chains from the first's last block
        let mut joined = [a.as_slice(), &b].concat();
        cbc_decrypt(&keys.aes, &iv, &mut joined);
        assert_eq!(&joined[..96], &pa[..96]);
        assert_eq!(&joined[112..128], &pb[..16]);
        // each HMAC covers only what was sent since the previous one
        let mut m = hmac_with(&keys.hmac);
        m.update(&pb[..16]);
        assert_eq!(&joined[128..], &truncated_hmac(m));

        let mut o = ControlOpener::new(&keys, &iv);
        let mut a2 = a.clone();
        o.open(&mut a2).unwrap();
        assert_eq!(&a2[..96], &pa[..96]);
        let mut tampered = b;
        tampered[3] ^= 0x80;
        assert_eq!(o.open(&mut tampered), Err(Error::Integrity));
        // Opening the second message alone (out of order) fails too: the chain differs.
        let mut fresh = ControlOpener::new(&keys, &iv);
        assert_eq!(fresh.open(&mut b.clone()), Err(Error::Integrity));
        let mut in_order = ControlOpener::new(&keys, &iv);
        in_order.open(&mut a.clone()).unwrap();
        assert_eq!(in_order.open(&mut b), Ok(()));
        assert_eq!(&b[..16], &pb[..16]);
    }

    #[test]
    fn server_first_hmac_covers_server_start_tail() {
        let keys = example_keys();
        let server_iv = [0x55u8; 16];
        let mut ss = [0u8; 48];
        control::ServerStartRepr { accept: Accept::Ok, server_iv, start_time: NtpTimestamp(0xeeac_0000_0000_0001) }
            .emit(&mut ss);
        let mut acc = [0u8; 48];
        AcceptSessionRepr { accept: Accept::Ok, port: 18760, sid: Sid(h(SID)), reflected_octets: 0, server_octets: 0 }
            .emit(&mut acc);
        let (plain_ss, plain_acc) = (ss, acc);

        let mut server = ControlSealer::new(&keys, &server_iv);
        server.encrypt_blocks(&mut ss[control::SERVER_START_ENCRYPTED]).unwrap();
        server.seal(&mut acc).unwrap();
        assert_eq!(&ss[..32], &plain_ss[..32], "clear part stays clear");
        assert_ne!(&ss[32..], &plain_ss[32..]);

        let mut client = ControlOpener::new(&keys, &server_iv);
        client.decrypt_blocks(&mut ss[32..48]).unwrap();
        assert_eq!(ss, plain_ss);
        let mut acc2 = acc;
        client.open(&mut acc2).unwrap();
        assert_eq!(&acc2[..32], &plain_acc[..32]);
        let mut m = hmac_with(&keys.hmac);
        m.update(&plain_ss[32..48]);
        m.update(&plain_acc[..32]);
        assert_eq!(&acc2[32..], &truncated_hmac(m));

        // A client that forgets the Server-Start block fails the check.
        let mut forgetful = ControlOpener::new(&keys, &server_iv);
        let mut ss_cipher_block: [u8; 16] = [0; 16];
        forgetful.cbc.decrypt_blocks(as_blocks(&mut ss_cipher_block)); // advance the chain only
        assert!(forgetful.open(&mut acc).is_err());
    }

    #[test]
    fn framing_errors() {
        let mut s = ControlSealer::new(&example_keys(), &[0; 16]);
        assert_eq!(s.seal(&mut [0u8; 33]), Err(Error::BadLength));
        assert_eq!(s.seal(&mut [0u8; 16]), Err(Error::Truncated));
        assert_eq!(s.encrypt_blocks(&mut [0u8; 15]), Err(Error::BadLength));
        let mut o = ControlOpener::new(&example_keys(), &[0; 16]);
        assert_eq!(o.open(&mut [0u8; 47]), Err(Error::BadLength));
        assert_eq!(o.open(&mut [0u8; 16]), Err(Error::Truncated));
        assert_eq!(o.open(&mut [0u8; 32]), Err(Error::Integrity));
        let t = TestCrypto::new(SecurityMode::Encrypted, &TestKeys::derive(&example_keys(), &Sid(h(SID)))).unwrap();
        assert_eq!(t.seal_sender(&mut [0u8; 47]), Err(Error::Truncated));
        assert_eq!(t.open_reflector(&mut [0u8; 111]), Err(Error::Truncated));
        assert!(TestCrypto::new(SecurityMode::Mixed, &TestKeys::derive(&example_keys(), &Sid(h(SID)))).is_none());
    }

    fn sender(seq: u32, pad: usize) -> Vec<u8> {
        let r = SenderRepr {
            layout: TestLayout::Authenticated,
            sequence: seq,
            timestamp: NtpTimestamp(0xeeac_d05d_612d_8599),
            error_estimate: ErrorEstimate(1),
            padding_len: pad,
        };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b);
        b[48..].fill(0xa5);
        b
    }

    fn reflector(seq: u32) -> Vec<u8> {
        let r = ReflectorRepr {
            layout: TestLayout::Authenticated,
            sequence: seq,
            timestamp: NtpTimestamp(3),
            error_estimate: ErrorEstimate(1),
            receive_timestamp: NtpTimestamp(2),
            sender_sequence: seq,
            sender_timestamp: NtpTimestamp(1),
            sender_error_estimate: ErrorEstimate(1),
            sender_ttl: Some(255),
            padding_len: 0,
        };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b);
        b
    }

    #[test]
    fn authenticated_test_packets() {
        let keys = TestKeys::derive(&example_keys(), &Sid(h(SID)));
        let t = TestCrypto::new(SecurityMode::Authenticated, &keys).unwrap();
        let plain = sender(0, 64);
        let mut s = plain.clone();
        t.seal_sender(&mut s).unwrap();
        // block 0 is AES-ECB(test key); the timestamp, HMAC and padding are clear
        let mut blk = Block::from(<[u8; 16]>::try_from(&plain[..16]).unwrap());
        Aes128::new(&Array::from(keys.aes)).encrypt_block(&mut blk);
        assert_eq!(&s[..16], blk.as_slice());
        assert_eq!(&s[16..32], &plain[16..32]);
        assert_eq!(&s[48..], &plain[48..]);
        let mut m = hmac_with(&keys.hmac);
        m.update(&plain[..16]);
        assert_eq!(&s[32..48], &truncated_hmac(m));

        // twampd: the sequence-0 block gives the same ciphertext and HMAC in both directions
        let mut r = reflector(0);
        t.seal_reflector(&mut r).unwrap();
        assert_eq!(&r[..16], &s[..16]);
        assert_eq!(&r[96..112], &s[32..48]);

        let mut back = s.clone();
        t.open_sender(&mut back).unwrap();
        assert_eq!(&back[..32], &plain[..32]);
        assert_eq!(&back[32..48], &s[32..48]); // the HMAC stays as received
        // altering the (unprotected) timestamp is not detected in authenticated mode, the
        // sequence number is
        let mut ts = s.clone();
        ts[20] ^= 1;
        assert_eq!(t.open_sender(&mut ts), Ok(()));
        let mut seq = s.clone();
        seq[3] ^= 1;
        assert_eq!(t.open_sender(&mut seq), Err(Error::Integrity));
    }

    #[test]
    fn encrypted_test_packets() {
        let keys = TestKeys::derive(&example_keys(), &Sid(h(SID)));
        let t = TestCrypto::new(SecurityMode::Encrypted, &keys).unwrap();
        let plain = sender(7, 64);
        let mut s = plain.clone();
        t.seal_sender(&mut s).unwrap();
        let mut direct = plain[..32].to_vec();
        cbc_encrypt(&keys.aes, &[0; 16], &mut direct);
        assert_eq!(&s[..32], &direct[..]);
        assert_eq!(&s[48..], &plain[48..]);
        let mut ts = s.clone();
        ts[20] ^= 1; // the timestamp is covered in encrypted mode
        assert_eq!(t.open_sender(&mut ts), Err(Error::Integrity));
        let mut back = s.clone();
        t.open_sender(&mut back).unwrap();
        assert_eq!(&back[..32], &plain[..32]);
        assert_eq!(&back[48..], &plain[48..]);

        let plain = reflector(7);
        let mut r = plain.clone();
        t.seal_reflector(&mut r).unwrap();
        let mut direct = plain[..96].to_vec();
        cbc_encrypt(&keys.aes, &[0; 16], &mut direct);
        assert_eq!(&r[..96], &direct[..]);
        let mut m = hmac_with(&keys.hmac);
        m.update(&plain[..96]);
        assert_eq!(&r[96..], &truncated_hmac(m));
        let mut back = r.clone();
        t.open_reflector(&mut back).unwrap();
        assert_eq!(&back[..96], &plain[..96]);
        let mut bad = r.clone();
        bad[90] ^= 4;
        assert_eq!(t.open_reflector(&mut bad), Err(Error::Integrity));
    }

    proptest! {
        #[test]
        fn control_roundtrip(keys in any::<([u8; 16], [u8; 32], [u8; 16])>(), msgs in proptest::collection::vec(1usize..8, 1..6)) {
            let k = SessionKeys { aes: keys.0, hmac: keys.1 };
            let mut s = ControlSealer::new(&k, &keys.2);
            let mut o = ControlOpener::new(&k, &keys.2);
            for (i, blocks) in msgs.into_iter().enumerate() {
                let mut m: Vec<u8> = (0..16 * (blocks + 1)).map(|j| (i * 31 + j) as u8).collect();
                let plain = m.clone();
                s.seal(&mut m).unwrap();
                o.open(&mut m).unwrap();
                prop_assert_eq!(&m[..m.len() - 16], &plain[..plain.len() - 16]);
            }
        }

        #[test]
        fn test_open_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), enc in any::<bool>()) {
            let mode = if enc { SecurityMode::Encrypted } else { SecurityMode::Authenticated };
            let t = TestCrypto::new(mode, &TestKeys::derive(&example_keys(), &Sid([9; 16]))).unwrap();
            let mut d = data.clone();
            let _ = t.open_sender(&mut d);
            let mut d = data.clone();
            let _ = t.open_reflector(&mut d);
            let mut o = ControlOpener::new(&example_keys(), &[0; 16]);
            let mut d = data;
            let _ = o.open(&mut d);
        }
    }
}
