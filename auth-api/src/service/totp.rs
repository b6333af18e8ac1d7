//! The TOTP second factor (issue 15). So far only what every start does: keep the stored
//! secrets under the current key-encryption key. Enrolment and the second step of login come
//! with the flows of issue 15.

use crate::{kek::KeyEncryptionKeys, store::Store};

/// Enrolments re-sealed per query.
const RESEAL_BATCH: i64 = 500;

/// Re-seals every TOTP secret stored under an older key-encryption key under the current one
/// (at start, after a KEK rotation), so that the old KEK can be removed without locking those
/// users out: unlike a session's rotation key, a TOTP secret cannot be replaced by a new one,
/// since the user's authenticator holds it. A secret whose KEK is not configured is left as it
/// was (that KEK may only be missing on this replica). How many were re-sealed.
pub async fn reseal_totp_secrets(store: &Store, keks: &KeyEncryptionKeys) -> anyhow::Result<u64> {
    let mut resealed = 0;
    let mut unopenable = 0_u64;
    let mut after = String::new();
    loop {
        let rows = store
            .totp_secrets_not_under(keks.current_id(), &after, RESEAL_BATCH)
            .await?;
        let Some(last) = rows.last() else {
            break;
        };
        after.clone_from(&last.user_id);
        for enrolment in rows {
            let Ok(secret) = keks.open_totp_secret(&enrolment.user_id, &enrolment.secret) else {
                unopenable += 1;
                continue;
            };
            let sealed = keks.seal_totp_secret(&enrolment.user_id, &secret)?;
            // A concurrent re-seal or re-enrolment wins; this one then changes nothing.
            if store
                .reseal_totp_secret(&enrolment.user_id, &enrolment.secret, &sealed)
                .await?
            {
                resealed += 1;
            }
        }
    }
    if resealed > 0 {
        tracing::info!(
            event = "totp_secrets_resealed",
            count = resealed,
            to = keks.current_id(),
            "TOTP secrets re-encrypted under the current key-encryption key"
        );
    }
    if unopenable > 0 {
        tracing::warn!(
            event = "totp_secrets_unopenable",
            count = unopenable,
            configured = ?keks.ids().collect::<Vec<_>>(),
            "TOTP secrets that do not open under the configured key-encryption keys were left \
             as they were: those users cannot pass the second factor here"
        );
    }
    Ok(resealed)
}
