//! Access tokens: random, shown once when issued, stored only as their SHA-256 hash.
//!
//! A token is 32 random bytes written as 64 hex digits. Since tokens carry full entropy (they
//! are not passwords), one fast hash is the right storage form: a stolen store reveals no
//! token, and a lookup by (user, hash) needs no constant-time comparison.

use sha2::{Digest, Sha256};
use tidemark_engine::{Timestamp, UserId};

use crate::{ServerStore, ServerStoreError};

/// The SHA-256 of a token, as stored.
pub type TokenHash = [u8; 32];

/// Where tokens are kept. Implemented by the server stores next to [`ServerStore`].
pub trait AccountStore {
    /// Stores a token hash for an existing user, valid until `expires_at` (`None`: forever).
    fn insert_token(
        &mut self,
        user: &UserId,
        hash: TokenHash,
        expires_at: Option<Timestamp>,
    ) -> Result<(), ServerStoreError>;

    /// The expiry of the user's token with this hash: `None` when there is no such token,
    /// `Some(None)` when it never expires.
    fn token_expiry(
        &self,
        user: &UserId,
        hash: &TokenHash,
    ) -> Result<Option<Option<Timestamp>>, ServerStoreError>;

    /// Removes every token of the user; returns how many there were.
    fn revoke_tokens(&mut self, user: &UserId) -> Result<u64, ServerStoreError>;
}

/// What [`check_token`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenCheck {
    /// The token is the user's and has not expired.
    Valid,
    /// The token was the user's, and expired.
    Expired,
    /// No such token for this user.
    Invalid,
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Makes a new random token for an existing user, valid for `ttl_ms` from `now` (`None`:
/// forever), stores its hash and returns the token. The only time the token is seen.
pub fn issue_token<A: AccountStore + ServerStore + ?Sized>(
    store: &mut A,
    user: &UserId,
    now: Timestamp,
    ttl_ms: Option<u64>,
) -> Result<String, ServerStoreError> {
    if !store.user_exists(user)? {
        return Err(ServerStoreError::UnknownUser(user.clone()));
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|err| ServerStoreError::Backend {
        detail: format!("no randomness for a token: {err}"),
        source: None,
    })?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let expires_at = ttl_ms.map(|ttl| Timestamp(now.0.saturating_add(ttl)));
    store.insert_token(user, hash_token(&token), expires_at)?;
    Ok(token)
}

/// Whether `token` lets `user` in at `now`.
pub fn check_token<A: AccountStore + ?Sized>(
    store: &A,
    user: &UserId,
    token: &str,
    now: Timestamp,
) -> Result<TokenCheck, ServerStoreError> {
    Ok(match store.token_expiry(user, &hash_token(token))? {
        None => TokenCheck::Invalid,
        Some(Some(expires_at)) if now >= expires_at => TokenCheck::Expired,
        Some(_) => TokenCheck::Valid,
    })
}
