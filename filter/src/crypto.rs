//! Where token signatures are checked: the filter's [`Verifier`] for `auth_jwt`.
//!
//! ES256 and RS256 signatures go to Envoy's native `verify_signature` foreign function (BoringSSL,
//! as `jwt_authn` uses), which is several times faster than the same check compiled to wasm.
//! Where the host does not have the function (another proxy, an older Envoy) the first call
//! finds out, and from then on this worker checks them in wasm with `auth_jwt`'s pure-Rust code.
//! EdDSA (BoringSSL's Ed25519 cannot be reached through `verify_signature`: it takes a hash
//! name, and Ed25519 takes none) and HS256 are always checked in wasm.
//!
//! The host's ABI (Envoy `source/extensions/common/wasm/foreign.cc` and
//! `ext/verify_signature.proto`, `source/common/crypto/utility_impl.cc`): the argument is a
//! serialized `VerifySignatureArguments {hash_function = 1, public_key = 2 (DER
//! SubjectPublicKeyInfo, read by `EVP_parse_public_key`), signature = 3, text = 4,
//! public_key_pem = 5}`; the host hashes `text` with the named hash (`sha1` … `sha512`) and runs
//! `EVP_DigestVerify`, so an ECDSA signature must be DER (`ECDSA-Sig-Value`) and an RSA one is
//! PKCS #1 v1.5. It answers a serialized `VerifySignatureResult {result = 1, error = 2}`. A host
//! without the function answers `NotFound`.
//!
//! The answer taken as "verified" is exactly Envoy's encoding of `{result: true}`, `08 01`;
//! a refusal is an answer decoding to `result: false` with an error starting
//! `Failed to verify digest`; anything else is no verdict and the signature is checked in wasm.
//!
//! This module does not talk to Envoy: `host.rs` implements [`ForeignFunctions`] with the SDK, and
//! the tests with a model of Envoy's function.
//!
//! A limit we cannot remove without `unsafe` (which this crate forbids): proxy-wasm 0.2.5's
//! `hostcalls::call_foreign_function` maps the host's status to `Ok`, `NotFound`, `BadArgument`,
//! `SerializationFailure` or `InternalFailure`, and **panics** on any other (`Unimplemented`, or
//! `InvalidMemoryAccess`; a value outside the SDK's `Status` enum is not even a valid Rust
//! value), and the raw `proxy_call_foreign_function` import is private to the SDK, so the only
//! other way would be our own `extern "C"` import called in an `unsafe` block. Envoy (the
//! proxy-wasm C++ host, `src/exports.cc`) answers `NotFound` for a missing function and
//! `verify_signature` answers `Ok` or `BadArgument`; `InvalidMemoryAccess` needs pointers the
//! SDK itself built to be out of bounds. A host that answers another status would abort the VM
//! on every ES256 or RS256 token that misses the cache; with `failure_policy: FAIL_RELOAD` (the
//! shipped configs) that refuses requests, it never lets one through. The SDK's `main` branch
//! has the same match; revisit this when a release returns the status instead of panicking.

use std::cell::Cell;
use std::fmt;

use auth_jwt::{es256_signature_to_der, Algorithm, ErrorKind, Key, Verifier};
use prost::Message as _;

/// The name of Envoy's foreign function.
pub(crate) const VERIFY_SIGNATURE: &str = "verify_signature";

/// The hash both ES256 and RS256 sign over.
const HASH: &str = "sha256";

/// How the host's answer begins when the signature itself did not verify, as opposed to a key
/// or a hash the host could not use (`utility_impl.cc`).
const NOT_VERIFIED: &str = "Failed to verify digest";

/// The one answer taken as "verified": `VerifySignatureResult {result: true}` exactly as Envoy
/// serializes it (field 1, varint 1; the empty `error` is not sent in proto3). Compared byte for
/// byte rather than decoded, because decoding is lenient where a verdict must not be: prost
/// skips unknown fields, reads any non-zero varint as `true` and keeps `result` beside an
/// `error`. An answer that is anything else is no verdict, and the signature is checked in wasm:
/// a host that encodes differently costs speed, never correctness.
const VERIFIED: [u8; 2] = [0x08, 0x01];

/// `envoy.source.extensions.common.wasm.VerifySignatureArguments`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct VerifySignatureArguments {
    /// The hash the signature covers, e.g. `sha256`.
    #[prost(string, tag = "1")]
    pub hash_function: String,
    /// The public key as DER SubjectPublicKeyInfo (exclusive with `public_key_pem`).
    #[prost(bytes = "vec", tag = "2")]
    pub public_key: Vec<u8>,
    /// The signature: DER for ECDSA, the raw block for RSA.
    #[prost(bytes = "vec", tag = "3")]
    pub signature: Vec<u8>,
    /// The signed data (here the JWS signing input, `header.payload`).
    #[prost(bytes = "vec", tag = "4")]
    pub text: Vec<u8>,
    /// The public key as PEM; unused here.
    #[prost(string, tag = "5")]
    pub public_key_pem: String,
}

/// `envoy.source.extensions.common.wasm.VerifySignatureResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct VerifySignatureResult {
    /// Whether the signature verified.
    #[prost(bool, tag = "1")]
    pub result: bool,
    /// Why not, when it did not.
    #[prost(string, tag = "2")]
    pub error: String,
}

/// Why a foreign function call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ForeignError {
    /// The host has no function of that name.
    NotFound,
    /// The host refused or failed the call; the status, for the log.
    Failed(String),
}

/// The host's foreign functions: `proxy_wasm::hostcalls::call_foreign_function` in Envoy.
pub(crate) trait ForeignFunctions {
    /// Calls the function `name` with `arguments` and returns its answer (empty if none).
    fn call(&self, name: &str, arguments: &[u8]) -> Result<Vec<u8>, ForeignError>;
}

/// What this worker knows of the host's `verify_signature`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum HostSupport {
    /// Not asked yet (no ES256 or RS256 token seen).
    #[default]
    Unknown,
    /// The host verified (or refused) a signature: it has the function.
    Present,
    /// The host has no such function: ES256 and RS256 are checked in wasm from now on.
    Absent,
}

/// Signatures checked since the last [`HostCrypto::take_counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SignatureCounts {
    /// Checked by the host's `verify_signature`, valid or not.
    pub host: u64,
    /// Checked in wasm: HS256, EdDSA, and ES256 and RS256 where the host cannot.
    pub wasm: u64,
    /// Host calls that failed or gave no verdict, and were checked in wasm instead (also counted
    /// in `wasm`).
    pub host_failed: u64,
}

/// The filter's [`Verifier`]: ES256 and RS256 by the host where it can, everything else (and
/// those where it cannot) by `auth_jwt`'s pure-Rust code.
pub(crate) struct HostCrypto<F> {
    host: F,
    support: Cell<HostSupport>,
    counts: Cell<SignatureCounts>,
    /// The last failure of a host call, for the log.
    last_failure: Cell<Option<ForeignError>>,
}

impl<F> fmt::Debug for HostCrypto<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostCrypto")
            .field("support", &self.support.get())
            .field("counts", &self.counts.get())
            .finish_non_exhaustive()
    }
}

/// The host's verdict on one signature.
enum HostVerdict {
    Valid,
    Invalid,
    /// The host has no `verify_signature`.
    Missing,
    /// No verdict: the call failed, the answer did not decode, or the host could not use the key
    /// or the hash.
    NoVerdict(ForeignError),
}

impl<F: ForeignFunctions> HostCrypto<F> {
    /// A verifier asking `host`; whether the host has the function is found out on first use.
    pub(crate) fn new(host: F) -> Self {
        Self {
            host,
            support: Cell::new(HostSupport::Unknown),
            counts: Cell::new(SignatureCounts::default()),
            last_failure: Cell::new(None),
        }
    }

    /// What is known of the host's function so far.
    pub(crate) fn support(&self) -> HostSupport {
        self.support.get()
    }

    /// The counts since the last call, and starts over.
    pub(crate) fn take_counts(&self) -> SignatureCounts {
        self.counts.take()
    }

    /// The last failed host call since the last call, for the log.
    pub(crate) fn take_last_failure(&self) -> Option<ForeignError> {
        self.last_failure.take()
    }

    fn count(&self, edit: impl FnOnce(&mut SignatureCounts)) {
        let mut counts = self.counts.get();
        edit(&mut counts);
        self.counts.set(counts);
    }

    /// `auth_jwt`'s pure-Rust check.
    fn in_wasm(&self, key: &Key, message: &[u8], signature: &[u8]) -> auth_jwt::Result<()> {
        self.count(|c| c.wasm += 1);
        key.verify(message, signature)
    }

    fn ask_host(&self, public_key: &[u8], signature: Vec<u8>, message: &[u8]) -> HostVerdict {
        let arguments = VerifySignatureArguments {
            hash_function: HASH.to_owned(),
            public_key: public_key.to_vec(),
            signature,
            text: message.to_vec(),
            public_key_pem: String::new(),
        }
        .encode_to_vec();
        let answer = match self.host.call(VERIFY_SIGNATURE, &arguments) {
            Ok(answer) => answer,
            Err(ForeignError::NotFound) => return HostVerdict::Missing,
            Err(failed) => return HostVerdict::NoVerdict(failed),
        };
        if answer == VERIFIED {
            return HostVerdict::Valid;
        }
        // A refusal only ever refuses: it is taken as decoded, as long as it says `false`.
        match VerifySignatureResult::decode(answer.as_slice()) {
            Ok(result) if !result.result && result.error.starts_with(NOT_VERIFIED) => {
                HostVerdict::Invalid
            }
            Ok(result) if result.result => HostVerdict::NoVerdict(ForeignError::Failed(format!(
                "not Envoy's encoding of a verified signature ({} bytes, error {:?})",
                answer.len(),
                result.error
            ))),
            Ok(result) if result.error.is_empty() => HostVerdict::NoVerdict(ForeignError::Failed(
                format!("an answer without a verdict ({} bytes)", answer.len()),
            )),
            Ok(result) => HostVerdict::NoVerdict(ForeignError::Failed(result.error)),
            Err(err) => {
                HostVerdict::NoVerdict(ForeignError::Failed(format!("undecodable answer: {err}")))
            }
        }
    }
}

impl<F: ForeignFunctions> Verifier for HostCrypto<F> {
    fn verify(&self, key: &Key, message: &[u8], signature: &[u8]) -> auth_jwt::Result<()> {
        let by_host = matches!(key.algorithm(), Algorithm::ES256 | Algorithm::RS256);
        let public_key = match key.public_key_der() {
            Some(der) if by_host && self.support.get() != HostSupport::Absent => der,
            _ => return self.in_wasm(key, message, signature),
        };
        // BoringSSL's ECDSA takes the DER `ECDSA-Sig-Value`, JOSE the fixed-size `r || s`. A
        // signature that does not convert (`decode` checks its size first, so never in practice)
        // is left to the wasm check, which refuses it and is counted like every other check.
        let host_signature = if key.algorithm() == Algorithm::ES256 {
            match es256_signature_to_der(signature) {
                Ok(der) => der,
                Err(_) => return self.in_wasm(key, message, signature),
            }
        } else {
            signature.to_vec()
        };
        match self.ask_host(public_key, host_signature, message) {
            HostVerdict::Valid => {
                self.support.set(HostSupport::Present);
                self.count(|c| c.host += 1);
                Ok(())
            }
            HostVerdict::Invalid => {
                self.support.set(HostSupport::Present);
                self.count(|c| c.host += 1);
                Err(ErrorKind::InvalidSignature.into())
            }
            HostVerdict::Missing => {
                self.support.set(HostSupport::Absent);
                self.in_wasm(key, message, signature)
            }
            // Checking in wasm is always correct, only slower: a host that fails one call
            // (or cannot use one key) never refuses a valid token, and is asked again next time.
            HostVerdict::NoVerdict(why) => {
                self.count(|c| c.host_failed += 1);
                self.last_failure.set(Some(why));
                self.in_wasm(key, message, signature)
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;

    use auth_jwt::{decode_with_verifier, encode, Header, KeySet, Validation};
    use p256::pkcs8::DecodePublicKey as _;
    use rand_core::OsRng;
    use serde_json::{json, Value};

    use super::*;

    /// How the mock host answers `verify_signature`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Behaviour {
        /// Like Envoy 1.40: imports the DER key, hashes, verifies (with the RustCrypto crates).
        Envoy,
        /// A host without the function.
        Missing,
        /// Every call fails with this status.
        Failing,
        /// Answers bytes that are no `VerifySignatureResult`.
        Garbage,
    }

    /// A host with a model of Envoy's `verify_signature`, recording every call.
    #[derive(Debug)]
    pub(crate) struct MockHost {
        behaviour: Behaviour,
        calls: RefCell<Vec<VerifySignatureArguments>>,
    }

    impl MockHost {
        pub(crate) fn new(behaviour: Behaviour) -> Self {
            Self {
                behaviour,
                calls: RefCell::new(Vec::new()),
            }
        }

        pub(crate) fn calls(&self) -> Vec<VerifySignatureArguments> {
            self.calls.borrow().clone()
        }
    }

    impl ForeignFunctions for &MockHost {
        fn call(&self, name: &str, arguments: &[u8]) -> Result<Vec<u8>, ForeignError> {
            if name != VERIFY_SIGNATURE || self.behaviour == Behaviour::Missing {
                return Err(ForeignError::NotFound);
            }
            let Ok(args) = VerifySignatureArguments::decode(arguments) else {
                return Err(ForeignError::Failed("BadArgument".to_owned()));
            };
            self.calls.borrow_mut().push(args.clone());
            match self.behaviour {
                Behaviour::Failing => return Err(ForeignError::Failed("InternalFailure".into())),
                Behaviour::Garbage => return Ok(vec![0xff, 0xff, 0xff]),
                Behaviour::Envoy | Behaviour::Missing => {}
            }
            Ok(envoy_verify(&args).encode_to_vec())
        }
    }

    /// What Envoy's `UtilityImpl::verifySignature` answers, with the RustCrypto crates in place
    /// of BoringSSL: the key from DER SubjectPublicKeyInfo, the hash by name, an ECDSA signature
    /// in DER, an RSA one PKCS #1 v1.5.
    fn envoy_verify(args: &VerifySignatureArguments) -> VerifySignatureResult {
        let answer = |result: bool, error: &str| VerifySignatureResult {
            result,
            error: error.to_owned(),
        };
        if !args.public_key_pem.is_empty() || args.public_key.is_empty() {
            return answer(false, "BadArgument");
        }
        if !args.hash_function.eq_ignore_ascii_case("sha256") {
            return answer(false, &format!("{} is not supported.", args.hash_function));
        }
        let verified =
            if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(&args.public_key) {
                use p256::ecdsa::signature::Verifier as _;
                p256::ecdsa::Signature::from_der(&args.signature)
                    .is_ok_and(|sig| key.verify(&args.text, &sig).is_ok())
            } else if let Ok(key) = rsa::RsaPublicKey::from_public_key_der(&args.public_key) {
                use rsa::signature::Verifier as _;
                let key = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key);
                rsa::pkcs1v15::Signature::try_from(args.signature.as_slice())
                    .is_ok_and(|sig| key.verify(&args.text, &sig).is_ok())
            } else {
                // Ed25519 keys import, but take no hash: initialising the digest fails.
                return answer(false, "Failed to initialize digest verify.");
            };
        if verified {
            answer(true, "")
        } else {
            answer(false, "Failed to verify digest. Error code: 0")
        }
    }

    pub(crate) fn key(alg: Algorithm) -> crate::TestResult<Key> {
        Ok(Key::generate(
            format!("k-{}", alg.as_str()),
            alg,
            &mut OsRng,
        )?)
    }

    fn token(key: &Key) -> crate::TestResult<String> {
        let claims = json!({"sub": "ada", "exp": 4_000_000_000_u64});
        Ok(encode(&Header::access_token(key), &claims, key)?)
    }

    /// `token` with its signature's first byte changed (the length stays).
    fn tampered(token: &str) -> crate::TestResult<String> {
        let (signed, signature) = token.rsplit_once('.').ok_or("no signature")?;
        let first = if signature.starts_with('A') { "B" } else { "A" };
        Ok(format!(
            "{signed}.{first}{}",
            signature.get(1..).unwrap_or("")
        ))
    }

    fn check(verifier: &dyn Verifier, key: &Key, token: &str) -> Result<(), ErrorKind> {
        let keys: KeySet = [key.clone()].into_iter().collect();
        let validation = Validation::default();
        decode_with_verifier::<Value>(token, &keys, &validation, 1_700_000_000, verifier)
            .map(|_| ())
            .map_err(auth_jwt::Error::into_kind)
    }

    #[test]
    fn es256_and_rs256_are_verified_by_the_host_in_its_encoding() -> crate::TestResult {
        for alg in [Algorithm::ES256, Algorithm::RS256] {
            let host = MockHost::new(Behaviour::Envoy);
            let verifier = HostCrypto::new(&host);
            let key = key(alg)?;
            let good = token(&key)?;
            assert_eq!(check(&verifier, &key, &good), Ok(()), "{alg:?}");
            assert_eq!(
                check(&verifier, &key, &tampered(&good)?),
                Err(ErrorKind::InvalidSignature),
                "{alg:?} tampered"
            );
            let calls = host.calls();
            assert_eq!(calls.len(), 2, "{alg:?}: both went to the host");
            let first = calls.first().ok_or("no call")?;
            assert_eq!(first.hash_function, "sha256");
            assert_eq!(Some(first.public_key.as_slice()), key.public_key_der());
            assert!(first.public_key_pem.is_empty());
            let (signing_input, _) = good.rsplit_once('.').ok_or("no signature")?;
            assert_eq!(first.text, signing_input.as_bytes());
            if alg == Algorithm::ES256 {
                assert_eq!(first.signature.first(), Some(&0x30), "a DER SEQUENCE");
            } else {
                assert_eq!(first.signature.len(), 256, "the raw RSA block");
            }
            assert_eq!(verifier.support(), HostSupport::Present);
            assert_eq!(
                verifier.take_counts(),
                SignatureCounts {
                    host: 2,
                    wasm: 0,
                    host_failed: 0
                }
            );
            assert_eq!(verifier.take_counts(), SignatureCounts::default(), "taken");
        }
        Ok(())
    }

    #[test]
    fn eddsa_and_hs256_never_reach_the_host() -> crate::TestResult {
        for alg in [Algorithm::EdDSA, Algorithm::HS256] {
            let host = MockHost::new(Behaviour::Envoy);
            let verifier = HostCrypto::new(&host);
            let key = key(alg)?;
            let good = token(&key)?;
            assert_eq!(check(&verifier, &key, &good), Ok(()), "{alg:?}");
            assert_eq!(
                check(&verifier, &key, &tampered(&good)?),
                Err(ErrorKind::InvalidSignature),
                "{alg:?} tampered"
            );
            assert!(host.calls().is_empty(), "{alg:?}");
            assert_eq!(verifier.support(), HostSupport::Unknown);
            assert_eq!(verifier.take_counts().wasm, 2);
        }
        Ok(())
    }

    #[test]
    fn a_host_without_the_function_is_asked_once_then_wasm_verifies() -> crate::TestResult {
        let host = MockHost::new(Behaviour::Missing);
        let verifier = HostCrypto::new(&host);
        let es256 = key(Algorithm::ES256)?;
        let rs256 = key(Algorithm::RS256)?;
        assert_eq!(check(&verifier, &es256, &token(&es256)?), Ok(()));
        assert_eq!(verifier.support(), HostSupport::Absent);
        assert_eq!(check(&verifier, &rs256, &token(&rs256)?), Ok(()));
        assert_eq!(
            check(&verifier, &es256, &tampered(&token(&es256)?)?),
            Err(ErrorKind::InvalidSignature)
        );
        assert_eq!(
            verifier.take_counts(),
            SignatureCounts {
                host: 0,
                wasm: 3,
                host_failed: 0
            }
        );
        assert_eq!(
            verifier.take_last_failure(),
            None,
            "a missing function is no failure"
        );
        Ok(())
    }

    #[test]
    fn a_failing_host_never_decides_and_is_asked_again() -> crate::TestResult {
        for behaviour in [Behaviour::Failing, Behaviour::Garbage] {
            let host = MockHost::new(behaviour);
            let verifier = HostCrypto::new(&host);
            let key = key(Algorithm::ES256)?;
            let good = token(&key)?;
            assert_eq!(check(&verifier, &key, &good), Ok(()), "{behaviour:?}");
            assert_eq!(
                check(&verifier, &key, &tampered(&good)?),
                Err(ErrorKind::InvalidSignature),
                "{behaviour:?}"
            );
            assert_eq!(host.calls().len(), 2, "{behaviour:?}: asked every time");
            assert_eq!(verifier.support(), HostSupport::Unknown);
            assert_eq!(
                verifier.take_counts(),
                SignatureCounts {
                    host: 0,
                    wasm: 2,
                    host_failed: 2
                }
            );
            assert!(verifier.take_last_failure().is_some());
        }
        Ok(())
    }

    #[test]
    fn a_key_the_host_cannot_use_is_checked_in_wasm() -> crate::TestResult {
        // An answer other than "did not verify" (here: an unsupported hash) is no verdict.
        #[derive(Debug)]
        struct NoSha256;
        impl ForeignFunctions for NoSha256 {
            fn call(&self, _: &str, _: &[u8]) -> Result<Vec<u8>, ForeignError> {
                Ok(VerifySignatureResult {
                    result: false,
                    error: "sha256 is not supported.".to_owned(),
                }
                .encode_to_vec())
            }
        }
        let verifier = HostCrypto::new(NoSha256);
        let key = key(Algorithm::RS256)?;
        assert_eq!(check(&verifier, &key, &token(&key)?), Ok(()));
        assert_eq!(verifier.take_counts().host_failed, 1);
        assert_eq!(
            verifier.take_last_failure(),
            Some(ForeignError::Failed("sha256 is not supported.".to_owned()))
        );
        Ok(())
    }

    /// A host whose `verify_signature` answers these bytes to every call.
    #[derive(Debug)]
    struct Answers(Vec<u8>);

    impl ForeignFunctions for Answers {
        fn call(&self, _: &str, _: &[u8]) -> Result<Vec<u8>, ForeignError> {
            Ok(self.0.clone())
        }
    }

    #[test]
    fn only_envoys_exact_verified_answer_counts_as_verified() -> crate::TestResult {
        let with_error = VerifySignatureResult {
            result: true,
            error: "Failed to initialize digest verify.".to_owned(),
        }
        .encode_to_vec();
        let refusal_saying_true = VerifySignatureResult {
            result: true,
            error: "Failed to verify digest. Error code: 0".to_owned(),
        }
        .encode_to_vec();
        let cases: [(Vec<u8>, &str); 8] = [
            (with_error, "result=true with an error"),
            (refusal_saying_true, "result=true with the refusal's error"),
            (vec![0x08, 0x02], "a varint of 2 for the bool"),
            (vec![0x08, 0x81, 0x00], "true as a non-minimal varint"),
            (
                vec![0x08, 0x01, 0x18, 0x01],
                "true and an unknown varint field",
            ),
            (
                vec![0x08, 0x01, 0x2a, 0x01, b'x'],
                "true and an unknown bytes field",
            ),
            (
                vec![0x08, 0x01, 0x12, 0x00],
                "true and an explicitly empty error",
            ),
            (vec![], "an empty answer"),
        ];
        for (answer, reason) in cases {
            let verifier = HostCrypto::new(Answers(answer));
            for alg in [Algorithm::ES256, Algorithm::RS256] {
                let key = key(alg)?;
                let good = token(&key)?;
                // The host "verifies" a tampered token: its answer must not decide.
                assert_eq!(
                    check(&verifier, &key, &tampered(&good)?),
                    Err(ErrorKind::InvalidSignature),
                    "{reason} ({alg:?}): decided by the host"
                );
                assert_eq!(check(&verifier, &key, &good), Ok(()), "{reason} ({alg:?})");
            }
            assert_eq!(
                verifier.take_counts(),
                SignatureCounts {
                    host: 0,
                    wasm: 4,
                    host_failed: 4
                },
                "{reason}: checked in wasm, counted as host failures"
            );
            assert!(verifier.take_last_failure().is_some(), "{reason}");
        }
        // Envoy's own encodings still decide.
        let verifier = HostCrypto::new(Answers(vec![0x08, 0x01]));
        let key = key(Algorithm::ES256)?;
        assert_eq!(check(&verifier, &key, &token(&key)?), Ok(()));
        let refusal = VerifySignatureResult {
            result: false,
            error: "Failed to verify digest. Error code: 0".to_owned(),
        }
        .encode_to_vec();
        let verifier_refusing = HostCrypto::new(Answers(refusal));
        assert_eq!(
            check(&verifier_refusing, &key, &token(&key)?),
            Err(ErrorKind::InvalidSignature),
            "the host's refusal is a verdict"
        );
        assert_eq!(verifier.take_counts().host, 1);
        assert_eq!(verifier_refusing.take_counts().host, 1);
        Ok(())
    }

    #[test]
    fn a_signature_that_cannot_become_der_is_counted_and_checked_in_wasm() -> crate::TestResult {
        let host = MockHost::new(Behaviour::Envoy);
        let verifier = HostCrypto::new(&host);
        let key = key(Algorithm::ES256)?;
        // `decode` checks the size first; the verifier must stand on its own all the same.
        let short = [7_u8; 63];
        assert!(verifier.verify(&key, b"header.payload", &short).is_err());
        assert!(host.calls().is_empty(), "nothing to send the host");
        assert_eq!(
            verifier.take_counts(),
            SignatureCounts {
                host: 0,
                wasm: 1,
                host_failed: 0
            },
            "every signature checked is counted once"
        );
        Ok(())
    }

    #[test]
    fn arguments_encode_as_envoys_proto_field_numbers() {
        let bytes = VerifySignatureArguments {
            hash_function: "sha256".to_owned(),
            public_key: vec![1, 2],
            signature: vec![3],
            text: vec![4, 5, 6],
            public_key_pem: String::new(),
        }
        .encode_to_vec();
        assert_eq!(
            bytes,
            [
                0x0a, 6, b's', b'h', b'a', b'2', b'5', b'6', // 1: hash_function
                0x12, 2, 1, 2, // 2: public_key
                0x1a, 1, 3, // 3: signature
                0x22, 3, 4, 5, 6, // 4: text; 5 (empty) is not sent
            ]
        );
        let ok = VerifySignatureResult::decode(&[0x08, 0x01][..]);
        assert_eq!(ok.map(|r| r.result), Ok(true));
    }
}
