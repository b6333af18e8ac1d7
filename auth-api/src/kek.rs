//! Key-encryption keys (KEKs): the key ring's private material (HMAC secrets, PKCS#8 private
//! keys) is stored sealed under one, so that a database dump alone cannot mint a token.
//!
//! Sealing is XChaCha20-Poly1305 with a random 24-byte nonce per row; the associated data binds
//! the ciphertext to its row (`kid` and `alg`), so a sealed key copied onto another row does not
//! open. Each row records the id of the KEK that sealed it. `AUTH_KEY_ENCRYPTION_KEYS` lists
//! `id:key` pairs: the first seals, every one opens, so a KEK rotates by putting the new one
//! first (rows under an older KEK are re-sealed at the next start).
//!
//! Without the variable, [`resolve`] falls back to a key file beside a SQLite database (the
//! newcomer path), a per-process key for an in-memory database, and refuses PostgreSQL, whose
//! replicas must share one KEK. What the ring stores and when it re-seals is `keyring`'s job.

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    sync::{Arc, OnceLock},
};

use anyhow::Context as _;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use chacha20poly1305::{
    aead::{AeadInPlace, KeyInit},
    XChaCha20Poly1305, XNonce,
};
use rand::{rngs::OsRng, RngCore};
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::{config::Config, domain::TotpSecret, store::Backend};

/// The variable that holds the KEKs.
pub const KEK_VAR: &str = "AUTH_KEY_ENCRYPTION_KEYS";
/// Bytes of a KEK: 256 bits.
pub const KEK_BYTES: usize = 32;
/// Bytes of an XChaCha20-Poly1305 nonce; random nonces of this size never collide in practice.
pub const NONCE_BYTES: usize = 24;
/// Longest KEK id.
const MAX_ID_LEN: usize = 64;
/// Domain label of the associated data, so these ciphertexts mean nothing anywhere else.
const AAD_LABEL: &[u8] = b"auth-api signing key v1";
/// Domain label of the associated data of a session's rotation key: a sealed signing key can
/// never pass for a rotation key, nor the reverse.
const ROTATION_KEY_AAD_LABEL: &[u8] = b"auth-api rotation key v1";
/// Domain label of the associated data of a sign-in flow's PKCE verifier (issue 14).
const PKCE_VERIFIER_AAD_LABEL: &[u8] = b"auth-api sign-in pkce verifier v1";
/// Domain label of the associated data of a user's TOTP secret (issue 15).
const TOTP_SECRET_AAD_LABEL: &[u8] = b"auth-api totp secret v1";
/// Domain label of [`KeyEncryptionKeys::subkeys`].
const SUBKEY_LABEL: &[u8] = b"auth-api subkey v1\0";

/// One key-encryption key: an id, the cipher keyed with it, and the key itself for deriving
/// purpose-bound subkeys (both zeroed when dropped).
#[derive(Clone)]
struct Kek {
    id: String,
    cipher: XChaCha20Poly1305,
    secret: Zeroizing<[u8; KEK_BYTES]>,
}

impl Kek {
    fn new(id: String, bytes: &[u8; KEK_BYTES]) -> Self {
        Self {
            id,
            cipher: XChaCha20Poly1305::new(bytes.into()),
            secret: Zeroizing::new(*bytes),
        }
    }
}

/// The KEKs in force: the first seals, every one opens. `Debug` shows the ids only.
#[derive(Clone)]
pub struct KeyEncryptionKeys {
    keys: Arc<[Kek]>,
}

impl fmt::Debug for KeyEncryptionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEncryptionKeys")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Private key material as stored: sealed under the KEK `kek_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The id of the KEK that sealed it.
    pub kek_id: String,
    /// The random 24-byte nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext and 16-byte tag.
    pub ciphertext: Vec<u8>,
}

/// Why sealed material did not open. The messages name ids and the variable, never a key.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The row names a KEK that is not configured.
    #[error(
        "{what} is encrypted under key-encryption key {kek_id:?}, which {KEK_VAR} does not \
         hold (configured: {configured})"
    )]
    UnknownKek {
        /// What was sealed: `key <kid>`, or `the rotation key of session <id>`.
        what: String,
        /// The KEK it names.
        kek_id: String,
        /// The configured ids, comma-separated.
        configured: String,
    },
    /// Authentication failed: a different key under the same id, or a tampered row.
    #[error(
        "{what} does not decrypt with key-encryption key {kek_id:?}: {KEK_VAR} holds a \
         different key under that id, or the row was altered"
    )]
    WrongKey {
        /// What was sealed, as in [`OpenError::UnknownKek`].
        what: String,
        /// The KEK tried.
        kek_id: String,
    },
}

impl KeyEncryptionKeys {
    /// A single, freshly generated KEK with this id, and its text (`id:base64url`) to store.
    pub fn generate(id: &str) -> anyhow::Result<(Self, SecretString)> {
        let mut bytes = Zeroizing::new([0_u8; KEK_BYTES]);
        OsRng.fill_bytes(bytes.as_mut());
        let text = format!("{id}:{}", URL_SAFE_NO_PAD.encode(bytes.as_ref()));
        let keys = text.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        Ok((keys, SecretString::from(text)))
    }

    /// These keys, then those of `other` whose ids are not among them (decrypt-only).
    pub fn with_fallback(&self, other: &KeyEncryptionKeys) -> Self {
        let mut keys = self.keys.to_vec();
        for kek in other.keys.iter() {
            if !keys.iter().any(|k| k.id == kek.id) {
                keys.push(kek.clone());
            }
        }
        Self { keys: keys.into() }
    }

    /// The id of the KEK that seals.
    pub fn current_id(&self) -> &str {
        self.keys.first().map_or("", |k| k.id.as_str())
    }

    /// Every configured id, the sealing one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// A 256-bit subkey for `purpose` from every KEK, the current one first:
    /// HMAC-SHA256(KEK, label || purpose), so that no other use ever sees a KEK itself and
    /// subkeys of different purposes are independent. The first authenticates what is made
    /// now; all of them check what was made before a KEK rotation.
    pub fn subkeys(&self, purpose: &str) -> Vec<Zeroizing<[u8; 32]>> {
        use hmac::{Hmac, Mac};
        self.keys
            .iter()
            .map(|kek| {
                // HMAC takes a key of any length; a 32-byte one is never refused.
                let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(kek.secret.as_ref())
                    .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
                mac.update(SUBKEY_LABEL);
                mac.update(purpose.as_bytes());
                Zeroizing::new(mac.finalize().into_bytes().into())
            })
            .collect()
    }

    /// Seals `plaintext`, the material of ring key `kid` for `alg`, under the current KEK.
    pub fn seal(&self, kid: &str, alg: &str, plaintext: &[u8]) -> anyhow::Result<Sealed> {
        self.seal_with(&aad(kid, alg), plaintext)
            .with_context(|| format!("cannot encrypt key {kid}"))
    }

    /// Opens what [`KeyEncryptionKeys::seal`] sealed for the same `kid` and `alg`.
    pub fn open(
        &self,
        kid: &str,
        alg: &str,
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        self.open_with(&aad(kid, alg), || format!("key {kid}"), sealed)
    }

    /// Seals the rotation key of session `session_id` under the current KEK (issue 10): the
    /// associated data binds it to that session, so a blob copied onto another one does not
    /// open.
    pub fn seal_rotation_key(
        &self,
        session_id: &str,
        rotation_key: &[u8],
    ) -> anyhow::Result<Sealed> {
        self.seal_with(&rotation_key_aad(session_id), rotation_key)
            .with_context(|| format!("cannot encrypt the rotation key of session {session_id}"))
    }

    /// Opens what [`KeyEncryptionKeys::seal_rotation_key`] sealed for the same session.
    pub fn open_rotation_key(
        &self,
        session_id: &str,
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        self.open_with(
            &rotation_key_aad(session_id),
            || format!("the rotation key of session {session_id}"),
            sealed,
        )
    }

    /// Seals the PKCE verifier of the sign-in flow whose state hashes to `state_hash` (issue
    /// 14): bound to that flow like a rotation key to its session.
    pub fn seal_pkce_verifier(&self, state_hash: &[u8], verifier: &str) -> anyhow::Result<Sealed> {
        self.seal_with(
            &labelled_aad(PKCE_VERIFIER_AAD_LABEL, state_hash),
            verifier.as_bytes(),
        )
        .context("cannot encrypt a sign-in flow's PKCE verifier")
    }

    /// Opens what [`KeyEncryptionKeys::seal_pkce_verifier`] sealed for the same flow.
    pub fn open_pkce_verifier(
        &self,
        state_hash: &[u8],
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        self.open_with(
            &labelled_aad(PKCE_VERIFIER_AAD_LABEL, state_hash),
            || "a sign-in flow's PKCE verifier".to_owned(),
            sealed,
        )
    }

    /// Seals the TOTP secret of user `user_id` (issue 15): bound to that user, so a blob copied
    /// onto another user's row does not open, and under its own label, so it never passes for
    /// any other sealed value.
    pub fn seal_totp_secret(&self, user_id: &str, secret: &TotpSecret) -> anyhow::Result<Sealed> {
        self.seal_with(
            &labelled_aad(TOTP_SECRET_AAD_LABEL, user_id.as_bytes()),
            secret.expose_bytes(),
        )
        .with_context(|| format!("cannot encrypt the TOTP secret of user {user_id}"))
    }

    /// Opens what [`KeyEncryptionKeys::seal_totp_secret`] sealed for the same user.
    pub fn open_totp_secret(
        &self,
        user_id: &str,
        sealed: &Sealed,
    ) -> Result<TotpSecret, OpenError> {
        let what = || format!("the TOTP secret of user {user_id}");
        let opened = self.open_with(
            &labelled_aad(TOTP_SECRET_AAD_LABEL, user_id.as_bytes()),
            what,
            sealed,
        )?;
        // Only `seal_totp_secret` seals under this label, always a whole secret: another length
        // is a row this code did not write.
        TotpSecret::from_bytes(&opened).ok_or_else(|| OpenError::WrongKey {
            what: what(),
            kek_id: sealed.kek_id.clone(),
        })
    }

    fn seal_with(&self, aad: &[u8], plaintext: &[u8]) -> anyhow::Result<Sealed> {
        let kek = self.keys.first().context("no key-encryption key")?;
        let mut nonce = [0_u8; NONCE_BYTES];
        OsRng.fill_bytes(&mut nonce);
        // Zeroed on drop if encryption fails with the plaintext still in it.
        let mut buffer = Zeroizing::new(plaintext.to_vec());
        kek.cipher
            .encrypt_in_place(XNonce::from_slice(&nonce), aad, &mut *buffer)
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        Ok(Sealed {
            kek_id: kek.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext: std::mem::take(&mut *buffer),
        })
    }

    fn open_with(
        &self,
        aad: &[u8],
        what: impl Fn() -> String,
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let Some(kek) = self.keys.iter().find(|k| k.id == sealed.kek_id) else {
            return Err(OpenError::UnknownKek {
                what: what(),
                kek_id: sealed.kek_id.clone(),
                configured: self.ids().collect::<Vec<_>>().join(","),
            });
        };
        let wrong = || OpenError::WrongKey {
            what: what(),
            kek_id: sealed.kek_id.clone(),
        };
        if sealed.nonce.len() != NONCE_BYTES {
            return Err(wrong());
        }
        let mut buffer = Zeroizing::new(sealed.ciphertext.clone());
        kek.cipher
            .decrypt_in_place(XNonce::from_slice(&sealed.nonce), aad, &mut *buffer)
            .map_err(|_| wrong())?;
        Ok(buffer)
    }
}

impl FromStr for KeyEncryptionKeys {
    type Err = String;

    /// Parses `id:key[,id:key…]`: ids of 1-64 letters, digits, `.`, `_` or `-`, keys of 32
    /// bytes in base64url or base64 (padding optional). Errors never quote a key.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut keys: Vec<Kek> = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((id, encoded)) = entry.split_once(':') else {
                return Err("expected comma-separated id:base64url(32 bytes) entries".to_owned());
            };
            let id = id.trim();
            let id_ok = !id.is_empty()
                && id.len() <= MAX_ID_LEN
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !id_ok {
                return Err(format!(
                    "key id {id:?} must be 1-{MAX_ID_LEN} letters, digits, '.', '_' or '-'"
                ));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(format!("key id {id:?} appears twice"));
            }
            let normalised: String = encoded
                .trim()
                .trim_end_matches('=')
                .chars()
                .map(|c| match c {
                    '+' => '-',
                    '/' => '_',
                    c => c,
                })
                .collect();
            let bytes = Zeroizing::new(
                URL_SAFE_NO_PAD
                    .decode(normalised.as_bytes())
                    .map_err(|_| format!("the key of {id:?} is not base64url"))?,
            );
            if bytes.len() != KEK_BYTES {
                return Err(format!(
                    "the key of {id:?} must be {KEK_BYTES} bytes, not {}",
                    bytes.len()
                ));
            }
            let bytes: &[u8; KEK_BYTES] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| format!("the key of {id:?} is unusable"))?;
            keys.push(Kek::new(id.to_owned(), bytes));
        }
        if keys.is_empty() {
            return Err("needs at least one id:base64url(32 bytes) entry".to_owned());
        }
        Ok(Self { keys: keys.into() })
    }
}

/// The associated data of ring key `kid` for `alg`: length-prefixed, so no two rows share it.
fn aad(kid: &str, alg: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_LABEL.len() + kid.len() + alg.len() + 8);
    aad.extend_from_slice(AAD_LABEL);
    for part in [kid, alg] {
        aad.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// The associated data of the rotation key of session `session_id`: its own label, then the
/// id, length-prefixed like [`aad`].
fn rotation_key_aad(session_id: &str) -> Vec<u8> {
    labelled_aad(ROTATION_KEY_AAD_LABEL, session_id.as_bytes())
}

/// Associated data of one purpose (`label`) for one row (`id`, length-prefixed like [`aad`]).
fn labelled_aad(label: &[u8], id: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(label.len() + id.len() + 4);
    aad.extend_from_slice(label);
    aad.extend_from_slice(&u32::try_from(id.len()).unwrap_or(u32::MAX).to_be_bytes());
    aad.extend_from_slice(id);
    aad
}

/// The KEKs for `config`: `AUTH_KEY_ENCRYPTION_KEYS` when set; otherwise, for a SQLite file,
/// the key file beside it (created on first use), for in-memory SQLite a key of this process;
/// PostgreSQL or MySQL without the variable is an error naming it.
///
/// When the variable is set and a key file from an earlier start without it lies beside the
/// SQLite database, the file's key is added as a decrypt-only fallback: the rows it sealed are
/// re-sealed under the variable's first key at this start, and the file can then be deleted.
pub fn resolve(config: &Config) -> anyhow::Result<KeyEncryptionKeys> {
    let backend = Backend::of_url(&config.database_url)?;
    if let Some(keys) = &config.key_encryption_keys {
        let file = match backend {
            Backend::Sqlite => sqlite_file(&config.database_url)?
                .map(|db| key_file_of(&db))
                .filter(|path| path.exists()),
            Backend::Postgres | Backend::Mysql => None,
        };
        return match file {
            Some(path) => {
                tracing::info!(
                    path = %path.display(),
                    "{KEK_VAR} is set; the key file beside the database still opens the keys it \
                     sealed, which are re-sealed now: delete the file after this start"
                );
                Ok(keys.with_fallback(&read_key_file(&path)?))
            }
            None => Ok(keys.clone()),
        };
    }
    match backend {
        Backend::Postgres | Backend::Mysql => anyhow::bail!(
            "{KEK_VAR} is not set: with a database server the signing keys are encrypted under a \
             key-encryption key that every replica must share; generate one with \
             `auth-api keys new-kek` and set {KEK_VAR} to it"
        ),
        Backend::Sqlite => match sqlite_file(&config.database_url)? {
            None => Ok(process_key()),
            Some(db) => {
                let path = key_file_of(&db);
                tracing::warn!(
                    path = %path.display(),
                    "{KEK_VAR} is not set: the signing keys are encrypted under the key in this \
                     file beside the database; keep it out of database backups, and set \
                     {KEK_VAR} in production"
                );
                load_or_create_key_file(&path)
            }
        },
    }
}

/// The key file of the SQLite database at `db`: `<db>.kek`.
pub fn key_file_of(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".kek");
    PathBuf::from(name)
}

/// The database file of a SQLite URL, or `None` for an in-memory database.
fn sqlite_file(url: &str) -> anyhow::Result<Option<PathBuf>> {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
        .context("AUTH_DATABASE_URL is not a SQLite URL")?;
    let file = options.get_filename();
    let in_memory = url.contains(":memory:")
        || url.contains("mode=memory")
        || file.to_string_lossy().starts_with("file:sqlx-in-memory-");
    Ok((!in_memory).then(|| file.to_path_buf()))
}

/// One KEK per process, for in-memory databases (which live no longer than the process).
fn process_key() -> KeyEncryptionKeys {
    static KEY: OnceLock<KeyEncryptionKeys> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut bytes = Zeroizing::new([0_u8; KEK_BYTES]);
        OsRng.fill_bytes(bytes.as_mut());
        KeyEncryptionKeys {
            keys: Arc::from([Kek::new("process".to_owned(), &bytes)]),
        }
    })
    .clone()
}

/// Reads the key file at `path`, creating it (mode 0600) with a new KEK when missing. Several
/// processes starting at once agree: the file appears whole, by a hard link that fails if
/// another process created it first.
fn load_or_create_key_file(path: &Path) -> anyhow::Result<KeyEncryptionKeys> {
    if !path.exists() {
        create_key_file(path)?;
    }
    read_key_file(path)
}

fn read_key_file(path: &Path) -> anyhow::Result<KeyEncryptionKeys> {
    warn_if_readable_by_others(path);
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the key file {}", path.display()))?,
    );
    text.trim()
        .parse()
        .map_err(|e: String| anyhow::anyhow!("the key file {}: {e}", path.display()))
}

fn create_key_file(path: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut suffix = [0_u8; 6];
    OsRng.fill_bytes(&mut suffix);
    let id = format!("file-{}", hex(&suffix));
    let (_, text) = KeyEncryptionKeys::generate(&id)?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", hex(&suffix)));
    let tmp = PathBuf::from(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut file| {
        use secrecy::ExposeSecret as _;
        file.write_all(text.expose_secret().as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::warn!(path = %path.display(), kek_id = %id, "created a key-encryption key file");
            Ok(())
        }
        // Another process created it meanwhile: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot create the key file {} (or set {KEK_VAR})",
                path.display()
            )
        }),
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the key file is readable by other users: chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "one:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

    #[test]
    fn sealed_material_opens_only_for_its_row() {
        let keys: KeyEncryptionKeys = ONE.parse().unwrap();
        let sealed = keys.seal("kid-1", "ES256", b"private bytes").unwrap();
        assert_eq!(sealed.kek_id, "one");
        assert_eq!(sealed.nonce.len(), NONCE_BYTES);
        assert_eq!(
            keys.open("kid-1", "ES256", &sealed).unwrap().as_slice(),
            b"private bytes"
        );
        let cases = [
            ("kid-2", "ES256", "another kid"),
            ("kid-1", "HS256", "another alg"),
        ];
        for (kid, alg, reason) in cases {
            assert!(
                matches!(
                    keys.open(kid, alg, &sealed),
                    Err(OpenError::WrongKey { .. })
                ),
                "{reason}"
            );
        }
    }

    #[test]
    fn a_rotation_key_opens_only_for_its_session() {
        let keys: KeyEncryptionKeys = ONE.parse().unwrap();
        let sealed = keys.seal_rotation_key("session-a", &[5; 32]).unwrap();
        assert_eq!(sealed.kek_id, "one");
        assert_eq!(
            keys.open_rotation_key("session-a", &sealed)
                .unwrap()
                .as_slice(),
            [5; 32]
        );
        assert!(!shares_bytes(&sealed.ciphertext, &[5; 32]));
        let err = keys.open_rotation_key("session-b", &sealed).unwrap_err();
        assert!(matches!(err, OpenError::WrongKey { .. }), "{err}");
        assert!(err.to_string().contains("session session-b"), "{err}");
        assert!(
            keys.open("session-a", "HS256", &sealed).is_err(),
            "a rotation key never passes for a signing key"
        );
        let signing = keys.seal("session-a", "", &[5; 32]).unwrap();
        assert!(
            keys.open_rotation_key("session-a", &signing).is_err(),
            "nor the reverse"
        );
    }

    #[test]
    fn a_pkce_verifier_opens_only_for_its_flow_and_purpose() {
        let keys: KeyEncryptionKeys = ONE.parse().unwrap();
        let verifier = "v".repeat(43);
        let sealed = keys.seal_pkce_verifier(&[1; 32], &verifier).unwrap();
        assert_eq!(
            keys.open_pkce_verifier(&[1; 32], &sealed)
                .unwrap()
                .as_slice(),
            verifier.as_bytes()
        );
        assert!(!shares_bytes(&sealed.ciphertext, verifier.as_bytes()));
        assert!(
            keys.open_pkce_verifier(&[2; 32], &sealed).is_err(),
            "another flow"
        );
        let as_session = String::from_utf8(vec![1; 32]).unwrap();
        assert!(
            keys.open_rotation_key(&as_session, &sealed).is_err(),
            "never passes for a rotation key of the same id"
        );
        let rotation = keys
            .seal_rotation_key(&as_session, verifier.as_bytes())
            .unwrap();
        assert!(
            keys.open_pkce_verifier(&[1; 32], &rotation).is_err(),
            "nor the reverse"
        );
    }

    #[test]
    fn a_totp_secret_opens_only_for_its_user_and_purpose() {
        let keys: KeyEncryptionKeys = ONE.parse().unwrap();
        let secret = TotpSecret::generate();
        let sealed = keys.seal_totp_secret("user-a", &secret).unwrap();
        assert_eq!(sealed.kek_id, "one");
        assert_eq!(
            keys.open_totp_secret("user-a", &sealed)
                .unwrap()
                .expose_bytes(),
            secret.expose_bytes()
        );
        assert!(!shares_bytes(&sealed.ciphertext, secret.expose_bytes()));
        let err = keys.open_totp_secret("user-b", &sealed).unwrap_err();
        assert!(matches!(err, OpenError::WrongKey { .. }), "{err}");
        assert!(err.to_string().contains("user user-b"), "{err}");
        assert!(
            keys.open_rotation_key("user-a", &sealed).is_err(),
            "never passes for a rotation key of the same id"
        );
        assert!(
            keys.open_pkce_verifier(b"user-a", &sealed).is_err(),
            "nor for a PKCE verifier"
        );
        let rotation = keys
            .seal_rotation_key("user-a", secret.expose_bytes())
            .unwrap();
        assert!(
            keys.open_totp_secret("user-a", &rotation).is_err(),
            "nor the reverse"
        );
        let short = keys.seal_with(&labelled_aad(TOTP_SECRET_AAD_LABEL, b"user-a"), &[7; 19]);
        assert!(
            keys.open_totp_secret("user-a", &short.unwrap()).is_err(),
            "a blob that is not a whole secret does not open as one"
        );
    }

    fn shares_bytes(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn nonces_differ_for_the_same_plaintext() {
        let keys: KeyEncryptionKeys = ONE.parse().unwrap();
        let a = keys.seal("k", "HS256", b"same").unwrap();
        let b = keys.seal("k", "HS256", b"same").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let old: KeyEncryptionKeys = ONE.parse().unwrap();
        let sealed_by_old = old.seal("k", "EdDSA", b"x").unwrap();
        let (new, text) = KeyEncryptionKeys::generate("two").unwrap();
        let both: KeyEncryptionKeys = {
            use secrecy::ExposeSecret as _;
            format!("{}, {ONE}", text.expose_secret()).parse().unwrap()
        };
        assert_eq!(both.current_id(), "two");
        assert_eq!(both.seal("k", "EdDSA", b"x").unwrap().kek_id, "two");
        assert_eq!(
            both.open("k", "EdDSA", &sealed_by_old).unwrap().as_slice(),
            b"x"
        );
        let err = new.open("k", "EdDSA", &sealed_by_old).unwrap_err();
        assert!(matches!(err, OpenError::UnknownKek { .. }), "{err}");
        assert!(err.to_string().contains(KEK_VAR), "{err}");
    }

    #[test]
    fn a_different_key_under_the_same_id_fails_clearly() {
        let sealed = ONE
            .parse::<KeyEncryptionKeys>()
            .unwrap()
            .seal("k", "HS256", b"secret")
            .unwrap();
        let (impostor, _) = KeyEncryptionKeys::generate("one").unwrap();
        let err = impostor.open("k", "HS256", &sealed).unwrap_err();
        assert!(matches!(err, OpenError::WrongKey { .. }));
        assert!(err.to_string().contains("different key"), "{err}");
    }

    #[test]
    fn malformed_lists_are_refused_without_quoting_a_key() {
        let cases = [
            ("", "empty"),
            ("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", "no id"),
            ("one:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd", "30 bytes"),
            ("one:not*base64*at*all*not*base64*at*all*not", "not base64"),
            (
                "o ne:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
                "space in the id",
            ),
        ];
        for (text, reason) in cases {
            let err = text.parse::<KeyEncryptionKeys>().unwrap_err();
            assert!(!err.contains("AAECAwQF"), "{reason}: {err}");
        }
        let twice = format!("{ONE},{ONE}");
        assert!(twice
            .parse::<KeyEncryptionKeys>()
            .unwrap_err()
            .contains("twice"));
    }

    #[test]
    fn standard_base64_with_padding_is_accepted() {
        let keys: KeyEncryptionKeys = "a:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
            .parse()
            .unwrap();
        assert_eq!(keys.current_id(), "a");
        assert!(!format!("{keys:?}").contains("AAECAwQF"));
    }

    #[test]
    fn the_key_file_is_created_once_private_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_file_of(&dir.path().join("auth.db"));
        assert!(path.ends_with("auth.db.kek"));
        let first = load_or_create_key_file(&path).unwrap();
        let again = load_or_create_key_file(&path).unwrap();
        assert_eq!(first.current_id(), again.current_id());
        let sealed = first.seal("k", "HS256", b"s").unwrap();
        assert_eq!(again.open("k", "HS256", &sealed).unwrap().as_slice(), b"s");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[test]
    fn sqlite_urls_name_their_file_or_memory() {
        let cases = [
            ("sqlite://auth.db", Some("auth.db")),
            ("sqlite:auth.db?mode=rwc", Some("auth.db")),
            ("sqlite:///tmp/x/auth.db", Some("/tmp/x/auth.db")),
            ("sqlite::memory:", None),
            ("sqlite://?mode=memory", None),
        ];
        for (url, file) in cases {
            assert_eq!(sqlite_file(url).unwrap(), file.map(PathBuf::from), "{url}");
        }
    }
}
